"""Error types that the CLI maps to exit codes.

`UserError` means bad input: the CLI prints its message on one line and exits 2. Messages name
what is wrong, where (file, key, tensor) and, when there is one, the fix. Anything else that
escapes is an internal error (exit 1).
"""


class UserError(Exception):
    """Bad input from the user: a one-line message, exit code 2."""

    def __init__(self, message: str):
        # Keep the message on one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))
