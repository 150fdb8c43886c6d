"""The application's health check after a rollback: does its health URL answer 2xx?"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HEALTH_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class HealthCheck:
    """One GET of the health URL; `status` is passed, failed or not_checked (no URL given)."""

    status: str
    url: str
    detail: str
    http_status: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "url": self.url, "detail": self.detail, "http_status": self.http_status,
                "seconds": round(self.seconds, 3)}


def check_health(url: str, *, timeout: float = HEALTH_TIMEOUT_SECONDS) -> HealthCheck:
    """GET `url` once and judge it: a 2xx answer passes, anything else (or no answer) fails."""
    if not url:
        return HealthCheck("not_checked", "", "no health_url given: the application was not checked")
    shown = _without_credentials(url)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (the operator's own URL)
            code = response.status
    except urllib.error.HTTPError as exc:
        code = exc.code
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return HealthCheck("failed", shown, f"no answer from {shown}: {reason}", None, time.monotonic() - started)
    seconds = time.monotonic() - started
    if 200 <= code < 300:
        return HealthCheck("passed", shown, f"{shown} answered {code}", code, seconds)
    return HealthCheck("failed", shown, f"{shown} answered {code}, not 2xx", code, seconds)


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts._replace(query="", fragment="")) if parts.query else urlunsplit(parts)
