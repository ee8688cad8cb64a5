"""Alerts for warnings and worse (halts, the kill switch, incidents, disconnections, rejected live
orders), to Telegram and to a webhook, rate-limited, sent off the caller's thread.

Credentials (the Telegram bot token) come from the environment only, and no URL that carries one is
ever logged: a failed send is logged by channel and HTTP status.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Alert:
    level: str  # warning or critical
    title: str
    body: str
    service: str
    event_time: int = 0

    def text(self) -> str:
        return f"[{self.level.upper()}] {self.title}\n{self.body}"


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


class Webhook:
    name = "webhook"

    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, client: httpx.Client, alert: Alert) -> httpx.Response:
        return client.post(self.url, json={"level": alert.level, "title": alert.title, "body": alert.body,
                                           "service": alert.service, "event_time": alert.event_time})


class Telegram:
    name = "telegram"

    def __init__(self, api_url: str, token: str, chat_id: str) -> None:
        self.url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"  # holds the token: never logged
        self.chat_id = chat_id

    def send(self, client: httpx.Client, alert: Alert) -> httpx.Response:
        return client.post(self.url, json={"chat_id": self.chat_id, "text": alert.text()})


class Alerter:
    """Queues alerts and sends them from one background thread, so a slow or dead endpoint never
    stalls the service that raised them."""

    def __init__(self, channels: list[Webhook | Telegram], per_minute: int, log: Any, service: str) -> None:
        self.channels, self.log, self.service = channels, log, service
        self.limit = RateLimit(per_minute)
        self.queue: queue.Queue[Alert | None] = queue.Queue(maxsize=1000)
        self.suppressed = 0
        self.thread = threading.Thread(target=self._run, name="alerts", daemon=True) if channels else None
        if self.thread:
            self.thread.start()

    @classmethod
    def from_settings(cls, settings: Any, log: Any, service: str) -> Alerter:
        channels: list[Webhook | Telegram] = []
        if settings.alert_webhook_url:
            channels.append(Webhook(settings.alert_webhook_url))
        token = os.environ.get("TELEGRAM_BOT_TOKEN")
        if token and settings.telegram_chat_id:
            channels.append(Telegram(settings.telegram_api_url, token, settings.telegram_chat_id))
        return cls(channels, settings.alert_rate_per_min, log, service)

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
        with httpx.Client(timeout=5.0) as client:
            while (alert := self.queue.get()) is not None:
                for channel in self.channels:
                    try:
                        response = channel.send(client, alert)
                        if response.status_code >= 300:
                            self.log.warning("alert_failed", channel=channel.name, status=response.status_code)
                    except httpx.HTTPError as error:
                        self.log.warning("alert_failed", channel=channel.name, error=type(error).__name__)

    def close(self) -> None:
        if self.thread:
            self.queue.put(None)
            self.thread.join(5)
