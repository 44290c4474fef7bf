"""Is the Hub there at all? One TCP connect, answered in about a second, before a Hub request.

huggingface_hub retries a refused or unrouteable connection five times with a growing backoff
(about 24 s in all) before it gives up; a user who is offline should hear so at once. A connect
that works is remembered for a while, so a session of Hub calls pays for the probe once.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from urllib.parse import urlsplit

from rigdeck.core.errors import HubError

CONNECT_TIMEOUT_S = 1.5
# A reachable endpoint is not probed again for this long.
REMEMBER_S = 60.0

_reached: dict[tuple[str, int], float] = {}
_lock = threading.Lock()


def _behind_proxy(scheme: str, host: str) -> bool:
    """A proxy decides reachability: a direct connect would say nothing about it."""
    proxies = urllib.request.getproxies()
    return bool(proxies.get(scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host)


def check_reachable(endpoint: str, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ``HubError`` (one line) when nothing accepts a connection at ``endpoint``."""
    parts = urlsplit(endpoint)
    host = parts.hostname
    if not host or parts.scheme not in ("http", "https"):
        return  # not a URL a connect can test: let the request itself say what is wrong
    port = parts.port or (443 if parts.scheme == "https" else 80)
    key = (host, port)
    with _lock:
        if time.monotonic() - _reached.get(key, -REMEMBER_S) < REMEMBER_S:
            return
    if _behind_proxy(parts.scheme, host):
        return
    origin = f"{parts.scheme}://{parts.netloc}"
    try:
        socket.create_connection(key, timeout=timeout).close()
    except socket.gaierror:
        raise HubError(
            f"cannot reach {origin} (the name {host} does not resolve: no network?);"
            " check the connection or HF_ENDPOINT"
        ) from None
    except TimeoutError:
        raise HubError(
            f"cannot reach {origin} (no answer within {timeout:g} s);"
            " check the connection or HF_ENDPOINT"
        ) from None
    except OSError:
        raise HubError(
            f"cannot reach {origin} (connection refused or no network);"
            " check the connection or HF_ENDPOINT"
        ) from None
    with _lock:
        _reached[key] = time.monotonic()
