"""Crash-safe file writing: write a temporary file beside the target, then rename.

A reader never sees a half-written file, and if writing fails (disk full, killed
process) the previous file at the target path is left intact.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_open", "atomic_write_text"]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file in ``path``'s folder; rename it onto ``path`` on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _explained(exc, target) from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise _explained(exc, target) from None
        raise


def _explained(exc: OSError, target: Path) -> Exception:
    """Disk full and permission errors become a ValueError that says what to do (the
    command line and the app show those as one line); others pass unchanged."""
    kept = f"; the previous {target.name} is unchanged" if target.exists() else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ValueError(f"no space left on the device while writing {target}{kept}: free some space or choose "
                          "another folder")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ValueError(f"cannot write {target} ({exc.strerror}){kept}: choose a folder you can write to")
    return exc


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)
