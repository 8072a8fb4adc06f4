"""SIP as a sans-IO library: messages, SDP, transactions, dialogs.

The asyncio adapters live in sip.asyncio.
"""
