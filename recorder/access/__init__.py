"""Lawful use of recordings: the one authorization function (who may hear what, for what,
when) that every reader of recordings (CLI, reports, console) calls.

Pure like `recorder.policy`: no sockets, no clock, no database; callers pass `now` and facts.
"""
