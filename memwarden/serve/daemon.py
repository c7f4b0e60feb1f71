"""One daemon for everything: how the command line finds a running ``memwarden serve`` and asks
it, so that embedded models outlive the shell command that loaded them and one governor sees
every model.

``memwarden serve`` writes where it listens to ``serve.json`` in memwarden's data directory while
it runs. :func:`find_daemon` reads it (checking that the process lives and answers), else tries
the default port; ``$MEMWARDEN_SERVE_URL`` names a daemon explicitly, or ``none`` to never use
one.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import platformdirs

from memwarden.core import errors, netprobe
from memwarden.core.errors import MemwardenError, ProviderUnavailable
from memwarden.core.serialize import from_data
from memwarden.core.types import LoadedModel

# httpx and psutil are imported only when a daemon is there: `memwarden status` without one
# must stay as cheap as before (tests/test_startup.py).

URL_ENV = "MEMWARDEN_SERVE_URL"
DEFAULT_URL = "http://127.0.0.1:11435"
# A daemon that does not answer its health check this fast is taken as absent.
PROBE_TIMEOUT_S = 0.5
# Loads may take minutes (a large model read from disk).
CALL_TIMEOUT_S = 600.0

_ERRORS: dict[str, type[MemwardenError]] = {
    cls.code: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, MemwardenError)
}


def state_path() -> Path:
    """Where a running ``memwarden serve`` says where it listens."""
    return platformdirs.user_data_path("memwarden") / "serve.json"


def announce(url: str) -> None:
    """Record that this process serves at ``url`` (``memwarden serve`` on start)."""
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed into place: a CLI looking for the daemon never reads half a file.
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    partial.replace(path)


def withdraw() -> None:
    """Remove the record, if it is this process's (``memwarden serve`` on exit)."""
    path = state_path()
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


class Daemon:
    """A running ``memwarden serve``, spoken to over its control API."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, **params: Any) -> Any:
        """One control call; a memwarden error answered by the daemon is raised as itself."""
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        query = {k: v for k, v in params.items() if v is not None}
        try:
            answer = httpx.request(
                method, self.url + path, params=query, headers=headers, timeout=CALL_TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(
                f"memwarden serve at {self.url} did not answer {path}: {exc}",
                hint=f"is it still running? set {URL_ENV}=none to act without it",
            ) from None
        data = answer.json()
        if answer.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            if isinstance(error, dict):
                cls = _ERRORS.get(str(error.get("code")), MemwardenError)
                raise cls(str(error.get("message")), hint=error.get("hint"))
            raise MemwardenError(
                f"memwarden serve at {self.url} answered {path} with HTTP {answer.status_code}"
            )
        return data

    def loaded_models(self) -> list[LoadedModel]:
        """Every model the daemon's governor sees loaded, embedded ones included."""
        data = self.call("GET", "/memory/components")
        return [from_data(m, LoadedModel) for m in data["models"]]


def _answers(url: str) -> bool:
    """Whether a memwarden serve answers at ``url`` (one TCP connect first: nothing listening
    is known in microseconds, without importing an HTTP client)."""
    if netprobe.unreachable(*netprobe.host_port(url, 80), timeout_s=PROBE_TIMEOUT_S):
        return False
    import httpx

    try:
        health = httpx.get(url.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S).json()
    except (httpx.HTTPError, ValueError):
        return False
    return isinstance(health, dict) and health.get("service") == "memwarden"


def find_daemon(token: str | None = None) -> Daemon | None:
    """The running ``memwarden serve`` this command should ask, or None to act locally."""
    explicit = os.environ.get(URL_ENV)
    if explicit is not None:
        return None if explicit.lower() in ("", "none", "off") else Daemon(explicit, token)
    try:
        record = json.loads(state_path().read_text())
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and isinstance(record.get("url"), str):
        pid = record.get("pid")
        if isinstance(pid, int) and _pid_exists(pid) and _answers(record["url"]):
            return Daemon(record["url"], token)
        return None
    return Daemon(DEFAULT_URL, token) if _answers(DEFAULT_URL) else None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def for_command(config_token: str | None) -> Daemon | None:
    """The daemon a command line call should go through (token: ``$MEMWARDEN_TOKEN``, else
    ``[serve] token``), or None."""
    return find_daemon(os.environ.get("MEMWARDEN_TOKEN") or config_token)


def component_path(model: str, action: str) -> str:
    """``/memory/components/<model>/<action>``, the model quoted (a GGUF path has slashes)."""
    return f"/memory/components/{quote(model, safe='')}/{action}"
