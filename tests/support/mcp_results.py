"""Reading an MCP tool call's result as the SDK's client returns it."""
from __future__ import annotations

import json


def payload(result) -> dict:
    """A successful call's JSON object (its structured content, or the JSON text it came as)."""
    assert not result.is_error, result.content
    return result.structured_content if isinstance(result.structured_content, dict) else json.loads(
        result.content[0].text)


def error_text(result) -> str:
    """A failed call's message."""
    assert result.is_error, result.content
    return " ".join(getattr(block, "text", "") for block in result.content)
