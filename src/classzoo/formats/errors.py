"""The error every byte-format reader raises for a malformed file (a ``UserError``: one line)."""

from __future__ import annotations

from classzoo.errors import UserError


class FormatError(UserError):
    """A malformed or truncated file: the message names the file and the byte offset."""

    def __init__(self, path: str, offset: int | None, what: str):
        where = "" if offset is None else f" at byte {offset}"
        super().__init__(f"{path}: {what}{where}")
        self.path, self.offset = path, offset
