"""The `recorder` command line: one module per command group, the shared helpers, the root parser.

Commands parse arguments and print; rules live in `recorder.access`, `recorder.policy` and
`storage`, never here. Nothing outside `recorder/cli/` imports from it.
"""
