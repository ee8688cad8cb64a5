"""A local server speaking OpenAI's chat-completions protocol (POST /v1/chat/completions), for the assistant's
language-model path: the test double at that outside boundary. Each request is kept; the reply's text comes
from a script the test sets (a function of the request's messages)."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    def __init__(self, script: Callable[[list[dict]], str]) -> None:
        self.script = script
        self.requests: list[dict] = []  # {"headers": {lower-case name: value}, "body": {...}}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                server.requests.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body, "path": self.path})
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self.reply(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request"}})
                text = server.script(body.get("messages", []))
                self.reply(200, {"id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion",
                                 "created": int(time.time()), "model": body.get("model", "?"),
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

            def reply(self, status: int, payload: dict) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
