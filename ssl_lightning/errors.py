"""The one exception type for bad input a user can fix.

`ssl-train` and the other console scripts print a `UserError` as a single line (problem and fix)
and exit with status 2 instead of showing a traceback.
"""


class UserError(Exception):
    """Bad input (missing file, wrong key, mismatched channels, ...); the message says the fix."""
