"""Progress of a run: a live status line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Counts trials done / running / failed, with elapsed time and an ETA.

    On a terminal one status line is redrawn in place (and finished trials scroll above it);
    otherwise each finished trial is one plain line, fit for CI logs and `kdbench submit`.
    """

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        live: bool | None = None,
        slots: float = 1.0,
    ) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.total = total
        self.slots = max(slots, 1.0)
        self.done = self.failed = self.running = 0
        self.start = time.monotonic()
        self._last_draw = 0.0

    def begin(self, total: int, slots: float) -> None:
        """A run's start, for a progress made before its size was known (``kdbench.run``)."""
        self.total, self.slots = total, max(slots, 1.0)
        self.start = time.monotonic()

    def eta(self) -> float | None:
        if self.done == 0:
            return None
        elapsed = time.monotonic() - self.start
        return elapsed / self.done * (self.total - self.done)

    def status(self) -> str:
        eta = self.eta()
        return (
            f"{self.done}/{self.total} done · {self.running} running · {self.failed} failed · "
            f"{_clock(time.monotonic() - self.start)} elapsed · ETA "
            f"{_clock(eta) if eta is not None else '--:--'}"
        )

    def set_running(self, running: int) -> None:
        self.running = running
        if self.live and time.monotonic() - self._last_draw > 0.2:
            self._draw()

    def finished(self, row: dict[str, Any]) -> None:
        self.done += 1
        self.failed += row.get("status") == "failed"
        line = describe(row)
        if self.live:
            self.stream.write("\r\033[K" + line + "\n")
            self._draw()
        else:
            self.stream.write(f"[{self.done}/{self.total}] {line}\n")
        self.stream.flush()

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        self.stream.write("\r\033[K" + self.status())
        self.stream.flush()

    def close(self) -> None:
        self.running = 0
        if self.live:
            self.stream.write("\r\033[K")
        self.stream.write(f"finished: {self.status().split(' · ETA')[0]}\n")
        self.stream.flush()


def describe(row: dict[str, Any]) -> str:
    who = (
        f"{row['dataset']} {row['teacher']}"
        if row.get("student") is None  # a teacher, or what a method needs first
        else f"{row['dataset']} {row['teacher']}→{row['student']} {row['method']}"
    )
    text = f"{row['status']:<6} {row['phase']:<7} {who} seed={row['seed']}"
    if row.get("status") == "failed":
        return f"{text}: {row.get('error')}"
    accs = [
        f"{k.replace('_acc', '')}={row[k]:.3f}"
        for k in ("val_acc", "test_acc")
        if row.get(k) is not None
    ]
    secs = row.get("train_seconds")
    return f"{text}  {' '.join(accs)}" + (f"  {secs:.1f}s" if secs is not None else "")


class NotebookProgress(Progress):
    """In a Jupyter notebook: the status line is one output updated in place (an IPython
    display handle), and each finished trial is a plain line below it."""

    def __init__(self, total: int = 0, *, stream: TextIO | None = None, slots: float = 1.0):
        super().__init__(total, stream=stream, live=False, slots=slots)
        from IPython.display import display

        self._handle = display(_Text(self.status()), display_id=True)

    def set_running(self, running: int) -> None:
        self.running = running
        if time.monotonic() - self._last_draw > 0.5:
            self._draw()

    def finished(self, row: dict[str, Any]) -> None:
        super().finished(row)
        self._draw()

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        if self._handle is not None:
            self._handle.update(_Text(self.status()))

    def close(self) -> None:
        self.running = 0
        if self._handle is not None:
            self._handle.update(_Text("finished: " + self.status().split(" · ETA")[0]))
        self.stream.flush()


class _Text:
    """Plain text for IPython's display machinery."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython is not imported to find out)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"
