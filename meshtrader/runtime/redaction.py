"""Secrets kept out of logs, records and the bus: a URL's password shown as ***, and put back only
where a connection is opened."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


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
