"""The dashboard: FastAPI over the mesh's hot state, with a WebSocket relaying the bus to browsers."""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import socket
import time
import traceback
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from meshtrader.assistant.answer import Assistant, QuestionError
from meshtrader.dashboard.stream import LAGGING, HealthWatch, Stream
from meshtrader.ops.cli import (
    RESETS,
    close_all_positions,
    request_validation,
    reset_risk,
    risk_limits,
    set_kill_switch,
    set_paused,
    set_risk_limit,
)
from meshtrader.ops.features import live_features, strategy_overlays
from meshtrader.ops.insights import fork_timeline, narratives, regime_history, strategy_insights
from meshtrader.ops.logs import UnknownService, control_log, service_history, service_logs
from meshtrader.ops.status import (
    equity_curves,
    mesh_state,
    open_positions,
    recent_candles,
    risk_view,
    service_counters,
    service_health,
    symbol_trades,
)
from meshtrader.persistence.hotstate import HotState
from meshtrader.runtime.config import Settings, dashboard_token
from meshtrader.runtime.log import Logger
from meshtrader.runtime.metrics import ServiceMetrics
from meshtrader.wire.messages import ResetKind

STATIC = Path(__file__).parent / "static"
MAX_MS = 2**53  # market times beyond this are no times (and overflow SQLite's integers)
SWAGGER_UI = "/static/vendor/swagger-ui"
UNANSWERED = {503: {"description": "the service that applies it did not answer (the mesh is down or busy); "
                                   "`detail` says what became of the request"}}
LOGGED_CHARS = 300  # what a rejection's log line keeps of the path and of the reason: a huge input stays out


class KillSwitch(BaseModel):
    on: bool


class Pause(BaseModel):
    on: bool


class LimitChange(BaseModel):
    name: str = Field(description="a risk limit, e.g. daily_loss_pct (GET /api/risk/limits lists them)")
    value: str = Field(description="its new value as text, e.g. 0.03 for 3%")


class Validate(BaseModel):
    optimize: bool = False


class Question(BaseModel):
    question: str = Field(min_length=1, max_length=2000, description="e.g. why did momentum stop trading?")


class RiskReset(BaseModel):
    what: ResetKind = Field(
        description="peak: measure the portfolio's drawdown from the equity now; daily_loss: lift today's daily "
                    "loss halt; strategy: reactivate a strategy its drawdown deactivated")
    strategy: str = Field("", max_length=64, description="with what=strategy: which")
    reason: str = Field("", max_length=200, description="recorded with the control")


class CloseAllBody(BaseModel):
    confirm: bool = False
    reason: str = ""


def loosens(value: str, current: str | None) -> bool:
    """Whether a new limit value is above the one in use (for every risk limit, higher is looser); a value
    that is no number is left to the risk guard to refuse with its reason."""
    try:
        return current is not None and Decimal(value) > Decimal(current)
    except InvalidOperation:
        return False


def status_reason(status: int) -> str:
    """A status as a metric label (`not_found`, `unprocessable_entity`): named, and a small fixed set."""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return str(status)


def validation_summary(error: RequestValidationError) -> str:
    """What was wrong with a request, field by field, without the values given (they may be anything)."""
    return "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in error.errors())


def listens_on_loopback(host: str) -> bool:
    """Whether an address (or host name) is this machine's loopback only."""
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False


def create_app(settings: Settings) -> FastAPI:
    log = Logger("dashboard", settings.log_level)
    metrics = ServiceMetrics("dashboard")
    hot = HotState(settings.effective_redis_url, settings.redis_prefix, log)
    stream = Stream(settings, metrics, log)
    health = HealthWatch(stream, lambda: service_health(settings, hot))
    assistant = Assistant(settings, risk_state=lambda: hot.get("risk") or {})
    started = time.time()

    async def heartbeat() -> None:
        while True:
            hot.put("hb:dashboard", {"service": "dashboard", "pid": os.getpid(), "ts": time.time(),
                                     "started": started}, ttl_s=max(5, int(settings.heartbeat_s * 5)))
            await asyncio.sleep(settings.heartbeat_s)

    async def kept_running(job) -> None:
        """A background job that fails is logged and started again: the stream must not stop for good."""
        while True:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - any failure: logged, then the job runs again
                log.error("background_job_failed", job=job.__name__, error=repr(error))
                await asyncio.sleep(1.0)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        tasks = [asyncio.create_task(kept_running(job)) for job in (stream.relay_bus, health.run, heartbeat)]
        metrics.up.set(1)
        log.info("service_started", pid=os.getpid(), url=settings.dashboard_url)
        yield
        for task in tasks:
            task.cancel()
        hot.close()
        log.info("service_stopped")

    token, _ = dashboard_token(settings)
    loopback = listens_on_loopback(settings.bind_address("dashboard"))

    def check_token(authorization: str, what: str) -> None:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(status_code=401, detail=f"{what} the dashboard token: Authorization: Bearer <token> "
                                "(mesh up printed it; $MESH_HOME/dashboard.token)")
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(status_code=403, detail="wrong dashboard token")

    def control_token(authorization: str = Header("", description="Bearer <the dashboard token>")) -> None:
        """Controls that change trading need the dashboard token (MESH_DASHBOARD_TOKEN, or the one `mesh up`
        made and printed, kept in $MESH_HOME/dashboard.token)."""
        check_token(authorization, "this control needs")

    def viewer_token(authorization: str = Header("", description="Bearer <the dashboard token>, unless on loopback")) -> None:
        """Read-only views need no token while the dashboard listens on loopback only; served beyond this
        machine (MESH_HOST), they need it too."""
        if not loopback:
            check_token(authorization, "this dashboard is reachable from other machines: its views need")

    # The API docs from the vendored Swagger UI (static/vendor/swagger-ui/VERSION): nothing from a CDN.
    app = FastAPI(title="Meshtrader", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if loopback:  # another site's page must not reach it by a name that resolves here (DNS rebinding)
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=[*settings.addresses("dashboard"), "localhost", "127.0.0.1"])
    control = [Depends(control_token)]
    rejected = metrics.counter("mesh_http_requests_rejected_total", "API calls refused as wrong (4xx: bad input, "
                               "unknown route, missing or wrong token), by reason", ("reason",))
    failed = metrics.counter("mesh_http_requests_failed_total", "API calls not served (5xx: a service did not "
                             "answer, or a fault here), by reason", ("reason",))

    def scrubbed(text: str, limit: int | None = LOGGED_CHARS) -> str:
        """Text for the log, the token cut out wherever a caller put it (a path, a value echoed in an error)."""
        return text.replace(token, "<token>")[:limit]

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, error: StarletteHTTPException) -> Response:
        """FastAPI's JSON reply; the reason is kept for `accounted` to log."""
        request.state.why = str(error.detail)
        return await http_exception_handler(request, error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        """FastAPI's 422 with each field's error, the input given included even when it is bytes that are no
        UTF-8 (a body not sent as JSON: FastAPI's own handler fails on those with a 500); a summary is kept for
        `accounted` to log."""
        request.state.why = validation_summary(error)
        errors = jsonable_encoder(error.errors(), custom_encoder={bytes: lambda raw: raw.decode("utf-8", "replace")})
        return JSONResponse({"detail": errors}, status_code=422)

    @app.middleware("http")  # added last, so outermost: it also sees the trusted-host check's refusals
    async def accounted(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Every refused or failed API call is counted on /metrics and logged with its method, path, status and
        reason, so bad input shows beyond the caller's own reply; never the token or the Authorization header.
        A fault in a handler is answered with a JSON 500 and logged with its traceback, not a dropped call."""
        fault: str | None = None
        try:
            response = await call_next(request)
        except Exception as error:  # noqa: BLE001 - any fault: answered, counted and logged with its context
            request.state.why, fault = repr(error), scrubbed(traceback.format_exc(), None)
            response = JSONResponse({"detail": "the dashboard failed on this request; its log has why"},
                                    status_code=500)
        status = response.status_code
        if status >= 400:
            reason = status_reason(status)
            (rejected if status < 500 else failed).labels(metrics.service, reason).inc()
            log.log("WARNING" if status < 500 else "ERROR", "api_call_rejected" if status < 500 else "api_call_failed",
                    method=request.method, path=scrubbed(request.url.path), status=status, reason=reason,
                    detail=scrubbed(getattr(request.state, "why", "")),
                    client=request.client.host if request.client else None,
                    **({"traceback": fault} if fault else {}))
        return response

    views = APIRouter(prefix="/api", dependencies=[Depends(viewer_token)])

    def answered(outcome: tuple[bool, str]) -> dict:
        """A risk guard control's reply; 503 if the guard did not answer (the change waits for its start)."""
        done, message = outcome
        if not done:
            raise HTTPException(status_code=503, detail=message)
        return {"ok": True, "message": message}

    def who(request: Request) -> str:
        """How a control is recorded: from the dashboard, and the address it came from."""
        return f"dashboard ({request.client.host if request.client else '?'})"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="Meshtrader API",
                                   swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
                                   swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True, "redis": await asyncio.to_thread(hot.ping)}

    @views.get("/state")
    async def state() -> dict:
        return await asyncio.to_thread(mesh_state, settings, hot, True, 20)

    @views.get("/positions")
    async def positions() -> dict:
        """Every open position with unrealized P&L at the last price (exact strings), as the executor last
        published its account."""
        return {"positions": open_positions(await asyncio.to_thread(hot.get, "account") or {})}

    @views.get("/risk")
    async def risk(n: int = Query(20, ge=1, le=1000, description="the latest n refusals")) -> dict:
        """The trading state and why, the kill switch, the pause, each limit's use and value, deactivated
        strategies, and the latest refusals with rule and reason."""
        return await asyncio.to_thread(risk_view, settings, hot, n)

    @views.get("/services")
    async def services() -> dict:
        """Each service's message counters (in, out, decode errors, sequence gaps, from its /metrics), starts,
        restarts and last error (from its log)."""
        counters, history = await asyncio.gather(asyncio.to_thread(service_counters, settings),
                                                 asyncio.to_thread(service_history, settings, hot))
        return {name: {**history.get(name, {}), **counters.get(name, {})} for name in history.keys() | counters.keys()}

    @views.get("/logs")
    async def logs(service: str, level: str | None = Query(None, description="at least this level: INFO, WARNING, ERROR"),
                   contains: str | None = Query(None, description="text the line holds (any field)"),
                   trace_id: str | None = None, limit: int = Query(200, ge=1, le=2000)) -> dict:
        """A service's recent structured log lines, newest first, filtered (crash tracebacks always shown)."""
        try:
            return await asyncio.to_thread(service_logs, settings, service, level, contains, trace_id, limit)
        except UnknownService as error:
            raise HTTPException(status_code=404, detail=str(error)) from None
        except ValueError as error:
            raise HTTPException(status_code=422, detail=str(error)) from None

    @views.get("/controls")
    async def controls(n: int = Query(50, ge=1, le=1000)) -> dict:
        """Who used which control and when (kill switch, pause, limit changes, close all, validate), newest first."""
        return {"controls": await asyncio.to_thread(control_log, settings, n)}

    @views.get("/risk/limits", responses=UNANSWERED)
    async def limits() -> dict:
        """The risk limits in use, as the risk guard says (503 if it does not answer)."""
        values = await asyncio.to_thread(risk_limits, settings)
        if values is None:
            raise HTTPException(status_code=503, detail="the risk guard did not answer")
        return {"limits": values}

    def traded(symbol: str) -> str:
        if symbol not in settings.symbols:
            raise HTTPException(status_code=404, detail=f"{symbol} is not traded here: {', '.join(settings.symbols)}")
        return symbol

    @views.get("/candles")
    async def candles(symbol: str, n: int = Query(1440, ge=1, le=20_000, description="how many, latest last")) -> dict:
        """A symbol's latest candles (times in market seconds)."""
        return await asyncio.to_thread(recent_candles, settings, traded(symbol), n)

    @views.get("/trades")
    async def trades(symbol: str, since_et: int = Query(0, ge=0, le=MAX_MS, description="from this market time (ms) on")) -> dict:
        """A symbol's trades, oldest first, money as exact strings."""
        return await asyncio.to_thread(symbol_trades, settings, traded(symbol), since_et)

    @views.get("/equity")
    async def equity(since_et: int = Query(0, ge=0, le=MAX_MS, description="from this market time (ms) on")) -> dict:
        """The portfolio's and each strategy's equity over market time, every 15 market minutes (exact strings)."""
        return await asyncio.to_thread(equity_curves, settings, since_et)

    @views.get("/overlays")
    async def overlays(symbol: str, strategy: str,
                       n: int = Query(1440, ge=1, le=20_000, description="candles, as the chart's")) -> dict:
        """A strategy's price features (averages, bands, channels; a seller-exhaustion position's stop,
        Fibonacci levels and target) over a symbol's latest `n` candles, replayed with the parameters its
        worker uses: the lines to draw on the chart."""
        if strategy not in settings.strategies:
            raise HTTPException(status_code=404, detail=f"{strategy} is not running here: {', '.join(settings.strategies)}")
        return await asyncio.to_thread(strategy_overlays, settings, traded(symbol), strategy, n)

    @views.get("/features")
    async def features() -> dict:
        """Each strategy's live indicator values per symbol (the inputs of its decisions), as its worker last
        published them, and which of them are prices."""
        return await asyncio.to_thread(live_features, hot, settings)

    @views.get("/strategies")
    async def strategies() -> dict:
        """Each strategy's trades, win rate, Sharpe, drawdown, allocation over time, parameters in use and
        when they were adopted, and its latest validation backtest beside live over the same window."""
        return await asyncio.to_thread(strategy_insights, settings)

    @views.get("/forks")
    async def forks(n: int = Query(200, ge=1, le=5000, description="the newest n forks")) -> dict:
        """The forks' lifecycle (created, destroyed, purpose, requester, what each produced) and counts and
        time per purpose."""
        return await asyncio.to_thread(fork_timeline, settings, n)

    @views.get("/regimes")
    async def regimes(n: int = Query(500, ge=1, le=10_000, description="the latest n regime changes")) -> dict:
        """The market regime's history, and per symbol its regime and gauges of the latest reading with the
        classifier's thresholds."""
        live = await asyncio.to_thread(hot.get, "regime.symbols")
        return await asyncio.to_thread(regime_history, settings, n, live)

    @views.get("/narratives")
    async def narrated(n: int = Query(100, ge=1, le=5000), kind: str | None = None) -> dict:
        """The narrator's highlights, newest first (of one kind if given: first_trade, big_win, ...)."""
        return {"narratives": await asyncio.to_thread(narratives, settings, n, kind)}

    @views.post("/ask")
    async def ask(body: Question) -> dict:
        """A question answered from the store's records and the documentation, each fact cited (`facts`, numbered
        as the answer cites them); with MESH_LLM_URL a language model writes the answer from those facts alone.
        It reads: a question asking for an action gets the command to run (`command`)."""
        try:
            return (await asyncio.to_thread(assistant.ask, body.question)).as_dict()
        except QuestionError as error:
            raise HTTPException(status_code=422, detail=str(error)) from None

    @app.post("/api/kill-switch", dependencies=control, responses=UNANSWERED)
    async def kill_switch(body: KillSwitch, request: Request) -> dict:
        """Halt every order (HALTED), or release."""
        return answered(await asyncio.to_thread(set_kill_switch, settings, body.on, who(request)))

    @app.post("/api/pause", dependencies=control, responses=UNANSWERED)
    async def pause(body: Pause, request: Request) -> dict:
        """Pause (only exposure-reducing orders go through: REDUCING) or resume trading."""
        return answered(await asyncio.to_thread(set_paused, settings, body.on, who(request)))

    @app.post("/api/risk/limits", dependencies=control, responses=UNANSWERED)
    async def change_limit(body: LimitChange, request: Request) -> dict:
        """Change one risk limit at run time; the risk guard checks it (400 with the reason if it is wrong),
        applies it, keeps it across restarts and records who changed it."""
        if settings.mode == "live":
            current = await asyncio.to_thread(risk_limits, settings)
            if current is None:
                raise HTTPException(status_code=503, detail="the risk guard did not answer")
            if loosens(body.value, current.get(body.name)):
                raise HTTPException(status_code=403, detail=f"trading live, the dashboard may only tighten a limit "
                                    f"(lower {body.name} below {current[body.name]}); loosen it with "
                                    f"`mesh limit {body.name} {body.value}` on the mesh's host")
        outcome = await asyncio.to_thread(set_risk_limit, settings, body.name, body.value, who(request))
        if outcome.status != "applied":
            raise HTTPException(status_code=400 if outcome.status == "refused" else 503, detail=outcome.message)
        return {"ok": True, "message": outcome.message, "limits": outcome.limit_values}

    @app.post("/api/risk/reset", dependencies=control, responses=UNANSWERED)
    async def reset(body: RiskReset, request: Request) -> dict:
        """Reset what a loss limit measures from, at the equity now (400 with the reason when there is nothing
        to reset). It loosens the risk guard's hold: trading live, it is made on the mesh's host only."""
        if settings.mode == "live":
            command = {v: k for k, v in RESETS.items()}[body.what]
            raise HTTPException(status_code=403, detail=f"trading live, the dashboard may not loosen a loss limit: "
                                f"run `mesh {command}` on the mesh's host")
        outcome = await asyncio.to_thread(reset_risk, settings, body.what, who(request), body.strategy, body.reason)
        if outcome.status != "applied":
            raise HTTPException(status_code=400 if outcome.status == "refused" else 503, detail=outcome.message)
        return {"ok": True, "message": outcome.message}

    @app.post("/api/close-all", dependencies=control, responses=UNANSWERED)
    async def close_all(body: CloseAllBody, request: Request) -> dict:
        if not body.confirm:
            raise HTTPException(status_code=400, detail='closing every position needs {"confirm": true}')
        message = await asyncio.to_thread(close_all_positions, settings, who(request), body.reason)
        if message is None:
            raise HTTPException(status_code=503, detail="the executor did not answer")
        return {"ok": True, "message": message}

    @app.post("/api/validate", dependencies=control, responses=UNANSWERED)
    async def validate(body: Validate, request: Request) -> dict:
        message = await asyncio.to_thread(request_validation, settings, "asked from the dashboard", body.optimize,
                                          who(request))
        if message is None:
            raise HTTPException(status_code=503, detail="the allocator did not answer")
        return {"ok": True, "message": message}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws")
    async def events(page: WebSocket, epoch: str = "", after: int = -1) -> None:
        """The live stream (see dashboard/stream.py): a snapshot stamped with a sequence number, or the missed
        events of a page resuming (`epoch`, `after`: the last number it saw), then every event, numbered."""
        await page.accept()
        origin = page.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != page.headers.get("host"):
            await page.close(code=4403, reason="the stream is for the dashboard's own page, not other sites")
            return
        given = page.query_params.get("token", "")
        if not loopback and not secrets.compare_digest(given.encode(), token.encode()):
            await page.close(code=4401, reason="the dashboard token is needed: /ws?token=<token>")
            return
        queue: asyncio.Queue = asyncio.Queue()
        resumed = stream.join(queue, epoch, after)
        try:
            if resumed is None:
                seq = stream.seq
                snapshot = await asyncio.to_thread(mesh_state, settings, hot, True, 20)
                await page.send_text(json.dumps({"type": "snapshot", "epoch": stream.epoch, "seq": seq,
                                                   "state": snapshot}, default=str))
            else:
                await page.send_text(json.dumps({"type": "resume", "epoch": stream.epoch, "seq": resumed}))
            while (text := await queue.get()) is not LAGGING:
                await page.send_text(text)
            await page.close(code=4000, reason="fell behind: reconnect to resume")
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            stream.leave(queue)

    app.include_router(views)
    return app
