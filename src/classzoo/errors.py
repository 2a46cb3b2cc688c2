"""The exception types that reach the user as a single line: bad input (exit code 2), and a
stop asked for before a run had work to save (exit code 0)."""

import re
import signal


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


class StoppedEarly(BaseException):
    """A SIGTERM / SIGINT that arrived before the work a graceful stop saves had begun (setting
    up a run: scanning data, building the model, loading weights). A BaseException, as
    KeyboardInterrupt is: no ``except Exception`` on the way turns it into another error."""

    def __init__(self, signum: int, before: str) -> None:
        self.signum, self.before = signum, before
        super().__init__(f"stopped by {signal.Signals(signum).name} before {before}")


def one_line(exc: Exception) -> str:
    """The user's line, also when a DataLoader worker wrapped the error in its traceback text."""
    text = str(exc)
    # torch re-raises a worker's error as "Caught X in DataLoader worker ...\n<traceback>\n
    # module.X: message": the user's line is the one after the original class name
    wrapped = re.findall(rf"^classzoo\.[\w.]*{type(exc).__name__}: (.*)$", text, re.M)
    if wrapped:
        text = wrapped[-1]
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
