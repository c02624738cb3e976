"""The error every corpus reader raises for a malformed file, and the encoding checks they share.

:class:`CorpusFormatError` names the file and the 1-based line, so a message reads like a
compiler error: ``en_ewt-ud-dev.conllu:1042: expected 10 tab-separated columns, got 9``.
:func:`read_utf8_lines` reads a file as bytes and rejects what an annotated corpus must not
contain (a UTF-8 byte-order mark, bytes that are not UTF-8, CRLF line ends), naming the line.
"""

from __future__ import annotations

import os

__all__ = ["CorpusFormatError", "read_utf8_lines"]

_BOM = b"\xef\xbb\xbf"


class CorpusFormatError(ValueError):
    """A corpus file does not follow its format.

    The message has the form ``"{path}:{line}: expected ..., got ..."`` (or
    ``"{path}: ..."`` when the problem concerns the whole file rather than one line).

    Parameters
    ----------
    path : str or os.PathLike
        The file, as the caller gave it.
    line : int or None
        1-based line number of the problem, or None when it concerns the whole file.
    reason : str
        What is wrong: what was expected, what was found and, where useful, how to fix it.

    Attributes
    ----------
    path : str
        ``str(path)``.
    line : int or None
        1-based line number, or None.
    reason : str
        The message without the ``path:line:`` prefix.

    Examples
    --------
    >>> str(CorpusFormatError("dev.conllu", 12, "expected 10 tab-separated columns, got 9"))
    'dev.conllu:12: expected 10 tab-separated columns, got 9'
    """

    def __init__(self, path: str | os.PathLike[str], line: int | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):
        # Exceptions pickle as cls(*self.args); ours takes three arguments, not the message.
        return (type(self), (self.path, self.line, self.reason))


def _line_of_offset(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line number of byte ``offset`` and its 0-based byte offset within that line."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, offset - line_start


def read_utf8_lines(
    path: str | os.PathLike[str], *, format_name: str
) -> tuple[list[str], bool]:
    """Read a text file strictly as UTF-8 with LF line ends.

    Parameters
    ----------
    path : str or os.PathLike
        The file to read.
    format_name : str
        Name of the file format for messages, e.g. ``"CoNLL-U"``.

    Returns
    -------
    lines : list of str
        The lines without their ``"\\n"``; ``lines[i]`` is line ``i + 1``. The empty string
        after a final newline is not a line and is not included.
    ends_with_newline : bool
        Whether the file's last line is terminated by ``"\\n"``.

    Raises
    ------
    CorpusFormatError
        If the file is empty, starts with a UTF-8 byte-order mark, holds bytes that are not
        UTF-8 (the message names the line and the byte offset), or has a carriage return.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    if not data:
        raise CorpusFormatError(path, None, "expected at least one sentence, got an empty file")
    if data.startswith(_BOM):
        raise CorpusFormatError(
            path, 1, "expected UTF-8 text without a byte-order mark, got a UTF-8 BOM "
            "(bytes EF BB BF) at the start of the file; save the file as UTF-8 without BOM"
        )
    try:
        # Decoding the whole file at once is much faster than line by line; on failure the
        # exception's byte offset is mapped back to a line, which is what the reader needs.
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _line_of_offset(data, exc.start)
        bad = data[exc.start:exc.end].hex(" ").upper()
        raise CorpusFormatError(
            path, line, f"expected UTF-8 text, got invalid byte(s) {bad} at byte offset "
            f"{column} of the line (byte {exc.start} of the file): {exc.reason}"
        ) from None
    carriage_return = text.find("\r")
    if carriage_return >= 0:
        line = text.count("\n", 0, carriage_return) + 1
        if text.startswith("\r\n", carriage_return):
            reason = f"line ends with CRLF (\\r\\n); {format_name} needs LF line ends"
        else:
            reason = "expected no carriage return (\\r) in the text, got one inside the line"
        raise CorpusFormatError(path, line, reason + " (convert the file with dos2unix)")
    ends_with_newline = text.endswith("\n")
    lines = text.split("\n")
    if ends_with_newline:
        lines.pop()
    return lines, ends_with_newline
