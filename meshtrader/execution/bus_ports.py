"""The execution engine's two ports onto the mesh's bus, so the executor service only wires them:
risk approval asked of the risk guard over REQ/REP, and the engine's events published over PUB
(with the metrics they feed). A backtest plugs the risk book and a list into the same two ports."""
from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from meshtrader.bus import Publisher, ReqClient
from meshtrader.domain.orders import TERMINAL
from meshtrader.runtime.metrics import ServiceMetrics
from meshtrader.wire.messages import Approval, ApproveOrder, Fill, OrderUpdate, VenueStatus


class RiskGuardApprover:
    """The risk guard's verdict on an order, or why there is none: no answer fails closed."""

    def __init__(self, risk: ReqClient) -> None:
        self.risk = risk

    def __call__(self, request: ApproveOrder) -> Approval | str:
        reply = self.risk.request(request)
        if isinstance(reply, Approval):
            return reply
        if reply is None:
            return f"risk guard unavailable: no answer in {self.risk.retries} x {self.risk.timeout_ms} ms"
        return f"risk guard error: {reply.error}"


class BusEvents:
    """ExecutionEvents on the bus: fills, order updates and venue status, once the journal has them."""

    def __init__(self, pub: Publisher, metrics: ServiceMetrics, publish_account: Callable[[], None]) -> None:
        """`publish_account`: publishes the account snapshot now (a margin call must reach the risk guard
        before the next second's)."""
        self.pub, self.publish_account = pub, publish_account
        self.service = metrics.service
        self.tick_to_fill = metrics.histogram("mesh_tick_to_fill_seconds", "tick sent to fill published").labels(
            self.service)
        self.orders_total = metrics.counter("mesh_orders_total", "orders by final status", ("status",))
        self.trades_total = metrics.counter("mesh_trades_total", "fills booked, by strategy and side",
                                            ("strategy", "side"))

    def fill(self, fill: Fill) -> None:
        self.pub.publish(b"fill", fill)
        self.trades_total.labels(self.service, fill.strategy, fill.side).inc()
        if fill.origin_ns:
            self.tick_to_fill.observe((fill.st - fill.origin_ns) / 1e9)

    def order(self, update: OrderUpdate) -> None:
        self.pub.publish(b"order", update)
        if update.status in TERMINAL:
            self.orders_total.labels(self.service, update.status).inc()

    def venue_status(self, status: VenueStatus) -> None:
        self.pub.publish(b"venue.status", status)

    def margin_call(self, strategy: str, symbol: str, ratio: Decimal) -> None:
        self.publish_account()
