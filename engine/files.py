"""Reading and writing files a user points us at, safely.

Owns two rules every reader and writer of the engine follows:
- Reads are bounded: a config that is a link to an endless device file, or a folder, or a 5 GB file
  named config.json, gives one sentence instead of exhausting memory (`read_bounded`).
- A file the project did not write is never modified: output goes to a free name next to it
  (`free_name`) when the name given is taken by something else.
It knows nothing of models, events or Qt.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

MB = 1 << 20


class FileProblem(OSError):
    """A file cannot be read as asked; str() is one sentence naming the file."""


def check_bounded(path: str | os.PathLike, limit: int, what: str = "file") -> int:
    """The size of `path` when it is a regular file of at most `limit` bytes; FileProblem otherwise.
    For readers that open the file themselves (a library reading it by name)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise FileProblem(f"{p} does not exist.") from None
    except OSError as e:
        raise FileProblem(f"{p} cannot be read ({e.strerror or e}).") from None
    if stat.S_ISDIR(st.st_mode):
        raise FileProblem(f"{p} is a folder, not a {what}.")
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem(f"{p} is not a regular file (a device or pipe?), so it is not read as a {what}.")
    if st.st_size > limit:
        raise FileProblem(
            f"{p} is {st.st_size / MB:.1f} MB, too large for a {what} (at most {limit / MB:g} MB)."
        )
    return st.st_size


def read_bounded(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes; FileProblem otherwise."""
    p = Path(path)
    check_bounded(p, limit, what)
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise FileProblem(f"{p} cannot be read ({e.strerror or e}).") from None
    if len(data) > limit:
        raise FileProblem(f"{p} grew past {limit / MB:g} MB while being read; it is not a {what}.")
    return data


def free_name(path: str | os.PathLike) -> Path:
    """`path` if nothing is there, else the first of 'name (2).ext', 'name (3).ext', ... that is free."""
    p = Path(path)
    if not os.path.lexists(p):
        return p
    n = 2
    while True:
        q = p.with_name(f"{p.stem} ({n}){p.suffix}")
        if not os.path.lexists(q):
            return q
        n += 1


def printable(text: str) -> str:
    """A str that may hold undecodable bytes of a file name (surrogate escapes) -> one that can be
    printed and written as UTF-8 (the bytes shown as \\xNN)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
