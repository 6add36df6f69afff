"""Results at a URI (``s3://``, ``gs://``, any file system pyarrow opens from a URI).

Readers (``load``, ``read_table``, the leaderboard) read the Parquet files where they lie. A
driver writes into a local mirror of the URI and uploads as it goes:

- before planning it pulls what the URI holds, so a run resumes from any machine;
- every file it writes (a row, a curve, an artifact, a teacher's weights, the run's record)
  is uploaded at once, before the study hears of the trial, so a finished trial is never
  lost with the driver;
- every 30 s, after each compaction and at the end it reconciles the whole tree: the
  studies' journal goes up, and files that compaction folded away are deleted there too.

An object store has no locks: one driver per URI at a time is the user's to keep (a second
driver on the same machine is refused by the mirror's lock, as for a directory).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from kdbench.errors import KdbenchError
from kdbench.results.files import RunLock, atomic_file

SYNC_EVERY_S = 30.0
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs", "file")
"""What pyarrow's ``FileSystem.from_uri`` opens (given its optional parts are built in)."""


def is_uri(location: str | os.PathLike[str]) -> bool:
    return isinstance(location, str) and bool(_URI.match(location))


def check_scheme(uri: str) -> None:
    """Refuse an unknown scheme without opening anything (no credentials or network needed)."""
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise KdbenchError(
            f"{uri}: cannot open this results location (unknown scheme '{scheme}'); "
            f"valid: {', '.join(SCHEMES)}, or a directory"
        )


def open_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """The file system and base path of a URI, or a one-line error naming it."""
    try:
        fs, base = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise KdbenchError(
            f"{uri}: cannot open this results location ({str(exc).splitlines()[0]}); "
            "give a directory or a URI such as s3://bucket/prefix or gs://bucket/prefix"
        ) from None
    return fs, base.rstrip("/")


def list_files(fs: pafs.FileSystem, base: str, sub: str = "") -> dict[str, int]:
    """Relative path -> size of every file under ``base/sub`` (none when it does not exist)."""
    root = f"{base}/{sub}".rstrip("/")
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise KdbenchError(f"{root}: cannot list ({str(exc).splitlines()[0]})") from None
    return {
        info.path[len(base) + 1 :]: info.size for info in infos if info.type == pafs.FileType.File
    }


def cache_root() -> Path:
    return Path(os.environ.get("KDBENCH_CACHE") or Path.home() / ".cache" / "kdbench")


class Mirror:
    """A local directory that follows a results URI: pulled once, pushed as it is written."""

    def __init__(self, uri: str, local: Path | None = None) -> None:
        self.uri = uri
        self.fs, self.base = open_uri(uri)
        key = hashlib.sha256(uri.encode()).hexdigest()[:16]
        self.local = local or cache_root() / "results" / key
        self._sent: dict[str, tuple[int, int]] = {}
        self._last_sync = time.monotonic()

    def _remote(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def _local_files(self) -> dict[str, Path]:
        """Every file of the mirror but the temporary and lock files ('.'-prefixed)."""
        out = {}
        for path in self.local.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                out[path.relative_to(self.local).as_posix()] = path
        return out

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int]:
        st = path.stat()
        return st.st_size, st.st_mtime_ns

    def pull(self) -> Path:
        """Make the mirror what the URI holds (downloads what differs, drops what is gone)."""
        self.local.mkdir(parents=True, exist_ok=True)
        remote = list_files(self.fs, self.base)
        local = self._local_files()
        for rel, size in remote.items():
            path = self.local / rel
            if rel not in local or path.stat().st_size != size:
                with self.fs.open_input_stream(self._remote(rel)) as src, atomic_file(path) as f:
                    while chunk := src.read(1 << 22):
                        f.write(chunk)
        for rel, path in local.items():
            if rel not in remote:
                path.unlink()
        self._sent = {rel: self._stamp(p) for rel, p in self._local_files().items()}
        return self.local

    def push(self, *paths: Path) -> None:
        """Upload files of the mirror (each one whole: an object store writes an object at once)."""
        for path in paths:
            rel = path.relative_to(self.local).as_posix()
            with self.fs.open_output_stream(self._remote(rel)) as out, path.open("rb") as src:
                while chunk := src.read(1 << 22):
                    out.write(chunk)
            self._sent[rel] = self._stamp(path)

    def sync(self) -> None:
        """Upload what changed since it was sent; delete there what is gone here."""
        local = self._local_files()
        changed = [p for rel, p in local.items() if self._sent.get(rel) != self._stamp(p)]
        self.push(*changed)
        for rel in set(self._sent) - set(local):
            self.fs.delete_file(self._remote(rel))
            del self._sent[rel]
        self._last_sync = time.monotonic()

    def sync_now_and_then(self) -> None:
        if time.monotonic() - self._last_sync >= SYNC_EVERY_S:
            self.sync()


def pulled(uri: str) -> Path:
    """A fresh local copy of the results at a URI (the report and the dry run read files)."""
    mirror = Mirror(uri)
    mirror.local.mkdir(parents=True, exist_ok=True)
    with RunLock(mirror.local):
        return mirror.pull()
