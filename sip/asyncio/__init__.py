"""asyncio adapters for the sans-IO SIP core."""
