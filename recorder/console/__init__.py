"""The web console for authorised staff: the same desk, rules and audit trail as the CLI, over HTTP.

Each account is nominative (A12): tied to one person of the policy's `[people.*]`, with a
password the policy's `[passwords]` rule accepts, hashed with argon2, and a login throttle
(X3); `passwords.py` holds all of that, sans-IO but for the account rows it reads and writes
through `storage.accounts`.

What it must not do: never read the catalog or the files but through `recorder.access.desk`
(its own account rows, `storage.accounts`, are the one exception), so that every use of a
recording is judged by `recorder.access` and written to the audit trail exactly as from the
CLI; never decide an access itself; never store, log or echo a password, nor show a hash.
"""
