"""A local HTTP server holding Tiger Cloud's fork contract, for testing the tiger backend offline:
HTTP Basic auth, the forkService body (fork_strategy required, target_time with PITR), 202 answers,
a status progression QUEUED -> CONFIGURING -> READY over polls, DELETE, and errors for the rest."""
from __future__ import annotations

import base64
import secrets
import threading
import time
from datetime import datetime

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PROGRESSION = ("QUEUED", "CONFIGURING", "READY")


class TigerContract:
    def __init__(self, project_id: str, service_id: str, public_key: str, secret_key: str, polls_per_step: int = 1):
        self.project_id, self.parent = project_id, service_id
        self.expected = "Basic " + base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
        self.polls_per_step = polls_per_step
        self.services: dict[str, dict] = {service_id: {"service_id": service_id, "name": "parent", "status": "READY",
                                                       "polls": 0}}
        self.requests: list[tuple[str, str]] = []
        base = "/projects/{project_id}/services"
        self.app = Starlette(routes=[
            Route(base, self.list_services, methods=["GET"]),
            Route(base + "/{service_id}/forkService", self.fork, methods=["POST"]),
            Route(base + "/{service_id}", self.get_service, methods=["GET"]),
            Route(base + "/{service_id}", self.delete_service, methods=["DELETE"]),
        ])

    def refusal(self, request: Request) -> Response | None:
        self.requests.append((request.method, request.url.path))
        if request.headers.get("authorization") != self.expected:
            return JSONResponse({"code": "UNAUTHORIZED", "message": "invalid credentials"}, status_code=401)
        if request.path_params["project_id"] != self.project_id:
            return JSONResponse({"code": "NOT_FOUND", "message": "project not found"}, status_code=404)
        return None

    def view(self, service: dict) -> dict:
        ready = service["status"] == "READY"
        return {"service_id": service["service_id"], "project_id": self.project_id, "name": service["name"],
                "status": service["status"], "created": "2026-11-22T00:00:00Z",
                "endpoint": {"host": f"{service['service_id']}.tsdb.local", "port": 5432} if ready else None}

    async def list_services(self, request: Request) -> Response:
        return self.refusal(request) or JSONResponse([self.view(s) for s in self.services.values()])

    async def fork(self, request: Request) -> Response:
        if (refused := self.refusal(request)) is not None:
            return refused
        if request.path_params["service_id"] not in self.services:
            return JSONResponse({"code": "NOT_FOUND", "message": "service not found"}, status_code=404)
        body = await request.json()
        strategy = body.get("fork_strategy")
        if strategy not in ("NOW", "LAST_SNAPSHOT", "PITR"):
            return JSONResponse({"code": "BAD_REQUEST", "message": "fork_strategy is required"}, status_code=400)
        if strategy == "PITR":
            try:
                datetime.fromisoformat(str(body.get("target_time")))
            except ValueError:
                return JSONResponse({"code": "BAD_REQUEST", "message": "PITR needs target_time"}, status_code=400)
        service_id = secrets.token_hex(5)
        self.services[service_id] = {"service_id": service_id, "name": body.get("name") or "parent-fork",
                                     "status": PROGRESSION[0], "polls": 0}
        return JSONResponse(self.view(self.services[service_id]), status_code=202)

    async def get_service(self, request: Request) -> Response:
        if (refused := self.refusal(request)) is not None:
            return refused
        service = self.services.get(request.path_params["service_id"])
        if service is None:
            return JSONResponse({"code": "NOT_FOUND", "message": "service not found"}, status_code=404)
        service["polls"] += 1
        step = min(service["polls"] // self.polls_per_step, len(PROGRESSION) - 1)
        if service["status"] in PROGRESSION:
            service["status"] = PROGRESSION[max(step, PROGRESSION.index(service["status"]))]
        return JSONResponse(self.view(service))

    async def delete_service(self, request: Request) -> Response:
        if (refused := self.refusal(request)) is not None:
            return refused
        if self.services.pop(request.path_params["service_id"], None) is None:
            return JSONResponse({"code": "NOT_FOUND", "message": "service not found"}, status_code=404)
        return JSONResponse({}, status_code=202)

    def serve(self, port: int) -> uvicorn.Server:
        server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        return server
