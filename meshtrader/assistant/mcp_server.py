"""`mesh mcp`: a Model Context Protocol server (the official SDK) over stdio, or streamable HTTP on loopback.

AI clients read the mesh through it (state, positions, trades, strategies, forks, regimes, risk, narratives, the
documentation, an order's story, the assistant's cited answers) and, only with the dashboard token, use the
controls that exist: the kill switch, close all, validate. Inputs are validated by their types and bounds; a
bad one gets a clear error, never a crash."""
from __future__ import annotations

import asyncio
import ipaddress
import secrets
from collections.abc import Callable
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from meshtrader.assistant import records
from meshtrader.assistant.answer import Assistant, QuestionError
from meshtrader.ops.cli import close_all_positions, request_validation, set_kill_switch, set_paused
from meshtrader.ops.cli import reset_risk as ask_risk_reset
from meshtrader.ops.insights import fork_timeline, narratives, regime_history, strategy_insights
from meshtrader.ops.status import mesh_state, open_positions, reading, risk_view
from meshtrader.persistence import views
from meshtrader.persistence.hotstate import HotState
from meshtrader.runtime.config import Settings, credential
from meshtrader.wire.messages import ResetKind

Count = Annotated[int, Field(ge=1, le=1000, description="how many, the latest first")]
Token = Annotated[str, Field(min_length=1, max_length=200, description="the dashboard token (mesh up printed it; "
                                                                        "$MESH_HOME/dashboard.token)")]
CALLER = "mcp"  # how the controls record who used them


class ControlRefused(ToolError):
    """A control asked for without the dashboard token, or with a wrong one."""


def known_token(settings: Settings) -> str | None:
    """The dashboard token if the mesh has one (MESH_DASHBOARD_TOKEN, or the file `mesh up` made); never made here."""
    if token := credential("MESH_DASHBOARD_TOKEN"):
        return token
    path = settings.home_dir / "dashboard.token"
    return path.read_text().strip() if path.is_file() else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_server(settings: Settings) -> MCPServer:
    """The MCP server of one mesh: its tools read the store and the hot state the settings locate."""
    hot = HotState(settings.effective_redis_url, settings.redis_prefix)
    assistant = Assistant(settings, risk_state=lambda: hot.get("risk") or {})
    server = MCPServer("meshtrader", instructions=(
        "Meshtrader, a crypto trading mesh. Read its state, positions, trades, strategies, forks, market regimes, "
        "risk and narratives; search its documentation; explain an order; ask a question answered with citations. "
        "The controls (kill_switch, pause, close_all, validate) need the dashboard token."))

    async def off_loop(function: Callable[..., Any], *args: Any) -> Any:
        """The store and Redis are read in a thread: the server keeps answering meanwhile."""
        return await asyncio.to_thread(function, *args)

    def check(token: str) -> None:
        expected = known_token(settings)
        if expected is None:
            raise ControlRefused("this mesh has no dashboard token yet (mesh up makes one): controls are refused")
        if not secrets.compare_digest(token.encode(), expected.encode()):
            raise ControlRefused("wrong dashboard token: controls are refused")

    @server.tool()
    async def state() -> dict:
        """The mesh at a glance: services, trading state, equity, positions, the latest trades and highlights."""
        return await off_loop(mesh_state, settings, hot, False, 10)

    @server.tool()
    async def positions() -> dict:
        """Every open position with unrealized P&L at the last price (exact decimal strings)."""
        return {"positions": open_positions(await off_loop(hot.get, "account") or {})}

    @server.tool()
    async def trades(n: Count = 20) -> dict:
        """The latest fills, newest first (money as exact decimal strings)."""
        def latest() -> list[dict]:
            with reading(settings) as store:
                return views.recent_trades(store, n) if store else []
        return {"trades": await off_loop(latest)}

    @server.tool()
    async def strategies() -> dict:
        """Each strategy's trades, P&L, fees, win rate, Sharpe, drawdown, allocation history, parameters and
        latest validation against live."""
        return await off_loop(strategy_insights, settings)

    @server.tool()
    async def forks(n: Count = 50) -> dict:
        """The forks (point-in-time copies of the store): purpose, life, what each produced."""
        return await off_loop(fork_timeline, settings, n)

    @server.tool()
    async def regimes(n: Count = 50) -> dict:
        """The market regime's confirmed changes with the detector's readings."""
        return await off_loop(regime_history, settings, n)

    @server.tool()
    async def risk(n: Count = 20) -> dict:
        """The trading state and why, the kill switch, each limit's use, and the latest refusals."""
        return await off_loop(risk_view, settings, hot, n)

    @server.tool(name="narratives")
    async def narrated(n: Count = 20) -> dict:
        """The narrator's highlights, newest first."""
        return {"narratives": await off_loop(narratives, settings, n, None)}

    @server.tool()
    async def search_docs(query: Annotated[str, Field(min_length=1, max_length=500)],
                          limit: Annotated[int, Field(ge=1, le=20)] = 5) -> dict:
        """The documentation's passages that best answer a query (BM25 over the README and knowledge/), each with
        its address (path#anchor)."""
        facts = await off_loop(assistant.search_docs, query, limit)
        return {"passages": [{"source": f.source, "text": f.text} for f in facts]}

    @server.tool()
    async def explain_order(order_id: Annotated[str, Field(min_length=3, max_length=120,
                                                          description="an order id (mt...) or a signal id")]) -> dict:
        """Why an order exists and what became of it: its signal, the risk guard's verdict, its states, its fills;
        each fact with the record it comes from."""
        def explained() -> list[records.Fact]:
            with reading(settings) as store:
                if store is None:
                    return [records.Fact("store", "the mesh has no store yet")]
                return records.explain_order(store, order_id)
        return {"facts": [{"source": f.source, "text": f.text} for f in await off_loop(explained)]}

    @server.tool()
    async def ask(question: Annotated[str, Field(min_length=1, max_length=2000)]) -> dict:
        """A question about the mesh answered from its records and documentation, every fact cited."""
        try:
            return (await off_loop(assistant.ask, question)).as_dict()
        except QuestionError as error:
            raise ToolError(str(error)) from None

    @server.tool()
    async def kill_switch(on: bool, token: Token) -> dict:
        """Control (needs the dashboard token): halt every order (on) or release (off)."""
        check(token)
        done, message = await off_loop(set_kill_switch, settings, on, CALLER)
        return {"ok": done, "message": message}

    @server.tool()
    async def pause(on: bool, token: Token) -> dict:
        """Control (needs the dashboard token): pause trading (on: only exposure-reducing orders pass) or resume."""
        check(token)
        done, message = await off_loop(set_paused, settings, on, CALLER)
        return {"ok": done, "message": message}

    @server.tool()
    async def close_all(confirm: bool, token: Token,
                        reason: Annotated[str, Field(max_length=200)] = "") -> dict:
        """Control (needs the dashboard token): sell (and cover) every open position at market now. Needs
        confirm=true."""
        check(token)
        if not confirm:
            raise ToolError("closing every position needs confirm=true")
        message = await off_loop(close_all_positions, settings, CALLER, reason or "asked over MCP")
        if message is None:
            raise ToolError("the executor did not answer (is the mesh up?)")
        return {"ok": True, "message": message}

    @server.tool()
    async def validate(token: Token, optimize: bool = False) -> dict:
        """Control (needs the dashboard token): validate the strategies on a fork now (the allocator reweights);
        with optimize, also optimise the next strategy's parameters."""
        check(token)
        message = await off_loop(request_validation, settings, "asked over MCP", optimize, CALLER)
        if message is None:
            raise ToolError("the allocator did not answer (is the mesh up?)")
        return {"ok": True, "message": message}

    @server.tool()
    async def reset_risk(what: ResetKind, token: Token,
                         strategy: Annotated[str, Field(max_length=64)] = "",
                         reason: Annotated[str, Field(max_length=200)] = "") -> dict:
        """Control (needs the dashboard token; paper trading only): measure a loss limit from the equity now:
        peak (the portfolio's drawdown), daily_loss (lift today's daily halt), strategy (reactivate `strategy`)."""
        check(token)
        if settings.mode == "live":
            raise ToolError("trading live, a loss limit is loosened on the mesh's host only (mesh reset-peak, "
                            "mesh lift-daily-halt, mesh reactivate)")
        outcome = await off_loop(ask_risk_reset, settings, what, CALLER, strategy, reason or "asked over MCP")
        if outcome.status != "applied":
            raise ToolError(outcome.message)
        return {"ok": True, "message": outcome.message}

    return server


def serve(settings: Settings, transport: str, host: str, port: int) -> None:
    """Run the server until stdin closes (stdio) or it is stopped (HTTP, on a loopback address only)."""
    if transport != "stdio" and not is_loopback(host):
        raise ValueError(f"the MCP server listens on loopback only (127.0.0.1, ::1, localhost), not {host}")
    server = build_server(settings)
    if transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=host, port=port)
