"""The one exception type that reaches the user as a single line (exit code 2)."""

import re


class UserError(Exception):
    """Bad input the user can fix: a missing path, a corrupt file, an unknown key.

    The CLI prints ``classzoo: error: <message>`` and exits with code 2, without a traceback.
    The message must name the culprit (file, key, value) and say what is wrong.
    """

    exit_code = 2


class WriteError(UserError):
    """A file could not be written (a full disk, a quota, a read-only folder): one line naming
    it and the OS error; ``errno`` says which (a run adds where it continues from)."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


def one_line(exc: Exception) -> str:
    """The user's line, also when a DataLoader worker wrapped the error in its traceback text."""
    text = str(exc)
    # torch re-raises a worker's error as "Caught X in DataLoader worker ...\n<traceback>\n
    # module.X: message": the user's line is the one after the original class name
    wrapped = re.findall(rf"^classzoo\.[\w.]*{type(exc).__name__}: (.*)$", text, re.M)
    if wrapped:
        text = wrapped[-1]
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
