"""Local HTTP servers standing in for alert services (a webhook receiver, the Telegram Bot API): each
records what it is posted and answers as the service would."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class AlertServer:
    """Records each POST as (path, JSON body) in `received` and answers `status` with `answer(path)`."""

    status = 200

    def answer(self, path: str) -> dict:
        return {"ok": True}

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        received, server = self.received, self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, json.loads(body or b"{}")))
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(server.answer(self.path)).encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class AlertSink(AlertServer):
    """Takes every alert: the webhook receiver and the Telegram Bot API of the mesh tests."""


class RefusingServer(AlertServer):
    """Refuses everything and, as Telegram's Bot API does, says why quoting the request's path (which holds
    a Telegram URL's token)."""

    status = 400

    def answer(self, path: str) -> dict:
        return {"ok": False, "error_code": 400, "description": f"Bad Request: {path}"}
