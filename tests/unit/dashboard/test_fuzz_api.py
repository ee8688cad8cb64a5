"""Bad input at every REST endpoint, generated from the dashboard's own OpenAPI document with Hypothesis: values
of the wrong type, out of range, huge or in any script, missing and unknown fields and parameters, broken JSON,
wrong content types, a missing or wrong token, wrong methods and unknown routes. No call may fail on the
dashboard's side (a 5xx other than a documented 503 of a control whose service does not answer); every refusal is a
JSON `detail` saying what was wrong, is counted on /metrics and logged, and the token never reaches the log.

In-process, the mesh absent; its services' REP sockets are made to not answer at once (`ask` returns None) rather
than after their timeouts, so a control called right takes its documented 503 without the wait."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from meshtrader.dashboard import app as dashboard
from meshtrader.dashboard.app import create_app, status_reason
from meshtrader.ops import cli
from meshtrader.ops.logs import known_programs
from meshtrader.runtime.config import Settings, dashboard_token, load_settings

BAD, GOOD = 8, 4  # calls per operation and dashboard host, of any input and of right ones: 500 in all, seconds
FUZZ = settings(deadline=None, database=None, print_blob=True, suppress_health_check=list(HealthCheck))
HUGE = 4_000  # characters of a huge value (a URL's parts stop at 64 KiB, in any client or server)

Json = Any
Call = dict[str, Any]


def resolved(schema: Json, spec: Json) -> Json:
    """A schema with its `$ref` to the document's components followed."""
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def nasty_text() -> st.SearchStrategy[str]:
    """Text a handler may not expect: empty, any script, control characters, huge, number-like, injection-like."""
    return st.one_of(st.text(max_size=40), st.just("x" * HUGE), st.just("€" * (HUGE // 5)),
                     st.sampled_from(["", " ", "\x00", "-1", "0", "1e309", "NaN", "inf", "9" * 40, "0x10",
                                      "' OR 1=1 --", "../../etc/passwd", "%00", "{}", "[]", "null", "\ud7ff\ue000"]))


def any_json() -> st.SearchStrategy[Json]:
    """Any JSON document, small."""
    return st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                     max_size=3), max_leaves=6)


def conforming(schema: Json, spec: Json, words: list[str]) -> st.SearchStrategy[Json]:
    """A value the schema accepts; strings lean to names this mesh knows (symbols, strategies, services, levels)
    so that a good call goes past the lookups into the handler."""
    schema = resolved(schema, spec)
    if "anyOf" in schema:
        return st.one_of([conforming(option, spec, words) for option in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries({k: conforming(v, spec, words) for k, v in properties.items() if k in required},
                                     optional={k: conforming(v, spec, words) for k, v in properties.items()
                                               if k not in required})
    return st.one_of(st.sampled_from(words), st.text(max_size=20))


def violating(schema: Json, spec: Json) -> st.SearchStrategy[Json]:
    """A value the schema refuses, or one at its edges: out of range, another type, huge, any text."""
    schema = resolved(schema, spec)
    kind = schema.get("type")
    if kind == "integer":
        edges = [v + d for v in (schema.get("minimum", 0), schema.get("maximum", 2**63)) for d in (-1, 1)]
        return st.one_of(st.sampled_from([*edges, -(2**70), 2**70, 10**400]), st.floats(), nasty_text())
    if kind == "object":
        return st.one_of(any_json(), st.dictionaries(st.sampled_from(list(schema.get("properties", {})) or ["x"]),
                                                     any_json(), max_size=3))
    return st.one_of(nasty_text(), any_json())


def as_query(value: Json) -> str:
    """How a value goes into a query string: JSON for what is not already text."""
    return value if isinstance(value, str) else json.dumps(value)


@st.composite
def calls(draw: st.DrawFn, method: str, path: str, operation: Json, spec: Json, names: dict[str, list[str]],
          token: str, bad: bool) -> Call:
    """One call of an operation. Bad: each parameter right, wrong or left out, maybe unknown ones; a body right,
    with wrong fields, of another shape, broken, or of another content type; the token right, wrong, malformed or
    none. Otherwise right: the required parameters and the body as the document says, the token, JSON. A text
    parameter is often one of the `names` this mesh knows for it (a symbol for `symbol`), so right calls get past
    the lookups into the handlers."""
    words = sorted({word for known in names.values() for word in known})
    params: dict[str, str] = {}
    for parameter in operation.get("parameters", ()):
        if parameter["in"] != "query":
            continue
        right = conforming(parameter["schema"], spec, names.get(parameter["name"], words))
        value = draw(st.one_of(st.none(), right, violating(parameter["schema"], spec)) if bad
                     else right if parameter.get("required") else st.none() | right)
        if value is not None:
            params[parameter["name"]] = as_query(value)
    if bad:
        params.update(draw(st.dictionaries(st.sampled_from(["x", "limit", "n", "token", "symbol", "\u00e9"]),
                                           nasty_text(), max_size=2)))
    authorization = draw(st.sampled_from([None, f"bearer {token}", "Bearer nope", "Bearer ", token, f"Basic {token}",
                                          f"Bearer {token}x", "Bearer " + "a" * 10_000]) if bad
                         else st.just(f"Bearer {token}"))
    headers = {} if authorization is None else {"Authorization": authorization}
    body: bytes | None = None
    if "requestBody" in operation:
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        right = conforming(schema, spec, words).map(lambda document: json.dumps(document).encode())
        body = draw(st.one_of(right, violating(schema, spec).map(lambda document: json.dumps(document).encode()),
                              right.map(lambda text: text[: len(text) // 2]),
                              st.sampled_from([b"", b"{", b"\xff\xfe", b"[" * 5000,
                                               json.dumps({"on": True, "pad": "x" * 100 * HUGE}).encode()]))
                    if bad else right)
        content_type = draw(st.sampled_from(["text/plain", "application/x-www-form-urlencoded",
                                             "application/json; charset=utf-16", None, "application/json"]) if bad
                            else st.just("application/json"))
        if content_type is not None:
            headers["Content-Type"] = content_type
    return {"method": method.upper(), "url": path, "params": params, "headers": headers, "content": body}


def fuzzed(tmp_path, monkeypatch: pytest.MonkeyPatch, host: str) -> tuple[TestClient, Settings, str]:
    """The dashboard in-process, its mesh down: services do not answer, at once."""
    monkeypatch.setattr(cli, "ask", lambda *args, **kwargs: None)
    config = load_settings(home=tmp_path, host=host, log_level="WARNING")
    client = TestClient(create_app(config), base_url="http://127.0.0.1")
    return client, config, dashboard_token(config)[0]


def refusal(status: int) -> str:
    """How the dashboard counts a refused (4xx) or failed (5xx) call: its counter and reason."""
    return f"mesh_http_requests_{'rejected' if status < 500 else 'failed'}:{status_reason(status)}"


def refusals(client: TestClient) -> Counter[str]:
    """The dashboard's rejected and failed calls on /metrics, by counter and reason."""
    counted: Counter[str] = Counter()
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name in ("mesh_http_requests_rejected", "mesh_http_requests_failed"):
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counted[f"{family.name}:{sample.labels['reason']}"] += int(sample.value)
    return counted


def logged(output: str) -> list[dict[str, Any]]:
    """The dashboard's log lines about refused and failed calls."""
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line["event"] in ("api_call_rejected", "api_call_failed")]


def check(response: Any, operation: Json | None) -> None:
    """The properties of any reply: no failure on the dashboard's side but a documented 503 with its reason;
    every refusal a JSON `detail` that says what was wrong."""
    status = response.status_code
    documented = operation is not None and str(status) in operation.get("responses", {})
    assert status < 500 or (status == 503 and documented), f"{status}: {response.text[:500]}"
    if status >= 400:
        detail = response.json()["detail"]
        assert detail, response.text
        if isinstance(detail, list):  # a validation error: where, and what is wrong there
            assert all(item["loc"] and item["msg"] for item in detail), detail


def fuzz(client: TestClient, operation: Json, strategy: st.SearchStrategy[Call], examples: int,
         seen: Counter[str]) -> None:
    """Hypothesis's calls of one operation, each checked, and its refusals tallied as the dashboard should count them."""

    @settings(FUZZ, max_examples=examples)
    @given(call=strategy)
    def one(call: Call) -> None:
        response = client.request(**call)
        check(response, operation)
        if response.status_code >= 400:
            seen[refusal(response.status_code)] += 1

    one()


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])  # views open on loopback; beyond it, they need the token
def test_every_operation_takes_bad_input_with_a_clear_4xx_counted_and_logged(tmp_path, monkeypatch, capfd, host):
    client, config, token = fuzzed(tmp_path, monkeypatch, host)
    spec = client.app.openapi()
    names = {"symbol": config.symbols, "strategy": config.strategies, "service": known_programs(config),
             "level": ["DEBUG", "INFO", "WARNING", "ERROR"], "kind": ["first_trade", "big_win"]}
    seen: Counter[str] = Counter()
    operations = [(method, path, operation) for path, item in spec["paths"].items()
                  for method, operation in item.items()]
    assert {"get", "post"} <= {method for method, _, _ in operations}

    for method, path, operation in operations:
        for bad, examples in ((True, BAD), (False, GOOD)):
            fuzz(client, operation, calls(method, path, operation, spec, names, token, bad), examples, seen)

    for method, url in (("DELETE", "/api/state"), ("GET", "/api/pause"), ("PUT", "/api/kill-switch"),
                        ("POST", "/healthz"), ("GET", "/api/nope"), ("GET", "/api/" + "x" * 5000),
                        ("GET", f"/api/{token}"), ("GET", "/static/nope.js")):  # no such method, no such route
        response = client.request(method, url)
        check(response, None)
        seen[refusal(response.status_code)] += 1

    assert client.get("/healthz").status_code == 200  # still serving, and the views still answer
    assert client.get("/api/state", headers={"Authorization": f"Bearer {token}"}).json()["mesh"]["up"] is False
    assert refusals(client) == seen and seen[refusal(422)] and seen[refusal(404)], seen  # each counted, once
    output = capfd.readouterr()
    rejections = logged(output.out)
    assert len(rejections) == seen.total()
    assert all(line["method"] and line["path"] and line["status"] and line["reason"] for line in rejections)
    assert token not in output.out and token not in output.err


def test_a_fault_in_a_view_is_answered_counted_and_logged(tmp_path, monkeypatch, capfd):
    """A handler that fails is a JSON 500, counted, and logged with the call and the traceback: not a dropped call."""
    client, _, _ = fuzzed(tmp_path, monkeypatch, "127.0.0.1")

    def broken(*args: Any) -> list:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(dashboard, "narratives", broken)
    response = client.get("/api/narratives", params={"kind": "big_win"})
    assert response.status_code == 500 and "log" in response.json()["detail"]
    assert client.get("/healthz").status_code == 200
    assert refusals(client) == {refusal(500): 1}
    [line] = logged(capfd.readouterr().out)
    assert line["path"] == "/api/narratives" and "ZeroDivisionError" in line["detail"] and "a bug" in line["traceback"]
