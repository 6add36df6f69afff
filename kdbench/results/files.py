"""A results directory's files as a writer makes them on local disk: each one whole or not
at all (``atomic_file``), and one writer at a time (``RunLock``). Both ``store`` (rows) and
``remote`` (a local mirror of a URI) write through these."""

from __future__ import annotations

import fcntl
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from kdbench.errors import KdbenchError
from kdbench.results.layout import Layout

TEMPORARY = re.compile(r"\..+\.[A-Za-z0-9_]+\.tmp")
"""The name of ``atomic_file``'s temporary file (``.<name>.<random>.tmp``)."""


@contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file that readers see whole or not at all: written to a '.'-prefixed temporary file
    beside ``path`` (never read as a result), fsynced, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _temporary(path: Path) -> tuple[int, Path]:
    """A new temporary file beside ``path``, created 0666 less the umask as open(2) creates any
    file (``mkstemp`` makes 0600, which colleagues on a shared file system cannot read)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def sweep_temporary(folders: Iterable[Path]) -> list[Path]:
    """Remove the temporary files a killed writer left in ``folders`` (the ones removed).

    Only while no writer can be at work there: under the directory's RunLock, or for
    ``compacted/`` at the start of a compaction (compactions run one at a time).
    """
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if TEMPORARY.fullmatch(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


class RunLock:
    """One driver per results directory: a kernel lock that dies with its process.

    Held for the whole run; a second ``kdbench run`` on the same directory is refused rather
    than interleaving writes. A driver killed with SIGKILL releases it with its life. Taking
    it removes the temporary files a killed writer left (no writer can be at work then).
    """

    def __init__(self, results_dir: str | os.PathLike[str]) -> None:
        self.layout = Layout.of(results_dir)
        self.path = self.layout.lock()

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise KdbenchError(
                f"{self.path.parent.parent} is being written by another kdbench run (pid {holder}); "
                "wait for it to finish or give another --results directory"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)
        sweep_temporary(self.layout.written_folders())
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
