"""CURVE on the bus (MESH_CURVE_KEYS): `mesh keys` writes one key directory per host, secret keys readable by
their owner only; servers (REP, PUB) answer authorized clients only, and each client refused, without CURVE or
with a key the mesh does not know, is counted. Real sockets over tcp on loopback."""
from __future__ import annotations

import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.auth
from bus_rig import Recorder, counted, join, read_until
from conftest import wait_for

from meshtrader.bus import Loop, Publisher, RepServer, ReqClient, Subscriber
from meshtrader.bus.curve import Curve, CurveKeys, write_key_directory
from meshtrader.ops.cli import main as mesh
from meshtrader.runtime.config import ConfigError
from meshtrader.runtime.log import Logger
from meshtrader.runtime.metrics import ServiceMetrics
from meshtrader.wire.messages import CandlesReply, FeedReplies, FeedRequests, RecentCandles, Tick, tick_topic

REFUSED = "mesh_bus_auth_failures_total"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def hosts(keys) -> dict[str, Path]:
    """`mesh keys` for two hosts, a and b."""
    assert mesh(["keys", str(keys / "mesh"), "--hosts", "a,b"]) == 0
    return {host: keys / "mesh" / host for host in ("a", "b")}


def test_mesh_keys_writes_a_directory_per_host_with_owner_only_secrets(hosts, keys, capsys):
    a, b = CurveKeys.load(hosts["a"]), CurveKeys.load(hosts["b"])
    assert a.server_public == b.server_public and a.server_secret == b.server_secret  # one server pair for the mesh
    assert a.client_public != b.client_public  # a client pair per host, each authorized everywhere
    assert set(zmq.auth.load_certificates(a.authorized)) == {a.client_public, b.client_public}
    assert (hosts["a"] / "client.key_secret").read_bytes() != (hosts["b"] / "client.key_secret").read_bytes()
    for secret in Path(keys / "mesh").rglob("*.key_secret"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert mesh(["keys", str(keys / "mesh"), "--hosts", "a"]) == 2  # keys are never overwritten
    assert "never overwritten" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="host names"):
        write_key_directory(keys / "other", ["a/../b"])


def test_a_secret_key_others_can_read_is_refused(tmp_path):
    loose = tmp_path / "loose"
    write_key_directory(loose, ["c"])
    (loose / "c" / "client.key_secret").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        CurveKeys.load(loose / "c")
    with pytest.raises(ConfigError, match="not a key directory"):
        CurveKeys.load(tmp_path)


@pytest.fixture
def served(ctx, hosts) -> Iterator[tuple[Curve, ServiceMetrics, Loop, threading.Thread]]:
    """Host a's side: a service loop whose server sockets are CURVE servers (started in a thread by the test,
    once its sockets are registered)."""
    metrics, log = ServiceMetrics("risk"), Logger("risk", "ERROR")
    loop = Loop(log)
    curve = Curve(ctx, CurveKeys.load(hosts["a"]), metrics, log, loop)
    running = threading.Thread(target=loop.run, daemon=True)
    yield curve, metrics, loop, running
    loop.stop()
    running.join(5)
    curve.close()


def test_a_curve_rep_answers_authorized_clients_and_counts_each_refusal(ctx, hosts, served):
    curve, metrics, loop, running = served
    log = Logger("client", "ERROR")
    server = RepServer(ctx, "tcp://127.0.0.1:*", FeedRequests, lambda request: CandlesReply(), metrics, log,
                       curve=curve)
    loop.add_reader(server.socket, server.on_readable)
    running.start()
    endpoint = server.socket.last_endpoint.decode()
    b = CurveKeys.load(hosts["b"])
    asking = ReqClient(ctx, endpoint, FeedReplies, 5000, 1, log, curve=b)
    assert isinstance(asking.request(RecentCandles(symbol="BTCUSDT", n=1)), CandlesReply)  # host b is let in
    asking.close()

    public, secret = zmq.curve_keypair()  # a client that knows the mesh's server key, with a key of its own
    unknown = CurveKeys(b.server_public, b"", public, secret, b.authorized)
    for keys, reason in ((None, "no_curve"), (unknown, "unknown_key")):
        refused = ReqClient(ctx, endpoint, FeedReplies, 300, 1, log, curve=keys)
        assert refused.request(RecentCandles(symbol="BTCUSDT", n=1)) is None  # never an answer
        refused.close()
        wait_for(lambda reason=reason: counted(metrics, REFUSED, service="risk", reason=reason) >= 1, 10,
                 f"a {reason} refusal counted")


def test_a_curve_server_without_its_zap_handler_lets_no_one_in(ctx, hosts):
    """Fails closed: libzmq's CURVE server would take any client key if no ZAP handler ran to ask."""
    server = ctx.socket(zmq.REP)
    CurveKeys.load(hosts["a"]).server(server)
    server.bind("tcp://127.0.0.1:*")
    client = ReqClient(ctx, server.last_endpoint.decode(), FeedReplies, 300, 1, Logger("b", "ERROR"),
                       curve=CurveKeys.load(hosts["b"]))
    assert client.request(RecentCandles(symbol="BTCUSDT", n=1)) is None and not server.poll(0)
    client.close()
    server.close()


def test_a_curve_pub_streams_to_authorized_subscribers_only(ctx, hosts, served):
    curve, metrics, loop, running = served
    publisher = Publisher(ctx, "tcp://127.0.0.1:*", "feed", metrics, curve=curve)
    running.start()
    endpoint = publisher.socket.last_endpoint.decode()
    log, topic = Logger("sub", "ERROR"), tick_topic("BTCUSDT")
    member, outsider = Recorder(), Recorder()
    with_keys = Subscriber(ctx, [endpoint], [topic], member, ServiceMetrics("b"), log, curve=CurveKeys.load(hosts["b"]))
    without = Subscriber(ctx, [endpoint], [topic], outsider, ServiceMetrics("x"), log)
    join(lambda: publisher.publish(topic, Tick(symbol="BTCUSDT", price=1.0, et=1)), [(with_keys, member)], topic)
    wait_for(lambda: counted(metrics, REFUSED, reason="no_curve") >= 1, 10, "the subscriber without CURVE refused")
    publisher.publish(topic, Tick(symbol="BTCUSDT", price=2.0, et=2))
    read_until(with_keys, lambda: [t.price for t in member.on(topic)][-1:] == [2.0], "the second tick")
    assert not without.socket.poll(100) and not outsider.events  # nothing reached the one without keys
    for closable in (with_keys, without, publisher):
        closable.close()
