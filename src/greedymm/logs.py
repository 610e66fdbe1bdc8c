"""Reading the append-only logs of a run (its step log and epoch records, ``greedymm.rundir``) so that a crash
never corrupts what is read.

A crash while a line is appended leaves a torn last line; it belongs to work after the last checkpoint, so
readers drop it (resume redoes that work). A damaged line anywhere else is not something greedymm writes, and is
refused with the file and line named, never merged into the next row or silently skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class LogError(RuntimeError):
    """A log line that greedymm did not write; the message names the file, the line and the fix."""


def whole_lines(text: str, where: str, parse: Callable[[str], Any], first: int = 1) -> list[tuple[str, Any]]:
    """(line, parse(line)) for every whole line of a log's ``text``. A torn last line (a crash mid-append) is
    dropped: it belongs to work after the last checkpoint, which resume redoes. A damaged line before the end is
    refused, naming ``where`` and its line number (``first`` = the number of the text's first line)."""
    lines = text.splitlines(keepends=True)
    out = []
    for i, ln in enumerate(lines):
        try:
            if not ln.endswith("\n"):
                raise ValueError("no line end")
            out.append((ln, parse(ln)))
        except (ValueError, KeyError, IndexError, TypeError) as e:
            if i == len(lines) - 1:
                break  # torn by a crash while it was being written
            raise LogError(
                f"{where} line {first + i} is damaged ({e}): the log was changed outside greedymm. Restore it, "
                "or train the run again in a new folder"
            ) from e
    return out


def torn(path) -> bool:
    """Whether a log ends in a torn line (no line end): what a crash in the middle of an append leaves."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        if f.tell() == 0:
            return False
        f.seek(-1, 2)
        return f.read(1) != b"\n"
