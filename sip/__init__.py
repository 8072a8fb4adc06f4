"""SIP as a sans-IO library: messages, SDP, transactions, dialogs; asyncio adapters in sip.asyncio."""
