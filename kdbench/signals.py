"""SIGTERM ends a run as Ctrl-C does: the finished rows are kept, the driver cleans up, and the
command says so in one line and exits 143 (128 + SIGTERM).

Python's default for SIGTERM kills the process at once (no clean-up), and ``ray.init`` puts
its own handler in the driver (``sys.exit``), which ends the interpreter with Ray's and the
compaction's threads alive. ``end_on_sigterm`` raises ``Terminated`` in the main thread
instead, so every ``finally`` runs; it is called at the start of the command and again after
Ray starts.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class Terminated(KeyboardInterrupt):
    """The process was asked to end (SIGTERM): unwound like an interrupt."""


_received = False


def terminated() -> bool:
    """Whether SIGTERM arrived (Ray's blocking calls re-raise any interrupt as a plain
    ``KeyboardInterrupt``, so the exception's type alone does not tell)."""
    return _received


def _raise(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = True
    raise Terminated()


def end_on_sigterm() -> None:
    """Make SIGTERM raise ``Terminated`` in the main thread (elsewhere: left as it is)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise)
