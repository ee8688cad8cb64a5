"""Alerts for warnings and worse (halts, the kill switch, incidents, disconnections, rejected live
orders), sent through Apprise to every configured channel (Telegram, Discord, Slack, email, webhooks...),
rate-limited, deduplicated, from a background thread.

A channel is an Apprise URL, and the URL carries its credentials, so channels come from the environment
or .env only: each URL of MESH_ALERT_URLS; MESH_ALERT_WEBHOOK_URL (Apprise's json://, keeping the
webhook's body); TELEGRAM_BOT_TOKEN with MESH_TELEGRAM_CHAT_ID (tgram://). Apprise's own log lines quote
URLs, tokens and what servers answer, so they are never written anywhere: a failed send is logged by
the channel's kind (its URL's scheme) and Apprise's reason, every piece of the URL masked in it.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import apprise
from apprise.plugins import url_to_dict

from meshtrader.runtime.config import credential
from meshtrader.runtime.redaction import mask, url_secrets

NOTIFY_TYPES = {"warning": apprise.NotifyType.WARNING, "critical": apprise.NotifyType.FAILURE}
# Apprise's JSON fields renamed or dropped (its ":" payload arguments): the webhook's body stays
# {"level", "title", "body", "service", "event_time"}
WEBHOOK_FIELDS = {"message": "body", "type": "", "version": "", "attachments": ""}
WEBHOOK_SCHEMES = {"http": "json", "https": "jsons"}
REASON_MAX_CHARS = 300
ASSET = apprise.AppriseAsset(async_mode=False)  # send on the alerts thread, where its log lines are held


class HeldLogs(logging.Handler):
    """Where Apprise's log lines go instead of any stream or file: they quote URLs, tokens and replies.
    The lines of the Apprise call under way are held for its failure reason (masked before use); the
    rest are dropped. One call at a time per process, so held lines are always that channel's own."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.turn = threading.Lock()
        self.lines: list[str] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.lines is not None:
            self.lines.append(record.getMessage())

    def handleError(self, record: logging.LogRecord) -> None:
        """Nothing to stderr: logging's report of a record it could not format quotes the record's arguments."""

    @contextmanager
    def holding(self) -> Iterator[list[str]]:
        with self.turn:
            self.lines = lines = []
            try:
                yield lines
            finally:
                self.lines = None


def held_logs(*names: str) -> HeldLogs:
    """A HeldLogs the named loggers write to, and nothing else: never to the root logger's handlers,
    whoever configures them, and their DEBUG lines (whole URLs, payloads) never even made."""
    held = HeldLogs()
    for name in names:
        logger = logging.getLogger(name)
        logger.addHandler(held)
        logger.propagate = False
        logger.setLevel(logging.WARNING)
    return held


HELD = held_logs("apprise", "urllib3")  # urllib3, under Apprise: its request lines hold a Telegram URL's token


@dataclass(frozen=True)
class Alert:
    level: str  # warning or critical
    title: str
    body: str
    service: str
    event_time: int = 0

    def heading(self) -> str:
        return f"[{self.level.upper()}] {self.title}"


class RateLimit:
    """At most `per_minute` alerts in any 60 s, and the same title not again within `repeat_s`."""

    def __init__(self, per_minute: int, repeat_s: float = 300.0) -> None:
        self.per_minute, self.repeat_s = per_minute, repeat_s
        self.sent: deque[float] = deque()
        self.last_title: dict[str, float] = {}

    def allow(self, alert: Alert, now: float) -> bool:
        while self.sent and now - self.sent[0] >= 60:
            self.sent.popleft()
        if len(self.sent) >= self.per_minute or now - self.last_title.get(alert.title, -1e18) < self.repeat_s:
            return False
        self.sent.append(now)
        self.last_title[alert.title] = now
        return True


class ChannelError(Exception):
    """A channel Apprise cannot use: `kind` and a `reason` with the URL's pieces masked."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind, self.reason = kind, reason


class Channel:
    """One place alerts go. `kind` (the URL's scheme) is all a log line ever says about it; `secrets`
    (every piece of its URL) are masked in whatever Apprise reports about it."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind, self.secrets = kind, url_secrets(url)

    def plugin_for(self, alert: Alert) -> Any:
        """The Apprise plugin that sends `alert` (None: Apprise refused it, its held lines say why)."""
        raise NotImplementedError

    def title(self, alert: Alert) -> str:
        return alert.heading()

    def send(self, alert: Alert) -> str | None:
        """Deliver `alert`: None when delivered, else why not."""
        with HELD.holding() as lines:
            plugin = self.plugin_for(alert)
            delivered = plugin is not None and apprise.Apprise(plugin, asset=ASSET).notify(
                body=alert.body, title=self.title(alert), notify_type=NOTIFY_TYPES[alert.level],
                body_format=apprise.NotifyFormat.TEXT)
        return None if delivered else self.reason(lines, "not delivered")

    def reason(self, lines: list[str], fallback: str) -> str:
        return mask(" ".join(lines) or fallback, self.secrets)[:REASON_MAX_CHARS]


class AppriseChannel(Channel):
    """Any Apprise URL (tgram://, discord://, slack://, mailto://, json://...), its plugin made once.
    Telegram's is pointed at MESH_TELEGRAM_API_URL: Apprise has no option for the Bot API's host (a
    local Bot API server, or the tests' stand-in), its Telegram plugin posting to its `notify_url`
    attribute + the token, so that attribute is set on the plugin."""

    def __init__(self, url: str, telegram_api_url: str) -> None:
        super().__init__(url.partition("://")[0] if "://" in url else "unknown", url)
        with HELD.holding() as lines:
            self.plugin = apprise.Apprise.instantiate(url, asset=ASSET)
        if self.plugin is None:
            raise ChannelError(self.kind, self.reason(lines, "not an Apprise URL"))
        if self.kind == "tgram":
            self.plugin.notify_url = f"{telegram_api_url.rstrip('/')}/bot"

    def plugin_for(self, alert: Alert) -> Any:
        return self.plugin


class Webhook(Channel):
    """MESH_ALERT_WEBHOOK_URL, sent by Apprise's JSON plugin (json://, jsons:// for https) with the body
    it always had: {"level", "title", "body", "service", "event_time"} (its query string stays its own).
    Level and event time are the alert's, so the plugin is made for each alert from the URL parsed once."""

    def __init__(self, url: str, service: str) -> None:
        parts = urlsplit(url)
        super().__init__(WEBHOOK_SCHEMES.get(parts.scheme, parts.scheme or "unknown"), url)
        if parts.scheme not in WEBHOOK_SCHEMES:
            raise ChannelError(self.kind, "MESH_ALERT_WEBHOOK_URL takes http:// or https://; other Apprise URLs "
                               "go in MESH_ALERT_URLS")
        with HELD.holding() as lines:
            parsed = url_to_dict(f"{self.kind}://{parts.netloc}{parts.path}")
        if parsed is None:
            raise ChannelError(self.kind, self.reason(lines, "not a webhook URL"))
        self.parsed = {**parsed, "params": dict(parse_qsl(parts.query, keep_blank_values=True)),
                       "payload": {**WEBHOOK_FIELDS, "service": service}}

    def plugin_for(self, alert: Alert) -> Any:
        fields = {"level": alert.level, "event_time": alert.event_time}
        return apprise.Apprise.instantiate({**self.parsed, "payload": {**self.parsed["payload"], **fields}},
                                           asset=ASSET)

    def title(self, alert: Alert) -> str:
        return alert.title  # the level is a field of its own


def channels(settings: Any, service: str, log: Any) -> list[Channel]:
    """Every channel the settings and the environment configure; one that Apprise refuses is logged (by
    kind and masked reason) and left out, so the others still alert."""
    api = settings.telegram_api_url
    wanted: list[Callable[[], Channel]] = [partial(AppriseChannel, url, api) for url in settings.alert_urls]
    if settings.alert_webhook_url:
        wanted.append(partial(Webhook, settings.alert_webhook_url, service))
    token = credential("TELEGRAM_BOT_TOKEN")
    if token and settings.telegram_chat_id:
        wanted.append(partial(AppriseChannel, f"tgram://{token}/{quote(settings.telegram_chat_id, safe='')}", api))
    made: list[Channel] = []
    for make in wanted:
        try:
            made.append(make())
        except ChannelError as error:
            log.warning("alert_channel_refused", channel=error.kind, reason=error.reason)
    return made


class Alerter:
    """Queues alerts and sends them from one background thread, so a slow or dead endpoint never
    stalls the service that raised them."""

    def __init__(self, channels: list[Channel], per_minute: int, log: Any, service: str) -> None:
        self.channels, self.log, self.service = channels, log, service
        self.limit = RateLimit(per_minute)
        self.queue: queue.Queue[Alert | None] = queue.Queue(maxsize=1000)
        self.suppressed = 0
        self.thread = threading.Thread(target=self._run, name="alerts", daemon=True) if channels else None
        if self.thread:
            self.thread.start()

    @classmethod
    def from_settings(cls, settings: Any, log: Any, service: str) -> Alerter:
        return cls(channels(settings, service, log), settings.alert_rate_per_min, log, service)

    def alert(self, level: str, title: str, body: str, event_time: int = 0) -> bool:
        """Queue an alert; False when there is nowhere to send it or the rate limit holds it back."""
        if not self.channels:
            return False
        alert = Alert(level, title, body, self.service, event_time)
        if not self.limit.allow(alert, time.monotonic()):
            self.suppressed += 1
            return False
        try:
            self.queue.put_nowait(alert)
        except queue.Full:
            self.suppressed += 1
            return False
        return True

    def _run(self) -> None:
        while (alert := self.queue.get()) is not None:
            for channel in self.channels:
                if (reason := channel.send(alert)) is not None:
                    self.log.warning("alert_failed", channel=channel.kind, reason=reason)

    def close(self) -> None:
        if self.thread:
            self.queue.put(None)
            self.thread.join(5)
