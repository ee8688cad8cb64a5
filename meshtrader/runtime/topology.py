"""The mesh's topology: every program declared once, with what the rest of the mesh derives from it.

`SERVICES` is the one table. supervisord.conf (runtime/supervise.py), `Settings.service_names`,
`Settings.http_port`, `Settings.endpoint` and `Settings.publisher_endpoints`, `mesh status`,
`mesh prometheus-targets` and the dashboard's relay all read it; a test holds the README's services
table and its metrics ports to it. A per-strategy service is one row that becomes one program per
entry of MESH_STRATEGIES (`strategy_<name>`), its ports offset by the strategy's index.

Ports are offsets from MESH_PORT_BASE: `http` is the service's HTTP server (Prometheus /metrics; the
dashboard's page), `pub` / `rep` its ZeroMQ sockets when MESH_TRANSPORT=tcp (with ipc they are files
under $MESH_HOME/sock named after the endpoint, e.g. `risk.rep`, `strategy.macd.pub`).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

BACKGROUND_NICENESS = 5  # background services yield the CPU to the tick-to-trade path
MAX_STRATEGIES = 20  # per-strategy ports are offset by the strategy's index: room for this many
PORT_SPAN = 80  # a mesh uses ports MESH_PORT_BASE .. MESH_PORT_BASE + PORT_SPAN - 1
MCP_HTTP_OFFSET = 7  # `mesh mcp --http`: not a supervised service, started by whoever wants it
SOCKET_KINDS = ("pub", "rep")


@dataclass(frozen=True)
class Service:
    """One row of the topology."""

    name: str  # program name; a per-strategy service's programs are `<name>_<strategy>`
    module: str | None  # what `python -m` runs (a per-strategy one gets the strategy's name as argument);
    #                     None: not a Python service (the bundled redis-server)
    priority: int  # supervisord's start order (lower first; stopped in reverse)
    http: int | None = None  # HTTP port offset (/metrics; the dashboard's page)
    pub: int | None = None  # PUB socket's tcp port offset: the service publishes
    rep: int | None = None  # REP socket's tcp port offset: the service answers requests
    per_strategy: bool = False  # one program per MESH_STRATEGIES entry; offsets + the strategy's index
    background: bool = False  # off the tick-to-trade path: runs at BACKGROUND_NICENESS
    relays: tuple[str, ...] = ()  # prefixes of its topics the dashboard relays to browsers
    publishes: str = ""  # what it publishes, in words (the README's table says more)
    only_without_redis_url: bool = False  # started only when MESH_REDIS_URL is unset (the bundled Redis)

    def offset(self, kind: str) -> int | None:
        """The port offset of one of its sockets ('pub', 'rep'), or of its HTTP server ('http')."""
        if kind not in (*SOCKET_KINDS, "http"):
            raise KeyError(f"no socket kind {kind!r}; one of pub, rep, http")
        return getattr(self, kind)


SERVICES: tuple[Service, ...] = (
    Service("redis", None, priority=10, only_without_redis_url=True),
    Service("feed", "meshtrader.services.feed", priority=20, http=1, pub=40, rep=41, relays=("md.candle.", "md.gap"),
            publishes="market data: ticks, closed candles, funding, gaps, status, books"),
    Service("strategy", "meshtrader.services.strategy", priority=40, http=10, pub=60, per_strategy=True,
            publishes="signals (sig.<strategy>)"),
    Service("allocator", "meshtrader.services.allocator", priority=35, http=2, pub=42, rep=49, background=True,
            relays=("alloc", "regime"), publishes="allocations, regimes, adopted parameters"),
    Service("risk", "meshtrader.services.risk", priority=30, http=3, pub=43, rep=44, relays=("risk.",),
            publishes="risk decisions and trading state"),
    Service("executor", "meshtrader.services.executor", priority=50, http=4, pub=45, rep=50,
            relays=("fill", "order", "acct"), publishes="orders, fills, accounts, venue status"),
    Service("forks", "meshtrader.services.forks", priority=50, http=5, pub=46, rep=47, background=True,
            relays=("fork.",), publishes="fork lifecycle"),
    Service("narrator", "meshtrader.services.narrator", priority=60, http=6, pub=48, background=True,
            relays=("narr",), publishes="highlights"),
    Service("dashboard", "meshtrader.services.dashboard", priority=70, http=0, background=True,
            publishes="nothing: relays the bus to browsers"),
)
BY_NAME = {s.name: s for s in SERVICES}


@dataclass(frozen=True)
class Program:
    """One process of a running mesh: a service, and for a per-strategy one, which strategy."""

    service: Service
    strategy: str | None = None
    index: int = 0  # the strategy's position in MESH_STRATEGIES

    @property
    def name(self) -> str:
        return f"{self.service.name}_{self.strategy}" if self.strategy is not None else self.service.name

    @property
    def args(self) -> list[str]:
        """The program's `python` arguments (empty for redis, which is no Python module)."""
        if self.service.module is None:
            return []
        return ["-m", self.service.module, *([self.strategy] if self.strategy is not None else [])]

    def offset(self, kind: str) -> int | None:
        base = self.service.offset(kind)
        return None if base is None else base + self.index

    def endpoint_name(self, kind: str) -> str:
        """The endpoint's name as Settings.endpoint takes it: 'risk.rep', 'strategy.macd.pub'."""
        middle = f".{self.strategy}" if self.strategy is not None else ""
        return f"{self.service.name}{middle}.{kind}"

    @property
    def relays(self) -> tuple[str, ...]:
        return self.service.relays


def programs(strategies: Iterable[str], with_redis: bool = False) -> list[Program]:
    """Every program of a mesh running these strategies, in the table's order (Redis only if asked)."""
    strategies = list(strategies)
    if len(strategies) > MAX_STRATEGIES:
        raise ValueError(f"at most {MAX_STRATEGIES} strategies (the port layout has room for that many)")
    result = []
    for service in SERVICES:
        if service.only_without_redis_url and not with_redis:
            continue
        if service.per_strategy:
            result.extend(Program(service, strategy, i) for i, strategy in enumerate(strategies))
        else:
            result.append(Program(service))
    return result


def program(name: str, strategies: Iterable[str]) -> Program:
    """The program called `name` ('executor', 'strategy_macd') of a mesh running these strategies."""
    strategies = list(strategies)
    if name in BY_NAME and not BY_NAME[name].per_strategy:
        return Program(BY_NAME[name])
    for service in SERVICES:
        prefix = service.name + "_"
        if service.per_strategy and name.startswith(prefix):
            strategy = name[len(prefix):]
            if strategy not in strategies:
                raise KeyError(f"{name}: strategy {strategy!r} is not in MESH_STRATEGIES ({', '.join(strategies)})")
            return Program(service, strategy, strategies.index(strategy))
    raise KeyError(f"no program {name!r} in the mesh")


def endpoint_program(endpoint: str, strategies: Iterable[str]) -> tuple[Program, str]:
    """('risk.rep') -> (the risk program, 'rep'); ('strategy.macd.pub') -> (strategy_macd, 'pub')."""
    head, _, kind = endpoint.rpartition(".")
    if kind not in SOCKET_KINDS or not head:
        raise KeyError(f"no endpoint {endpoint!r}: name it SERVICE.pub or SERVICE.rep (strategy.NAME.pub)")
    service, _, strategy = head.partition(".")
    found = program(f"{service}_{strategy}" if strategy else service, strategies)
    if found.offset(kind) is None:
        raise KeyError(f"{found.name} has no {kind} socket")
    return found, kind


def relayed_topics() -> tuple[str, ...]:
    """Every topic prefix the dashboard relays to browsers."""
    return tuple(prefix for service in SERVICES for prefix in service.relays)
