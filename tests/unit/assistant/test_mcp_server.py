"""`mesh mcp` driven by the MCP SDK's own client: over stdio (the server as a child process) and streamable HTTP on
loopback. The read tools answer from the store and the docs; inputs are validated with clear errors; the controls
are refused without the dashboard token (a mesh running them with the token: tests/mesh/test_operations.py)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx
import pytest
from conftest import wait_for
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from support import assistant_records
from support.assistant_records import REFUSED_ORDER
from support.mcp_results import error_text, payload

from meshtrader.assistant.mcp_server import serve
from meshtrader.runtime.config import REPO_ROOT, load_settings
from tools.localmesh import free_port_base

TOKEN = "planted-dashboard-token-0004"
READS = {"state", "positions", "trades", "strategies", "forks", "regimes", "risk", "narratives", "search_docs",
         "explain_order", "ask"}
CONTROLS = {"kill_switch", "pause", "close_all", "validate", "reset_risk"}
KNOWN = assistant_records.Known()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("mcp")
    assistant_records.build(load_settings(home=home).db_path)
    (home / "dashboard.token").write_text(TOKEN)
    return home


def environment(home) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MESH_")}, "MESH_HOME": str(home),
            "MESH_PORT_BASE": str(free_port_base()), "MESH_REDIS_URL": "redis://127.0.0.1:1/0"}


async def read_and_refuse(client: Client) -> None:
    assert {t.name for t in (await client.list_tools()).tools} >= READS | CONTROLS
    explained = payload(await client.call_tool("explain_order", {"order_id": REFUSED_ORDER}))
    assert KNOWN.refusal in [f["source"] for f in explained["facts"]]
    answer = payload(await client.call_tool("ask", {"question": "What did the last validation decide and why?"}))
    assert {KNOWN.fork, KNOWN.reallocation} <= {f["source"] for f in answer["facts"]}
    passages = payload(await client.call_tool("search_docs", {"query": "MESH_VALIDATION_LOSS_PCT", "limit": 2}))
    assert passages["passages"][0]["source"] == "knowledge/config/settings.md#mesh_validation_loss_pct"
    assert [t["trade_id"] for t in payload(await client.call_tool("trades", {"n": 5}))["trades"]] == [
        f"{assistant_records.FILLED_ORDER}-1"]
    # bad input: a clear error, and the server goes on answering
    assert "n" in error_text(await client.call_tool("trades", {"n": 0}))
    assert "question" in error_text(await client.call_tool("ask", {"question": ""}))
    # controls: refused without the token, or with a wrong one; nothing is asked of the mesh
    assert "token" in error_text(await client.call_tool("kill_switch", {"on": True}))
    assert "wrong dashboard token" in error_text(await client.call_tool("kill_switch", {"on": True, "token": "nope"}))
    assert "wrong dashboard token" in error_text(await client.call_tool(
        "close_all", {"confirm": True, "token": "nope"}))
    assert "wrong dashboard token" in error_text(await client.call_tool("validate", {"token": "x" * 20}))
    assert "wrong dashboard token" in error_text(await client.call_tool("pause", {"on": True, "token": "nope"}))
    assert "wrong dashboard token" in error_text(await client.call_tool("reset_risk", {"what": "peak", "token": "x"}))
    assert "what" in error_text(await client.call_tool("reset_risk", {"what": "everything", "token": TOKEN}))
    assert (await client.call_tool("regimes", {"n": 3})).is_error is False


def test_over_stdio_the_sdk_client_reads_and_the_controls_need_the_token(home):
    server = StdioServerParameters(command=sys.executable, args=["-m", "meshtrader.assistant", "mcp"],
                                   env=environment(home), cwd=str(REPO_ROOT))

    async def session() -> None:
        async with Client(server) as client:
            await read_and_refuse(client)

    asyncio.run(session())


def test_over_http_on_loopback_only(home):
    env = environment(home)
    port = int(env["MESH_PORT_BASE"]) + 7
    with pytest.raises(ValueError, match="loopback only"):
        serve(load_settings(home=home), "http", "0.0.0.0", port)
    process = subprocess.Popen([sys.executable, "-m", "meshtrader.assistant", "mcp", "--http"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/mcp"

        def listening() -> bool:
            try:
                return httpx.get(url, timeout=1).status_code > 0
            except httpx.HTTPError:
                return False

        wait_for(listening, 30, "the MCP server listening")

        async def session() -> None:
            async with Client(url) as client:
                await read_and_refuse(client)

        asyncio.run(session())
    finally:
        process.terminate()
        process.wait(timeout=10)
