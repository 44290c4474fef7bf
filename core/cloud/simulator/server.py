"""The HTTP face of the simulator: a stdlib threading server on 127.0.0.1.

``/api/...`` is the Vast API (`api.py`), with injected faults applied first; ``/_sim/...`` is the
admin API another process uses to inject faults, move the clock or set an instance's state
(`Simulator.admin`). Every answered API request is logged with its monotonic time, so a test
can check how long a client waited between two attempts.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from rigdeck.core.cloud.simulator import api, faults
from rigdeck.core.cloud.simulator.account import ApiError

if TYPE_CHECKING:
    from rigdeck.core.cloud.simulator.simulator import Simulator

_MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Served:
    """One API request as the simulator saw and answered it."""

    at: float
    """time.monotonic() when the request arrived."""
    method: str
    path: str
    op: str
    status: int
    """0 when the connection was dropped without an answer."""


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    simulator: Simulator

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that gave up (late create) leaves a broken pipe behind: expected here.
        pass


class Handler(BaseHTTPRequestHandler):
    server: QuietServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are in Simulator.requests; stderr stays clean for tests and the TUI

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            self._serve()
        except Exception as exc:
            # A broken simulator answers like a broken server (500), never with silence: a
            # dropped connection means something else to a client (see create_never).
            message = f"simulator failure: {' '.join(str(exc).split())}"
            self._send(500, {"success": False, "error": "simulator_error", "msg": message})

    def _serve(self) -> None:
        arrived = time.monotonic()
        parts = urlsplit(self.path)
        args = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            body = self._read_body()
        except ValueError:
            self._send(400, {"success": False, "error": "invalid_json", "msg": "Body is not JSON."})
            return
        sim = self.server.simulator
        if parts.path.startswith("/_sim/"):
            try:
                status, answer = sim.admin(self.command, parts.path, body)
            except (KeyError, ValueError, TypeError) as exc:
                status, answer = 400, {"success": False, "error": "bad_admin", "msg": str(exc)}
            self._send(status, answer)
            return
        found = api.find_route(self.command, parts.path)
        op = found[0].op if found else "unknown"
        request = api.ApiRequest(self.command, parts.path, args, body, self._api_key() or "")
        outcome = sim.serve(request, found)
        if outcome.drop:
            sim.record(Served(arrived, self.command, parts.path, op, 0))
            self._drop()
            return
        if outcome.delay_s > 0:
            sim.wait(outcome.delay_s)
        sim.record(Served(arrived, self.command, parts.path, op, outcome.response.status))
        self._send(outcome.response.status, outcome.response.body, outcome.response.headers)

    def _api_key(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            return auth[7:].strip() or None
        return None

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return None
        raw = self.rfile.read(min(length, _MAX_BODY))
        if not raw.strip():
            return None
        return json.loads(raw)

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _drop(self) -> None:
        # The request was served (an instance exists) but the answer never comes: close the
        # socket without a status line, as a proxy that lost its upstream would.
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


@dataclass
class Outcome:
    response: api.ApiResponse
    delay_s: float = 0.0
    drop: bool = False


def fault_response(fault: faults.Fault) -> api.ApiResponse:
    headers: dict[str, str] = {}
    if fault.status == 429:
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        body = {"success": False, "error": "rate_limited", "msg": fault.msg or "Too many requests."}
    else:
        body = {
            "success": False,
            "error": "server_error",
            "msg": fault.msg or f"Simulated {fault.status} from the API.",
        }
    return api.ApiResponse(fault.status, body, headers)


def error_response(exc: ApiError) -> api.ApiResponse:
    return api.ApiResponse(exc.status, exc.body())
