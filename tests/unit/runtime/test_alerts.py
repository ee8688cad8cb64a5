"""Alerts: rate limits and deduplication."""
from __future__ import annotations


def test_alerts_are_rate_limited_and_deduplicated():
    from meshtrader.runtime.alerts import Alert, RateLimit

    limit = RateLimit(per_minute=3, repeat_s=300)
    allowed = [limit.allow(Alert("warning", f"t{i}", "", "s"), now=i) for i in range(5)]
    assert allowed == [True, True, True, False, False]
    assert limit.allow(Alert("warning", "t9", "", "s"), now=61)  # the window moved on
    assert not limit.allow(Alert("warning", "t9", "", "s"), now=200)  # the same title again: held back
