"""The one exception type that reaches the user as a single line (exit code 2)."""


class UserError(Exception):
    """Bad input the user can fix: a missing path, a corrupt file, an unknown key.

    The CLI prints ``classzoo: error: <message>`` and exits with code 2, without a traceback.
    The message must name the culprit (file, key, value) and say what is wrong.
    """

    exit_code = 2
