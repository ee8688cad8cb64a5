"""CURVE: authentication and encryption of every ZeroMQ socket between hosts (MESH_CURVE_KEYS).

`mesh keys DIR` writes one key directory per host (zmq.auth's certificate files, secret ones mode 0600):

    DIR/<host>/server.key, server.key_secret   the mesh's one server key pair: every binder (PUB, REP) serves with it
    DIR/<host>/client.key, client.key_secret   this host's client key pair: every connecting socket (SUB, REQ)
    DIR/<host>/authorized/<each host>.key      the client public keys the servers let in

Each host gets its own directory and points MESH_CURVE_KEYS at it. A server socket answers only clients
whose public key is authorized, through a ZAP handler (zmq.auth's ThreadAuthenticator) in its context (and
none if that handler is missing: ZAP_ENFORCE_DOMAIN): a client without CURVE, or with a key not in
`authorized/`, is refused at the handshake, and each refusal is
counted (`mesh_bus_auth_failures_total{service, reason}`, from the server socket's monitor events) and
logged once per endpoint and reason. Secret keys are read from their files into the sockets only: never
into the settings, a log or a metric. Inproc sockets (a service's own threads) need none of this."""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import parse_monitor_message

from meshtrader.bus.frames import drain
from meshtrader.bus.loop import Loop
from meshtrader.runtime.config import ConfigError
from meshtrader.runtime.log import Logger
from meshtrader.runtime.metrics import LoopCounter, ServiceMetrics

SERVER, CLIENT, AUTHORIZED = "server", "client", "authorized"
ZAP_DOMAIN = b"meshtrader"
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# What a server socket's monitor reports of a client it refused: ZAP refused its public key; it does not speak
# CURVE (a mechanism mismatch, or, depending on timing, a handshake that ends without detail); another
# protocol error (not ZMTP, a malformed handshake).
REFUSED_KEY, FAILED_HANDSHAKE, FAILED_PROTOCOL = (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
                                                  zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
MONITORED = int(REFUSED_KEY | FAILED_HANDSHAKE | FAILED_PROTOCOL)


def refusal_reason(event: int, value: int) -> str | None:
    """The reason counted for a monitor event, or None for an event that is no refusal."""
    if event == REFUSED_KEY:
        return "unknown_key"
    if event == FAILED_HANDSHAKE or (event == FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH):
        return "no_curve"
    return "protocol" if event == FAILED_PROTOCOL else None


@dataclass(frozen=True)
class CurveKeys:
    """One host's key directory, loaded: what its sockets authenticate with."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes
    authorized: Path  # the directory of authorized client public keys

    @classmethod
    def load(cls, directory: Path) -> CurveKeys:
        """The keys of a directory `mesh keys` wrote; ConfigError (one line) if a file is missing or
        unreadable, or a secret key is readable by anyone but its owner."""
        directory = Path(directory)
        try:
            server_public, server_secret = _secret_pair(directory, SERVER)
            client_public, client_secret = _secret_pair(directory, CLIENT)
            authorized = directory / AUTHORIZED
            if not zmq.auth.load_certificates(authorized):
                raise ConfigError(f"MESH_CURVE_KEYS: no client public key in {authorized}")
        except (OSError, ValueError) as error:
            raise ConfigError(f"MESH_CURVE_KEYS: {directory} is not a key directory of `mesh keys`: {error}") from None
        return cls(server_public, server_secret, client_public, client_secret, authorized)

    def client(self, socket: zmq.Socket) -> None:
        """A connecting socket (SUB, REQ) authenticates with this host's client key; set before it connects."""
        socket.curve_secretkey = self.client_secret
        socket.curve_publickey = self.client_public
        socket.curve_serverkey = self.server_public

    def server(self, socket: zmq.Socket) -> None:
        """A binding socket (PUB, REP) serves with the mesh's server key; set before it binds. It fails closed:
        with no ZAP handler in its context to ask, it lets no client in (libzmq's default would let any key in)."""
        socket.curve_secretkey = self.server_secret
        socket.curve_publickey = self.server_public
        socket.curve_server = True
        socket.zap_domain = ZAP_DOMAIN
        socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def _secret_pair(directory: Path, name: str) -> tuple[bytes, bytes]:
    path = directory / f"{name}.key_secret"
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise ConfigError(f"MESH_CURVE_KEYS: {path} is readable by others: chmod 600 it")
    public, secret = zmq.auth.load_certificate(path)
    if secret is None:
        raise ValueError(f"no secret key in {path}")
    return public, secret


class Curve:
    """CURVE for the sockets of one service's ZeroMQ context: its servers answer authorized clients only
    (one ZAP handler per context, started with the first server), its refusals are counted and logged."""

    def __init__(self, ctx: zmq.Context, keys: CurveKeys, metrics: ServiceMetrics, log: Logger, loop: Loop) -> None:
        self.ctx, self.keys, self.log, self.loop = ctx, keys, log, loop
        self.service = metrics.service
        self.refusals = metrics.counter("mesh_bus_auth_failures_total",
                                        "connections refused by CURVE authentication", ("reason",))
        self.authenticator: ThreadAuthenticator | None = None
        self.watches: list[AuthWatch] = []

    def server(self, socket: zmq.Socket) -> None:
        """Make `socket` (not yet bound) a CURVE server that only authorized clients get through, and watch
        it for refusals from the service's loop."""
        if self.authenticator is None:
            self.authenticator = ThreadAuthenticator(self.ctx)
            self.authenticator.start()
            self.authenticator.configure_curve(domain=ZAP_DOMAIN.decode(), location=str(self.keys.authorized))
        self.keys.server(socket)
        watch = AuthWatch(socket, self.refusals, self.service, self.log)
        self.loop.add_reader(watch.monitor, watch.on_readable)
        self.watches.append(watch)

    def close(self) -> None:
        """After the service's sockets: the monitors, then the ZAP handler (the context cannot end before)."""
        for watch in self.watches:
            watch.close()
        if self.authenticator is not None:
            self.authenticator.stop()


class AuthWatch:
    """A server socket's monitor, for the handshakes it refused."""

    def __init__(self, socket: zmq.Socket, refusals: LoopCounter, service: str, log: Logger) -> None:
        self.monitor = socket.get_monitor_socket(MONITORED)
        self.refusals, self.service, self.log = refusals, service, log

    def on_readable(self) -> None:
        for frames in drain(self.monitor, 100):
            event = parse_monitor_message(frames)
            reason = refusal_reason(event["event"], event["value"])
            if reason is None:  # the monitor's own end (MONITOR_STOPPED)
                continue
            self.refusals.labels(self.service, reason).inc()
            endpoint = event["endpoint"].decode(errors="replace")
            self.log.warning_once(("bus_auth_refused", endpoint, reason), "bus_auth_refused", endpoint=endpoint,
                                  reason=reason, detail=int(event["value"]))

    def close(self) -> None:
        self.monitor.close(linger=0)


def write_key_directory(directory: Path, hosts: list[str]) -> list[Path]:
    """`mesh keys`: a new key directory per host under `directory` (which must not hold keys yet); returns
    them. One server key pair for the mesh, one client key pair per host; every host authorizes every
    host's client key."""
    bad = [host for host in hosts if not HOST_NAME.fullmatch(host)]
    if not hosts or bad or len(set(hosts)) != len(hosts):
        raise ConfigError(f"mesh keys: give distinct host names of letters, digits, '.', '_' or '-' (got {hosts})")
    directory = Path(directory)
    taken = [directory / host for host in hosts if (directory / host).exists()]
    if taken:
        raise ConfigError(f"mesh keys: {taken[0]} exists: keys are never overwritten (remove it to make new ones)")
    previous = os.umask(0o077)  # secret keys are created readable by their owner only
    try:
        with tempfile.TemporaryDirectory() as scratch:
            made = Path(scratch)
            zmq.auth.create_certificates(made, SERVER)
            for host in hosts:
                zmq.auth.create_certificates(made, f"{CLIENT}.{host}")
            directory.mkdir(parents=True, exist_ok=True)
            for host in hosts:
                own = directory / host
                (own / AUTHORIZED).mkdir(parents=True)
                for suffix in (".key", ".key_secret"):
                    shutil.copyfile(made / f"{SERVER}{suffix}", own / f"{SERVER}{suffix}")
                    shutil.copyfile(made / f"{CLIENT}.{host}{suffix}", own / f"{CLIENT}{suffix}")
                for other in hosts:
                    shutil.copyfile(made / f"{CLIENT}.{other}.key", own / AUTHORIZED / f"{other}.key")
                for public in [own / f"{SERVER}.key", own / f"{CLIENT}.key", *(own / AUTHORIZED).iterdir()]:
                    public.chmod(0o644)
    finally:
        os.umask(previous)
    return [directory / host for host in hosts]
