"""The dashboard: FastAPI over the mesh's hot state, with a WebSocket relaying the bus to browsers."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from pathlib import Path

import zmq
import zmq.asyncio
from fastapi import Depends, FastAPI, Header, HTTPException, Query, WebSocket, WebSocketDisconnect
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from meshtrader.ops.cli import close_all_positions, request_validation, set_kill_switch
from meshtrader.ops.status import equity_curves, market_chart, mesh_state, service_counters
from meshtrader.persistence.hotstate import HotState
from meshtrader.runtime.config import Settings, dashboard_token
from meshtrader.runtime.log import Logger
from meshtrader.runtime.metrics import ServiceMetrics, topic_kind
from meshtrader.wire.codec import DecodeError, UnknownTopic, decode_event, to_json_ready

STATIC = Path(__file__).parent / "static"
SWAGGER_UI = "/static/vendor/swagger-ui"
CLIENT_QUEUE = 1000


class KillSwitch(BaseModel):
    on: bool


class Validate(BaseModel):
    optimize: bool = False


class CloseAllBody(BaseModel):
    confirm: bool = False
    reason: str = ""


def relayed(settings: Settings) -> dict[str, tuple[str, list[bytes]]]:
    """What the dashboard relays, from the topology table: program -> (its PUB endpoint, topic prefixes)."""
    return {p.name: (settings.endpoint(p.endpoint_name("pub")), [prefix.encode() for prefix in p.relays])
            for p in settings.programs() if p.relays}


class Relay:
    """One SUB socket to every publisher with topics to relay (the topology's `relays`); each browser
    gets a bounded queue (slow ones lose old events)."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics, log: Logger) -> None:
        self.settings, self.metrics, self.log = settings, metrics, log
        self.clients: set[asyncio.Queue] = set()
        self.watched = asyncio.Event()

    async def run(self) -> None:
        """Subscribed only while a browser watches: an idle dashboard costs the mesh nothing."""
        ctx = zmq.asyncio.Context()
        try:
            while True:
                await self.watched.wait()
                sock = ctx.socket(zmq.SUB)
                sock.setsockopt(zmq.LINGER, 0)
                sources = relayed(self.settings)
                for endpoint, _ in sources.values():
                    sock.connect(endpoint)
                for prefix in sorted({prefix for _, prefixes in sources.values() for prefix in prefixes}):
                    sock.setsockopt(zmq.SUBSCRIBE, prefix)
                try:
                    while self.clients:
                        if await sock.poll(1000):
                            self.relay(await sock.recv_multipart())
                finally:
                    sock.close()
        finally:
            ctx.term()

    def relay(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self.metrics.decode_error("?")
            return
        try:
            event = decode_event(frames[0], frames[1])
        except (UnknownTopic, *DecodeError):
            self.metrics.decode_error(topic_kind(frames[0]))
            return
        self.metrics.message_in(topic_kind(frames[0]))
        text = json.dumps({"topic": frames[0].decode(), "event": to_json_ready(event)})
        for queue in list(self.clients):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(text)

    def join(self, queue: asyncio.Queue) -> None:
        self.clients.add(queue)
        self.watched.set()

    def leave(self, queue: asyncio.Queue) -> None:
        self.clients.discard(queue)
        if not self.clients:
            self.watched.clear()


def create_app(settings: Settings) -> FastAPI:
    log = Logger("dashboard", settings.log_level)
    metrics = ServiceMetrics("dashboard")
    hot = HotState(settings.effective_redis_url, settings.redis_prefix, log)
    relay = Relay(settings, metrics, log)
    started = time.time()

    async def heartbeat() -> None:
        while True:
            hot.put("hb:dashboard", {"service": "dashboard", "pid": os.getpid(), "ts": time.time(),
                                     "started": started}, ttl_s=max(5, int(settings.heartbeat_s * 5)))
            await asyncio.sleep(settings.heartbeat_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        tasks = [asyncio.create_task(relay.run()), asyncio.create_task(heartbeat())]
        metrics.up.set(1)
        log.info("service_started", pid=os.getpid(), url=settings.dashboard_url)
        yield
        for task in tasks:
            task.cancel()
        hot.close()
        log.info("service_stopped")

    token, _ = dashboard_token(settings)

    def control_token(authorization: str = Header("", description="Bearer <the dashboard token>")) -> None:
        """Controls that change trading need the dashboard token (MESH_DASHBOARD_TOKEN, or the one `mesh up`
        made and printed, kept in $MESH_HOME/dashboard.token)."""
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(status_code=401, detail="this control needs the dashboard token: "
                                "Authorization: Bearer <token> (mesh up printed it; $MESH_HOME/dashboard.token)")
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(status_code=403, detail="wrong dashboard token")

    # The API docs from the vendored Swagger UI (static/vendor/swagger-ui/VERSION): nothing from a CDN.
    app = FastAPI(title="Meshtrader", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    control = [Depends(control_token)]

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="Meshtrader API",
                                   swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
                                   swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png")

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True, "redis": await asyncio.to_thread(hot.ping)}

    @app.get("/api/state")
    async def state() -> dict:
        return await asyncio.to_thread(mesh_state, settings, hot, True, 20)

    @app.get("/api/services")
    async def services() -> dict:
        """Each service's message counters (in, out, decode errors, sequence gaps), from its /metrics."""
        return await asyncio.to_thread(service_counters, settings)

    @app.get("/api/chart")
    async def chart(symbol: str, candles: int = Query(1440, ge=1, le=20_000)) -> dict:
        """A symbol's latest candles and the trades made over them (trade money as exact strings)."""
        if symbol not in settings.symbols:
            raise HTTPException(status_code=404, detail=f"{symbol} is not traded here: {', '.join(settings.symbols)}")
        return await asyncio.to_thread(market_chart, settings, symbol, candles)

    @app.get("/api/equity")
    async def equity(since_et: int = Query(0, ge=0, description="from this market time (ms) on")) -> dict:
        """The portfolio's and each strategy's equity over market time, every 15 market minutes (exact strings)."""
        return await asyncio.to_thread(equity_curves, settings, since_et)

    @app.post("/api/kill-switch", dependencies=control)
    async def kill_switch(body: KillSwitch) -> dict:
        answered, message = await asyncio.to_thread(set_kill_switch, settings, body.on, "dashboard")
        if not answered:
            raise HTTPException(status_code=503, detail=message)
        return {"ok": True, "message": message}

    @app.post("/api/close-all", dependencies=control)
    async def close_all(body: CloseAllBody) -> dict:
        if not body.confirm:
            raise HTTPException(status_code=400, detail='closing every position needs {"confirm": true}')
        message = await asyncio.to_thread(close_all_positions, settings, "dashboard", body.reason)
        if message is None:
            raise HTTPException(status_code=503, detail="the executor did not answer")
        return {"ok": True, "message": message}

    @app.post("/api/validate", dependencies=control)
    async def validate(body: Validate) -> dict:
        message = await asyncio.to_thread(request_validation, settings, "asked from the dashboard", body.optimize,
                                          "dashboard")
        if message is None:
            raise HTTPException(status_code=503, detail="the allocator did not answer")
        return {"ok": True, "message": message}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws")
    async def events(socket: WebSocket) -> None:
        await socket.accept()
        queue: asyncio.Queue = asyncio.Queue(maxsize=CLIENT_QUEUE)
        relay.join(queue)
        try:
            while True:
                await socket.send_text(await queue.get())
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            relay.leave(queue)

    return app
