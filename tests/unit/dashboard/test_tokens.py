"""Who may read and who may steer: views are open on loopback and need the token when the dashboard is
reachable from other machines; controls always need it. In-process, the mesh absent (as when it is down)."""
from __future__ import annotations

import pytest
from fastapi import WebSocketDisconnect
from fastapi.testclient import TestClient

from meshtrader.dashboard.app import create_app, listens_on_loopback
from meshtrader.runtime.config import dashboard_token, load_settings


def client(tmp_path, host: str) -> tuple[TestClient, str]:
    settings = load_settings(home=tmp_path, host=host, log_level="ERROR")
    return TestClient(create_app(settings), base_url="http://127.0.0.1"), dashboard_token(settings)[0]


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                                ("0.0.0.0", False), ("10.1.2.3", False)])
def test_loopback_is_told_apart(host, loopback):
    assert listens_on_loopback(host) is loopback


def test_on_loopback_views_are_open_and_controls_need_the_token(tmp_path):
    page, token = client(tmp_path, "127.0.0.1")
    state = page.get("/api/state")
    assert state.status_code == 200 and state.json()["mesh"]["up"] is False  # the mesh is down, and it says so
    assert page.get("/api/narratives").json() == {"narratives": []}
    assert page.post("/api/pause", json={"on": True}).status_code == 401
    assert page.post("/api/pause", json={"on": True}, headers={"Authorization": "Bearer nope"}).status_code == 403
    answer = page.post("/api/pause", json={"on": True}, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 503 and "did not answer" in answer.json()["detail"]  # the risk guard is down


def test_other_sites_cannot_read_it(tmp_path):
    page, _ = client(tmp_path, "127.0.0.1")
    assert page.get("/api/state", headers={"Host": "evil.example:7100"}).status_code == 400  # DNS rebinding
    with page.websocket_connect("ws://127.0.0.1/ws", headers={"Origin": "http://evil.example"}) as stream, \
            pytest.raises(WebSocketDisconnect) as closed:
        stream.receive_text()
    assert closed.value.code == 4403


def test_reachable_from_other_machines_views_need_the_token_too(tmp_path):
    page, token = client(tmp_path, "0.0.0.0")
    refused = page.get("/api/state")
    assert refused.status_code == 401 and "reachable from other machines" in refused.json()["detail"]
    assert page.get("/api/state", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert page.get("/api/state", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert page.get("/").status_code == 200 and page.get("/metrics").status_code == 200  # the page asks for it
    with page.websocket_connect("/ws") as stream, pytest.raises(WebSocketDisconnect) as closed:
        stream.receive_text()
    assert closed.value.code == 4401
