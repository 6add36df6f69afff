"""The MLflow client: mlflow imported, the tracking store reached, and its errors made
kdbench's.

mlflow is imported only here, and only when exporting: ``pip install 'kdbench[mlflow]'``. For
a server (``http(s)://``), unless the environment says otherwise, MLflow's client retries a
request twice with a 30 s timeout (its own defaults: 7 times, 120 s) and prints no run URLs,
and the server is first reached once without retries (``probe``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from kdbench.errors import KdbenchError, first_line, one_line
from kdbench.results.mlflow.mapping import short
from kdbench.results.mlflow.probe import probe

INSTALL_HINT = "pip install 'kdbench[mlflow]'"
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # a line and a request per run ended
}


class Exporter:
    """An MLflow client for kdbench's runs: mlflow imported, the tracking store reached."""

    def __init__(self, tracking_uri: str) -> None:
        self.uri = tracking_uri
        self.mlflow = _import_mlflow()
        if _is_http(tracking_uri):
            for name, value in _HTTP_DEFAULTS.items():
                os.environ.setdefault(name, value)
            probe(tracking_uri)
        with self.errors():
            self.client = self.mlflow.tracking.MlflowClient(tracking_uri=tracking_uri)
        self.warned: set[str] = set()

    def errors(self) -> _MlflowErrors:
        """A context in which MLflow's errors become one-line KdbenchErrors naming the URI."""
        return _MlflowErrors(self)

    def warn(self, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            print(f"kdbench: warning: {one_line(message)}", file=sys.stderr)


class _MlflowErrors:
    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> bool:
        if exc is None or isinstance(exc, (KdbenchError, KeyboardInterrupt, SystemExit)):
            return False
        if _store_error(self.exporter.mlflow, exc):
            raise KdbenchError(f"MLflow {self.exporter.uri}: {short(exc)}") from None
        return False


def _store_error(mlflow: Any, exc: BaseException) -> bool:
    """Whether a tracking store's error is no bug of kdbench's: MLflow's own, the system's,
    or one its database or HTTP layer let through (a database file that cannot be made, a
    connection reset), known by its module (those packages are MLflow's, not kdbench's)."""
    if isinstance(exc, (mlflow.exceptions.MlflowException, OSError)):
        return True
    layers = ("sqlalchemy", "requests", "urllib3")
    return any(kind.__module__.split(".")[0] in layers for kind in type(exc).__mro__)


def _import_mlflow() -> Any:
    try:
        import mlflow
        import mlflow.entities
        import mlflow.exceptions
        import mlflow.tracking
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "mlflow":
            raise KdbenchError(f"exporting to MLflow needs mlflow: {INSTALL_HINT}") from None
        why = first_line(exc)  # installed, but broken (a dependency missing or too old)
        raise KdbenchError(f"mlflow cannot be imported ({why}); {INSTALL_HINT}") from None
    return mlflow


def _is_http(uri: str) -> bool:
    return uri.lower().startswith(("http://", "https://"))
