"""SIP as a sans-IO library: messages, SDP, transactions, dialogs (adapters in sip.asyncio).

Knows no application: stdlib only, never `consent`, `recorder` or `storage`.
"""
