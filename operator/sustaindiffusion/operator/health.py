"""The liveness endpoint: 200 while no search step is stuck, 500 naming the stuck ones otherwise."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sustaindiffusion.operator.supervisor import Health


def serve_health(port: int, address: str, health: Callable[[], Health | None]) -> ThreadingHTTPServer:
    """Serve GET /healthz; `health()` is None while this replica is not the leader (it is alive)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/healthz":
                self.send_error(404)
                return
            report = health()
            body = {"leader": False, "ok": True} if report is None else {"leader": True, **asdict(report)}
            data = json.dumps(body).encode()
            self.send_response(200 if body["ok"] else 500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return  # probes every few seconds: not worth a log line each

    server = ThreadingHTTPServer((address, port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
