"""The operators' controls on a running mesh: pause and resume, a risk limit changed at run time, each recorded
with who and when, kept across a restart of the risk guard, and the restart itself counted."""
from __future__ import annotations

import time
from decimal import Decimal

import zmq
from conftest import wait_for

from meshtrader.bus import ReqClient
from meshtrader.ops.cli import set_risk_limit
from meshtrader.ops.logs import control_log, service_history
from meshtrader.persistence.hotstate import HotState
from meshtrader.runtime.log import Logger
from meshtrader.wire.messages import Approval, ApproveOrder, RiskReplies, RiskStatus, RiskStatusReply


def test_pause_and_a_limit_change_are_recorded_and_survive_a_risk_guard_restart(mesh):
    hot = HotState(mesh.settings.effective_redis_url, mesh.settings.redis_prefix)
    ctx = zmq.Context()
    client = ReqClient(ctx, mesh.settings.endpoint("risk.rep"), RiskReplies, 2000, 3, Logger("test", "ERROR"))

    def risk_status() -> RiskStatusReply:
        status = client.request(RiskStatus())
        assert isinstance(status, RiskStatusReply), status
        return status

    try:
        state = wait_for(lambda: (s := mesh.status())["event_time"] and s["equity"] and s, 60, "an account snapshot")
        # the mesh's own numbers, so the requests below move neither the day's baseline nor a peak
        order = dict(strategy="momentum", symbol="BTCUSDT", qty=Decimal("0.01"), price=Decimal("100000.0"),
                     strategy_equity=Decimal("50000"), strategy_open_positions=0,
                     portfolio_equity=Decimal(state["equity"]), portfolio_exposure=Decimal(0),
                     event_time=state["event_time"])

        paused = mesh.cli("pause")
        assert "trading paused" in paused.stdout and "REDUCING" in paused.stdout
        entry = client.request(ApproveOrder(request_id="c-1", side="buy", reduces=False, opens_position=True, **order))
        assert isinstance(entry, Approval) and not entry.approved and entry.rule == "paused"
        assert "paused by cli" in entry.reason and entry.trading_state == "REDUCING"
        exit_ = client.request(ApproveOrder(request_id="c-2", side="sell", reduces=True, opens_position=False, **order))
        assert isinstance(exit_, Approval) and exit_.approved and exit_.rule == "reduce_only"

        changed = mesh.cli("limit", "daily_loss_pct", "0.03")
        assert "daily_loss_pct 0.05 -> 0.03" in changed.stdout
        refused = mesh.cli("limit", "daily_loss_pct", "3%", check=False)
        assert refused.returncode == 2 and "write 0.03 for 3%" in refused.stderr
        outcome = set_risk_limit(mesh.settings, "max_trades_per_day", "1.5", "test")  # as the dashboard asks
        assert outcome.status == "refused" and "not a whole number" in outcome.message
        assert outcome.limit_values["max_trades_per_day"] == "1000"
        assert "0.03" in next(text for text in mesh.cli("limit").stdout.splitlines() if "daily_loss_pct" in text)

        recorded = {c["control"]: c for c in control_log(mesh.settings, 10)}
        assert recorded["limit_change"]["by"].startswith("cli") and recorded["pause"]["by"].startswith("cli")
        assert recorded["limit_change"]["detail"].startswith("daily_loss_pct 0.05 -> 0.03 by cli")
        assert recorded["limit_change"]["event_time"] and recorded["limit_change"]["at"] > time.time() - 120
        assert "max_trades_per_day" not in str(recorded)  # a refused change changed nothing: no record

        starts = service_history(mesh.settings, hot)["risk"]["starts"]
        old_pid = mesh.pid("risk")
        assert "started" in mesh.ctl("restart", "risk")
        wait_for(lambda: mesh.pid("risk") not in (0, old_pid) and mesh.running("risk"), 30, "the risk guard back")
        status = risk_status()
        assert status.paused and status.trading_state == "REDUCING" and "paused by cli" in status.reason
        assert status.limit_values["daily_loss_pct"] == "0.03"
        wait_for(lambda: (hot.get("risk") or {}).get("limit_values", {}).get("daily_loss_pct") == "0.03", 10,
                 "the limits in use in hot state")
        history = service_history(mesh.settings, hot)["risk"]
        assert history["starts"] == starts + 1 and history["restarts"] == starts
        assert history["last_start"] > time.time() - 60

        assert "not paused" in mesh.cli("resume").stdout
        assert not risk_status().paused
    finally:
        client.close()
        ctx.term()
        hot.close()
