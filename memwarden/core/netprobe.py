"""One TCP connect, to learn whether a runtime's server is there before its SDK is imported.

Importing a provider SDK costs a third of a second (``ollama`` and ``lmstudio`` pull in httpx
and pydantic); a runtime that is not running answers a connect with a refusal in microseconds.
Providers call :func:`unreachable` before they build their first client, so ``memwarden status``
on a machine without Ollama or LM Studio imports neither SDK. A refused connection is an answer
("not running"), not something to retry.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

# How long a connect may take before the server counts as unreachable: a local runtime accepts
# in well under a millisecond; a dropped SYN (a firewall) must not hold `memwarden status` up.
CONNECT_TIMEOUT_S = 0.5


def host_port(url: str, default_port: int) -> tuple[str, int]:
    """The host and port of ``http://host:port/path``, ``host:port`` or ``ws://host:port``."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    port = parts.port or (443 if parts.scheme in ("https", "wss") else default_port)
    return parts.hostname or "127.0.0.1", port


def unreachable(host: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when something accepts connections at ``host:port``; otherwise why not, in a few
    words ("connection refused", "no answer to a connect within 0.5 s")."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer to a connect within {timeout_s:g} s"
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror or exc}"
    except OSError as exc:
        return exc.strerror or str(exc)
