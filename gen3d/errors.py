"""Errors that reach the user: one line, a named file or key, exit code 2."""


class UserError(Exception):
    """Bad input or usage. The CLI prints `error: <message>` on one line and exits with code 2.

    The message must name the offending file, frame, field or key so the user can fix it.
    """

    exit_code = 2
