"""Secrets kept out of logs, records and the bus: a URL's password shown as ***, and put back only
where a connection is opened; the pieces of a URL masked in text that may quote them."""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
URL_DELIMITERS = re.compile(r"[/:@?&=#,;]+")
SHORTEST_PIECE = 3  # shorter pieces (a chat id such as 42) are no secret, and masking them would garble text


def is_postgres(location: str | Path) -> bool:
    return str(location).startswith(POSTGRES_SCHEMES)


def redact(location: str | Path) -> str:
    """A location fit for logs and records: a URL's password replaced by ***."""
    text = str(location)
    if "://" not in text:
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def unredact(location: str, secret_url: str | None) -> str:
    """A redacted location made usable again with the password of the URL it came from."""
    password = urlsplit(secret_url).password if secret_url and is_postgres(secret_url) else None
    return location.replace(":***@", f":{password}@", 1) if password and ":***@" in location else location


def url_secrets(url: str) -> list[str]:
    """Every piece of a URL that may be a credential, longest first. An Apprise URL carries its tokens
    anywhere (a Telegram bot token in the host and path, a Slack one in three path segments, a password in
    the user part or a query value), so every piece but the scheme counts, as written and decoded."""
    _, _, rest = url.partition("://")
    pieces = {piece for raw in URL_DELIMITERS.split(rest or url) for piece in (raw, unquote(raw))}
    return sorted((p for p in pieces if len(p) >= SHORTEST_PIECE), key=len, reverse=True)


def mask(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret replaced by ***."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
