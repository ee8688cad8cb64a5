"""Alerts through Apprise, to local HTTP servers (a json:// URL, the webhook, Telegram's Bot API):
rate-limited and deduplicated, and no URL or token in any log, whatever Apprise or a server says."""
from __future__ import annotations

import io
import json
import logging

from support.alert_servers import RefusingServer

from meshtrader.runtime.alerts import Alert, Alerter, RateLimit, channels
from meshtrader.runtime.config import load_settings
from meshtrader.runtime.log import Logger

BOT_TOKEN = "123456:planted-unit-bot-token"
PASSWORD = "planted-unit-url-password"


def logged(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def received(sink, prefix: str) -> list[tuple[str, dict]]:
    return [(path, body) for path, body in sink.received if path.startswith(prefix)]


def test_alerts_are_rate_limited_and_deduplicated():
    limit = RateLimit(per_minute=3, repeat_s=300)
    allowed = [limit.allow(Alert("warning", f"t{i}", "", "s"), now=i) for i in range(5)]
    assert allowed == [True, True, True, False, False]
    assert limit.allow(Alert("warning", "t9", "", "s"), now=61)  # the window moved on
    assert not limit.allow(Alert("warning", "t9", "", "s"), now=200)  # the same title again: held back


def test_an_alert_reaches_a_json_url_the_webhook_and_telegram_through_apprise(tmp_path, alert_sink, monkeypatch):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
    host = alert_sink.url.removeprefix("http://")
    settings = load_settings(home=tmp_path, alert_urls=f"json://alerts:{PASSWORD}@{host}/a/apprise",
                             alert_webhook_url=f"{alert_sink.url}/a/hook?token={PASSWORD}", telegram_chat_id="42",
                             telegram_api_url=f"{alert_sink.url}/a")
    stream = io.StringIO()
    alerter = Alerter.from_settings(settings, Logger("narrator", stream=stream), "narrator")
    assert [channel.kind for channel in alerter.channels] == ["json", "json", "tgram"]
    assert alerter.alert("critical", "Trading halted", "the kill switch <is> on", event_time=1234)
    alerter.close()  # its thread has sent the queue's alerts
    sent = dict(received(alert_sink, "/a/"))
    assert sent["/a/apprise"] == {"version": "1.0", "title": "[CRITICAL] Trading halted", "type": "failure",
                                  "message": "the kill switch <is> on", "attachments": []}  # Apprise's JSON body
    assert sent[f"/a/hook?token={PASSWORD}"] == {  # the webhook's body, and its own query string, as they were
        "level": "critical", "title": "Trading halted", "body": "the kill switch <is> on", "service": "narrator",
        "event_time": 1234}
    telegram = sent[f"/a/bot{BOT_TOKEN}/sendMessage"]
    assert telegram["chat_id"] == 42 and telegram["parse_mode"] == "HTML"
    assert telegram["text"] == "<b>[CRITICAL] Trading halted</b>\r\nthe kill switch &lt;is&gt; on"
    assert stream.getvalue() == ""  # all delivered: nothing to say


def test_the_rate_limit_and_deduplication_hold_what_is_sent(tmp_path, alert_sink):
    settings = load_settings(home=tmp_path, alert_webhook_url=f"{alert_sink.url}/b/hook")
    log = Logger("narrator", stream=io.StringIO())
    alerter = Alerter(channels(settings, "narrator", log), per_minute=2, log=log, service="narrator")
    queued = [alerter.alert("warning", title, "body") for title in ("feed stale", "feed stale", "halted", "deactivated")]
    assert queued == [True, False, True, False] and alerter.suppressed == 2  # a repeat, then the rate limit
    alerter.close()
    assert [body["title"] for _, body in received(alert_sink, "/b/")] == ["feed stale", "halted"]


def test_other_services_apprise_urls_are_accepted(tmp_path):
    """Parsed into channels only: nothing is sent to the internet."""
    urls = ("discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js,"
            "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general,mailto://user:pass@example.com")
    stream = io.StringIO()
    made = channels(load_settings(home=tmp_path, alert_urls=urls), "narrator", Logger("narrator", stream=stream))
    assert [channel.kind for channel in made] == ["discord", "slack", "mailto"] and stream.getvalue() == ""


def test_refused_urls_and_failed_sends_are_logged_by_kind_with_every_secret_masked(tmp_path, monkeypatch, capfd):
    refusing = RefusingServer()  # answers 400, quoting the path, which holds the bot token
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
    urls = f"json://alerts:{PASSWORD}@127.0.0.1:1/refused,slack://{PASSWORD},{PASSWORD}"
    settings = load_settings(home=tmp_path, alert_urls=urls, telegram_chat_id="42", telegram_api_url=refusing.url)
    stream, python_logs = io.StringIO(), io.StringIO()
    root, everything_python_logs = logging.getLogger(), logging.StreamHandler(python_logs)
    root_level = root.level
    root.addHandler(everything_python_logs)  # as if the service wrote all of Python's logging, down to DEBUG
    root.setLevel(logging.DEBUG)
    try:
        alerter = Alerter.from_settings(settings, Logger("narrator", stream=stream), "narrator")
        assert [channel.kind for channel in alerter.channels] == ["json", "tgram"]
        assert alerter.alert("critical", "Trading halted", "the kill switch is on")
        alerter.close()
    finally:
        root.removeHandler(everything_python_logs)
        root.setLevel(root_level)
        refusing.close()
    events = logged(stream)
    refused = {e["channel"]: e["reason"] for e in events if e["event"] == "alert_channel_refused"}
    assert set(refused) == {"slack", "unknown"} and "invalid Slack" in refused["slack"]
    failed = {e["channel"]: e["reason"] for e in events if e["event"] == "alert_failed"}
    assert set(failed) == {"json", "tgram"} and "Connection error" in failed["json"]
    assert "Bad Request: /bot***" in failed["tgram"]  # what the server said, its quote of the token masked
    captured = capfd.readouterr()
    everything = stream.getvalue() + python_logs.getvalue() + captured.out + captured.err
    for secret in (PASSWORD, BOT_TOKEN, BOT_TOKEN.partition(":")[2]):
        assert secret not in everything
