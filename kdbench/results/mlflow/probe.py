"""A tracking server reached once, without MLflow's retries: an unreachable one is said in
one line, at once, not after minutes of retrying."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

from kdbench.errors import KdbenchError, one_line
from kdbench.results.mlflow.mapping import short

_PROBE_TIMEOUT_S = 10.0


class Unreachable(KdbenchError):
    """The tracking server did not answer."""


def probe(uri: str, timeout: float = _PROBE_TIMEOUT_S) -> None:
    """Reach a tracking server once, without MLflow's retries: any answer will do (its
    credentials are MLflow's to check); none is a one-line KdbenchError."""
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            return  # TLS is MLflow's to settle (MLFLOW_TRACKING_INSECURE_TLS, a CA bundle)
        reason = exc.reason
    except (OSError, ValueError) as exc:  # a timeout, a malformed URL
        reason = exc
    why = short(reason) if isinstance(reason, BaseException) else one_line(str(reason))
    raise Unreachable(f"MLflow {uri}: cannot reach the tracking server ({why})")
