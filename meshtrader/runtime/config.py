"""Configuration: defaults < config file (TOML, MESH_CONFIG) < MESH_* environment / .env.

Everything that locates a piece of the mesh (runtime directory, ports, socket endpoints) is derived
here from the topology table (runtime/topology.py), so two meshes with different MESH_HOME and
MESH_PORT_BASE never clash.

A running mesh's settings are the ones `mesh up` resolved: it records them (all but credentials) in
$MESH_HOME/settings.json, and its services and `mesh status` load them from there
(`load_settings(recorded=True)`), whatever environment, working directory or .env they run with.
Credentials (passwords in URLs, the webhook URL, API keys, tokens) are never recorded: they come only
from the environment or .env.

More than one machine (MESH_TRANSPORT=tcp): MESH_HOSTS says where each program runs (default: every one on
MESH_HOST), MESH_SERVICES which of them this machine runs, MESH_CURVE_KEYS where this machine's CURVE keys
are (files, referenced by path: the secret keys are never read into the settings). A service binds on its
own address (or MESH_BIND_HOST), never wider than configured.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from meshtrader.domain.instruments import BUNDLED_MARKET_TYPE, MarketType
from meshtrader.runtime import topology
from meshtrader.runtime.topology import MAX_STRATEGIES

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_DATA = REPO_ROOT / "data"
SETTINGS_FILE = "settings.json"  # in MESH_HOME: the running mesh's settings, written by `mesh up`
CREDENTIAL_SETTINGS = ("alert_webhook_url", "alert_urls")  # the whole value is a secret: never recorded

LIVE_CONFIRMATION = "I-ACCEPT-REAL-MONEY-RISK"


class ConfigError(Exception):
    """An invalid setting: the message is one line naming the setting and the problem."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """All of the mesh's settings. Field `x` is set by the environment variable `MESH_X`."""

    model_config = SettingsConfigDict(env_prefix="MESH_", env_file=".env", extra="ignore")

    home: Path = Field(Path("var"), description="runtime directory: sockets, SQLite, logs, pids")
    port_base: int = Field(7100, ge=1024, le=65000, description="first port of this mesh's port range")
    transport: Literal["ipc", "tcp"] = Field("ipc", description="ipc sockets on one machine, or tcp (services on "
                                            "several hosts)")
    host: str = Field("127.0.0.1", description="address services bind and connect to with tcp (those MESH_HOSTS "
                      "does not place elsewhere)")
    hosts: Annotated[dict[str, list[str]], NoDecode] = Field(
        default_factory=dict, description='tcp: where programs run, JSON: {"executor": "10.9.0.1", '
        '"strategy_macd": ["10.9.0.1", "10.9.0.2"]}; a strategy worker may run on several hosts')
    services: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="the programs this machine runs (mesh up starts only these); unset: all")
    bind_host: str | None = Field(None, description="address services bind instead of their own, e.g. 0.0.0.0")
    curve_keys: Path | None = Field(None, description="this machine's key directory (mesh keys): CURVE "
                                    "authentication and encryption of every ZeroMQ socket")
    redis_url: str | None = Field(None, description="external Redis; unset starts the bundled redis-server")
    db_url: str | None = Field(None, description="PostgreSQL store, postgresql://...; unset: SQLite in MESH_HOME")
    mode: Literal["paper", "live"] = Field("paper", description="paper trading, or live orders through ccxt")
    live_confirm: str | None = Field(None, description=f"live mode needs exactly {LIVE_CONFIRMATION}")
    live_sandbox: bool = Field(True, description="live orders go to the exchange's sandbox/testnet")
    reconcile_tolerance: Decimal = Field(Decimal("0.01"), ge=0, description="USDT the exchange may differ by")
    live_timeout_s: float = Field(10.0, gt=0, le=60, description="an exchange request unanswered this long is "
                                  "a lost answer: the order is then looked up by its client id")
    live_check_s: float = Field(1.0, gt=0, description="how often open and unanswered live orders are checked")

    # market data: replay of files, or live through ccxt
    feed: Literal["replay", "live"] = Field("replay", description="replay the bundled data, or stream live")
    exchange: str = Field("binance", description="ccxt exchange id for live data")
    exchange_url: str | None = Field(None, description="point ccxt at this base URL (e.g. mesh exchange-sim)")
    market_type: MarketType | None = Field(
        None, description="the instruments' market: spot, or usdm (USD-M futures); unset: spot with live data "
        "(MESH_FEED=live), else usdm (the bundled candles)")
    feed_transport: Literal["auto", "websocket", "rest", "trades"] = Field(
        "auto", description="websocket klines where ccxt has them, else the trade stream (always under 1m), else "
        "REST polling; trades: candles built from the trade stream")
    feed_poll_s: float | None = Field(None, gt=0, description="REST polling interval (default 10 s)")
    feed_backoff_s: float = Field(1.0, gt=0, le=60, description="first reconnect delay; doubles up to 16x")
    feed_stale_s: float | None = Field(None, gt=0, description="stale-data alarm after this silence (2 candles)")
    data: Path | None = Field(None, description="directory of candle CSVs (plain or .gz), one per symbol")
    timeframe: str = Field("1m", description="candle timeframe the mesh trades on (15s, 30s, 1m, 5m, 15m, 1h, 4h, "
                           "1d; under 1m candles come from trades)")
    replay: Literal["candles", "trades"] = Field("candles", description="replay candle files, or the raw trade tape")
    symbols: Annotated[list[str], NoDecode] = Field(["BTCUSDT", "ETHUSDT"], description="symbols to replay and trade, "
                                                    "comma-separated")
    replay_speed: float = Field(10.0, gt=0, le=1_000_000, description="candles per second per symbol")
    ticks_per_candle: int = Field(4, ge=1, le=4, description="ticks replayed per candle (open, high/low, close)")
    replay_start: int = Field(0, ge=0, description="skip this many candles of the data at the start")
    replay_wait_s: float = Field(60.0, ge=0, description="wait this long at most for workers, risk and executor")
    feed_history: int = Field(2000, ge=10, description="candles per symbol kept for snapshot requests")

    # strategies and capital
    strategy_files: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="strategy modules outside the package: .py files (comma-separated), "
        "each registering its strategies with @register")
    strategies: Annotated[list[str], NoDecode] = Field(
        ["momentum", "macd"], description="strategy workers to run, comma-separated: any registered strategy (the "
        "package's, and those of MESH_STRATEGY_FILES)")
    strategy_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='per-strategy parameters, JSON: {"macd": {"fast": 8}}')
    capital: Decimal = Field(Decimal("100000"), gt=0, description="paper capital (USDT), split across the strategies")
    order_pct: Decimal = Field(Decimal("0.10"), gt=0, le=1, description="order notional / strategy equity")
    taker_fee_bp: Decimal = Field(Decimal("5"), ge=0, le=100,
                                  description="fee of fills that take liquidity (market orders), bp of notional")
    maker_fee_bp: Decimal = Field(Decimal("2"), ge=0, le=100,
                                  description="fee of fills that add liquidity (resting limit orders), bp")
    slippage_bp: Decimal = Field(Decimal("5"), ge=0, le=1000, description="paper slippage of a market order, basis "
                                 "points of the price")
    order_type: Literal["market", "limit"] = Field("market", description="entries: market orders, or limit orders "
                                                   "resting MESH_LIMIT_OFFSET_BP under the price (exits: market)")
    limit_offset_bp: Decimal = Field(Decimal("2"), ge=0, le=1000, description="how far under the last price a limit "
                                     "buy rests, basis points")
    order_timeout_s: float = Field(300.0, gt=0, description="a resting order unfilled this long (market seconds) "
                                   "is canceled")
    fill_model: Literal["fixed", "instant", "book"] = Field(
        "fixed", description="paper fills: fixed = the last price moved by the slippage; instant = the last price; "
        "book = walk the live order book's depth (part fills), fixed where there is no book")
    max_slippage_bp: Decimal = Field(Decimal("50"), ge=0, description="entries expected to slip more are rejected")
    slippage_impact_bp: Decimal = Field(Decimal("0"), ge=0, le=10000,
                                        description="volume-aware slippage: + this x sqrt(qty / bar volume)")
    signal_ttl_s: float = Field(30.0, gt=0, description="signals that waited longer than this (seconds) are refused")
    sizing: Literal["fixed", "volatility"] = Field(
        "fixed", description="entry size: fixed = MESH_ORDER_PCT of the strategy's equity; volatility = sized so "
        "the position's expected daily move is MESH_VOL_TARGET_PCT of the equity (capped by MESH_ORDER_PCT)")
    vol_target_pct: Decimal = Field(Decimal("0.005"), gt=0, le=1,
                                    description="volatility sizing: a position's expected daily move / equity")
    vol_lookback: int = Field(60, ge=2, le=10_000, description="volatility sizing: bars of realised volatility")
    confidence_sizing: bool = Field(False, description="scale an entry's size by its signal's confidence (0-1)")

    # futures (MESH_MARKET=usdm): shorts, leverage, margin, funding, liquidation
    market: MarketType = Field("spot", description="spot: buy and hold the asset; usdm: USD-M perpetual futures "
                               "(long and short, leverage, isolated margin, funding, liquidation)")
    max_leverage: Decimal = Field(Decimal("5"), ge=1, le=125, description="no strategy's leverage above this")
    leverage: Annotated[dict[str, Decimal], NoDecode] = Field(
        default_factory=dict, description='per-strategy leverage under usdm, JSON: {"macd": 3}; unlisted: 1')
    liquidation_fee_bp: Decimal = Field(Decimal("125"), ge=0, le=1000,
                                        description="fee of a liquidation, bp of the notional at the liquidation "
                                        "price (never more than the margin left)")
    margin_reduce_ratio: Decimal = Field(Decimal("0.5"), gt=0, le=1, description="margin ratio (maintenance / "
                                         "margin balance) at which the risk guard lets a strategy only reduce")
    margin_close_ratio: Decimal = Field(Decimal("0.8"), gt=0, le=1, description="margin ratio at which the risk "
                                        "guard closes the strategy's position, before the exchange liquidates")

    # allocation
    validation_every_min: float = Field(360.0, gt=0, description="market minutes between strategy validations")
    validation_windows_min: Annotated[list[float], NoDecode] = Field(
        [10080.0, 43200.0, 129600.0], description="lookback windows each validation backtests (7, 30, 90 days)")
    validation_window_weights: Annotated[list[float], NoDecode] = Field(
        [0.5, 0.3, 0.2], description="how much each window counts: the recent more")
    validation_loss_pct: Decimal = Field(Decimal("0.05"), gt=0, le=1,
                                         description="validate early when a strategy lost this much since the last")
    optimize_every: int = Field(2, ge=0, description="optimise one strategy's parameters every Nth validation; 0: never")
    optimize_objective: Literal["sharpe", "sortino", "roi", "profit_factor"] = Field(
        "sharpe", description="what parameter optimisation maximises")
    optimize_samples: int = Field(24, ge=0, description="parameter sets tried (chosen by MESH_OPTIMIZE_SAMPLER); "
                                  "0: the whole grid")
    optimize_workers: int = Field(2, ge=1, le=64, description="worker processes of a parameter optimisation")
    optimize_window_min: float = Field(10080.0, gt=0, description="market minutes an optimisation walks forward over")
    research_cluster: str | None = Field(None, description="Dask scheduler address (tcp://host:8786): validation "
                                         "backtests and optimisation trials run on that cluster, not local processes")
    kelly_cap: Decimal = Field(Decimal("1"), ge=0, description="cap a weight at this multiple of its Kelly fraction; 0: off")
    correlation_max: float = Field(0.7, gt=0, le=1, description="strategies holding together above this are penalised")
    regime_weight: float = Field(0.5, ge=0, description="how much the learned regime x strategy table counts")
    alloc_min_pct: Decimal = Field(Decimal("0.05"), ge=0, le=1, description="no strategy gets a smaller share of "
                                   "the capital")
    alloc_max_pct: Decimal = Field(Decimal("0.60"), gt=0, le=1, description="no strategy gets a larger share of the "
                                   "capital")
    alloc_change_pct: Decimal = Field(Decimal("0.02"), ge=0, le=1, description="smaller moves are not republished")
    alloc_cash_max_pct: Decimal = Field(Decimal("0.5"), ge=0, le=1, description="at most this share of capital "
                                        "stays in cash when validations show no strategy earns it; 0: always invested")
    optimize_sampler: Literal["tpe", "random"] = Field("tpe", description="parameter search: Optuna's TPE, or "
                                                       "random sampling from the grid")
    optimize_seed: int = Field(0, ge=0, description="seed of the parameter search: the same seed, the same trials")

    # risk limits
    max_order_pct: Decimal = Field(Decimal("0.20"), gt=0, le=1, description="risk: largest order notional as a "
                                   "share of the strategy's capital")
    max_exposure_pct: Decimal = Field(Decimal("0.80"), gt=0, le=10, description="risk: largest total exposure as "
                                      "a share of equity")
    max_positions_per_strategy: int = Field(2, ge=1, description="risk: open positions a strategy may hold")
    max_open_positions: int = Field(10, ge=1, description="open positions across all strategies")
    max_trades_per_day: int = Field(1000, ge=1, description="new entries per UTC day (exits always pass)")
    risk_per_trade_pct: Decimal = Field(Decimal("0.01"), gt=0, le=1,
                                        description="loss at the strategy's stop, as a share of its equity")
    max_position_pct: Decimal = Field(Decimal("0.10"), gt=0, le=1,
                                      description="position size cap (share of equity) for strategies with a stop")
    risk_kelly_multiple: Decimal = Field(Decimal("0"), ge=0, description="cap an entry at this multiple of the "
                                         "strategy's Kelly fraction of its equity (after 20 closed trades); 0: off")
    portfolio_drawdown_pct: Decimal = Field(Decimal("0.10"), gt=0, le=1,
                                            description="equity this far below its peak turns the kill switch on")
    daily_loss_pct: Decimal = Field(Decimal("0.05"), gt=0, le=1, description="risk: a loss of this share of the "
                                    "day's starting equity halts trading until 00:00 UTC")
    strategy_drawdown_pct: Decimal = Field(Decimal("0.10"), gt=0, le=1, description="risk: a strategy this far "
                                           "below its peak equity is deactivated")
    risk_timeout_ms: int = Field(500, ge=10, le=60_000, description="the executor's wait for the risk guard's "
                                 "answer, per try")
    risk_retries: int = Field(2, ge=1, le=10, description="tries before an order is rejected as unapproved (approval "
                              "fails closed)")

    # housekeeping
    heartbeat_s: float = Field(1.0, gt=0, le=60, description="how often every service says it is alive")
    fork_ttl_s: int = Field(3600, ge=1, description="a fork's default time to live, market-time seconds")
    max_forks: int = Field(8, ge=1, description="live forks at most")
    fork_backend: Literal["auto", "sqlite", "postgres", "tiger"] = Field(
        "auto", description="auto: the store's own database (sqlite, or postgres with MESH_DB_URL)")
    pg_golden_refresh_s: float = Field(60.0, ge=0, description="rebuild the postgres golden template this often")
    tiger_api_url: str = Field("https://console.cloud.tigerdata.com/public/api/v1", description="Tiger Cloud REST API")
    tiger_project_id: str | None = Field(None, description="Tiger Cloud project of the forked service")
    tiger_service_id: str | None = Field(None, description="the service forks are taken from")
    tiger_fork_strategy: Literal["NOW", "LAST_SNAPSHOT"] = Field(
        "LAST_SNAPSHOT", description="how Tiger Cloud forks: NOW or LAST_SNAPSHOT (PITR when a fork names a time)")
    tiger_fork_usd_per_hour: float = Field(0.0, ge=0, description="price of a fork's compute, for cost estimates")
    tiger_poll_s: float = Field(5.0, gt=0, description="how often to ask whether a Tiger fork is READY")
    fork_share_s: float = Field(30.0, ge=0, description="a read-only fork this young (market seconds) is shared "
                                "with the next read-only request for the same purpose; 0: never share")
    fork_keep_ttl_s: int = Field(604800, ge=1, description="TTL of incident forks and of forks found interesting")
    fork_keep_max: int = Field(20, ge=1, description="kept forks beyond this many: the oldest go")
    fork_pool_size: int = Field(0, ge=0, le=16, description="read-only forks kept made in advance, for backends "
                                "whose forks take minutes (tiger); 0: none")
    fork_golden_max_age_s: float = Field(30.0, ge=0, description="reuse one snapshot for forks this long (seconds)")
    alert_webhook_url: str | None = Field(None, description="POST each alert here as JSON (environment or .env)")
    telegram_chat_id: str | None = Field(None, description="alerts to this Telegram chat (token: TELEGRAM_BOT_TOKEN)")
    telegram_api_url: str = Field("https://api.telegram.org", description="the Telegram Bot API")
    alert_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Apprise URLs (tgram://, discord://, slack://, mailto://, json://...), "
        "comma-separated; each may carry a token: environment or .env only")
    alert_rate_per_min: int = Field(10, ge=1, description="alerts sent per minute at most (and a title once in 5 min)")
    big_move_pct: Decimal = Field(Decimal("0.01"), gt=0, description="narrate a win/loss above this share")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="the least level logged")
    profile_dir: Path | None = Field(None, description="each service's loop runs under cProfile and writes "
                                     "<service>.prof here when it stops (the latency bench's breakdown)")

    # the assistant (mesh ask, /api/ask, mesh mcp): a language model is optional
    llm_url: str | None = Field(None, description="an OpenAI-compatible chat-completions server for the assistant's "
                                "answers (OpenAI https://api.openai.com/v1, a local vLLM or Ollama "
                                "http://127.0.0.1:11434/v1); its key from MESH_LLM_KEY in the environment or .env; "
                                "unset: answers are the cited passages and records themselves")
    llm_model: str = Field("gpt-4o-mini", description="the model the assistant asks at MESH_LLM_URL")
    llm_timeout_s: float = Field(60.0, gt=0, le=600, description="the assistant's wait for the language model; "
                                 "unanswered, it answers without it")

    @field_validator("symbols", "strategy_files", "strategies", "validation_windows_min", "validation_window_weights",
                     "alert_urls", "services", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("strategy_params", "leverage", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except ValueError as error:
                raise ValueError(f"not valid JSON: {error}") from None
        return value

    @field_validator("hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        """JSON; a program's one address may be given bare, several as a list."""
        value = cls._json(value)
        if isinstance(value, dict):
            return {name: [where] if isinstance(where, str) else where for name, where in value.items()}
        return value

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        from meshtrader.domain.candles import TIMEFRAMES_MS

        if value not in TIMEFRAMES_MS:
            raise ValueError(f"unknown timeframe {value!r}; use one of {', '.join(TIMEFRAMES_MS)}")
        return value

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one symbol is needed")
        return [s.upper().replace("/", "") for s in value]

    @field_validator("strategy_files")
    @classmethod
    def _load_strategy_files(cls, value: list[Path]) -> list[Path]:
        from meshtrader.strategies import load_files

        paths = [path.expanduser().resolve() for path in value]
        load_files(paths)  # a ParameterError (a ValueError) names the file and what is wrong with it
        return paths

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, value: list[str], info: ValidationInfo) -> list[str]:
        from meshtrader.strategies import known

        if "strategy_files" not in info.data:  # a strategy file did not load: its own error says why
            return value
        unknown = [s for s in value if s not in known()]
        if unknown:
            raise ValueError(f"unknown strategy {unknown[0]!r}; known: {', '.join(known())}")
        if not value or len(value) > MAX_STRATEGIES or len(set(value)) != len(value):
            raise ValueError(f"give 1 to {MAX_STRATEGIES} distinct strategies")
        return value

    @model_validator(mode="after")
    def _strategy_params_valid(self) -> Settings:
        from meshtrader.strategies import ParameterError, create

        for name, params in self.strategy_params.items():
            try:
                create(name, self.symbols[0], params)
            except ParameterError as error:
                raise ValueError(f"MESH_STRATEGY_PARAMS: {error}") from None
        return self

    @field_validator("db_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value or None

    @model_validator(mode="after")
    def _live_needs_consent(self) -> Settings:
        if self.mode == "live":
            if self.live_confirm != LIVE_CONFIRMATION:
                raise ValueError(f"MESH_MODE=live sends real orders: set MESH_LIVE_CONFIRM={LIVE_CONFIRMATION} "
                                 "(or answer the prompt of `mesh up --mode live`)")
            if self.feed != "live":
                raise ValueError("MESH_MODE=live needs live market data: MESH_FEED=live")
        return self

    @model_validator(mode="after")
    def _market_type_fits_the_data(self) -> Settings:
        if self.market == "usdm":
            if self.market_type not in (None, "usdm"):
                raise ValueError(f"MESH_MARKET usdm trades USD-M futures: MESH_MARKET_TYPE {self.market_type} "
                                 "instruments cannot be")
            self.market_type = "usdm"
        elif self.market_type is None:
            self.market_type = "spot" if self.feed == "live" else BUNDLED_MARKET_TYPE
        elif self.feed == "live" and self.market_type != "spot":
            raise ValueError(f"MESH_MARKET_TYPE {self.market_type}: the live spot feed streams spot markets only "
                             "(MESH_MARKET=usdm streams USD-M)")
        return self

    @model_validator(mode="after")
    def _futures_settings(self) -> Settings:
        for name, leverage in self.leverage.items():
            if name not in self.strategies:
                raise ValueError(f"MESH_LEVERAGE names {name!r}, which is not in MESH_STRATEGIES")
            if not 1 <= leverage <= self.max_leverage:
                raise ValueError(f"MESH_LEVERAGE {name}: {leverage} is not between 1 and MESH_MAX_LEVERAGE "
                                 f"{self.max_leverage}")
        if self.market == "spot":
            if any(leverage != 1 for leverage in self.leverage.values()):
                raise ValueError("MESH_LEVERAGE: spot has no leverage (MESH_MARKET=usdm trades futures)")
            shorting = [name for name, params in self.strategy_params.items() if params.get("short")]
            if shorting:
                raise ValueError(f"MESH_STRATEGY_PARAMS: {shorting[0]} has short legs on, and spot cannot go short "
                                 "(MESH_MARKET=usdm trades futures)")
        if self.mode == "live" and self.market == "usdm" and len({self.leverage_of(n) for n in self.strategies}) > 1:
            raise ValueError("MESH_LEVERAGE: a live futures account has one leverage per symbol (one-way mode), "
                             "so every strategy must trade at the same leverage")
        if self.margin_reduce_ratio >= self.margin_close_ratio:
            raise ValueError(f"MESH_MARGIN_REDUCE_RATIO {self.margin_reduce_ratio} must be under "
                             f"MESH_MARGIN_CLOSE_RATIO {self.margin_close_ratio}")
        return self

    def leverage_of(self, strategy: str) -> Decimal:
        """A strategy's leverage: 1 on spot and where MESH_LEVERAGE does not name it."""
        return self.leverage.get(strategy, Decimal(1)) if self.market == "usdm" else Decimal(1)

    @model_validator(mode="after")
    def _placement_names_programs(self) -> Settings:
        """MESH_HOSTS and MESH_SERVICES name this mesh's programs; only a strategy worker runs on several hosts
        (its signals are deterministic and deduplicated; two risk guards or executors would each keep books)."""
        if self.hosts and self.transport != "tcp":
            raise ValueError("MESH_HOSTS places programs on hosts: it needs MESH_TRANSPORT=tcp")
        names = {p.name: p for p in self.programs(with_redis=True)}
        for name, addresses in self.hosts.items():
            if name not in names or names[name].service.module is None:
                raise ValueError(f"MESH_HOSTS: no program {name!r} to place; one of {', '.join(self.service_names())}")
            if not addresses or not all(a.strip() for a in addresses) or len(set(addresses)) != len(addresses):
                raise ValueError(f"MESH_HOSTS: {name} needs an address, or a list of distinct ones")
            if len(addresses) > 1 and not names[name].service.per_strategy:
                raise ValueError(f"MESH_HOSTS: only strategy workers run on several hosts, not {name}")
        unknown = [name for name in self.services if name not in names]
        if unknown:
            raise ValueError(f"MESH_SERVICES: no program {unknown[0]!r}; one of redis, "
                             f"{', '.join(self.service_names())}")
        return self

    @field_validator("curve_keys")
    @classmethod
    def _curve_keys(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_dir():
            raise ValueError("not a directory: make one with `mesh keys DIR` and copy each host its own")
        return value.expanduser().resolve() if value is not None else None

    @model_validator(mode="after")
    def _fork_backend_fits_the_store(self) -> Settings:
        if self.fork_backend == "sqlite" and self.db_url:
            raise ValueError("MESH_FORK_BACKEND sqlite forks the SQLite store, but MESH_DB_URL points at PostgreSQL")
        if self.fork_backend == "postgres" and not self.db_url:
            raise ValueError("MESH_FORK_BACKEND postgres needs MESH_DB_URL")
        return self

    @model_validator(mode="after")
    def _windows_weighted(self) -> Settings:
        if not self.validation_windows_min or len(self.validation_window_weights) != len(self.validation_windows_min):
            raise ValueError("MESH_VALIDATION_WINDOW_WEIGHTS needs one weight per MESH_VALIDATION_WINDOWS_MIN window")
        if any(w <= 0 for w in self.validation_windows_min) or any(w < 0 for w in self.validation_window_weights):
            raise ValueError("validation windows must be positive and their weights not negative")
        return self

    @model_validator(mode="after")
    def _limits_consistent(self) -> Settings:
        n = len([name for name in self.strategies if name != "bench"]) or 1
        if n > 1 and (self.alloc_min_pct * n > 1 or self.alloc_max_pct * n < 1):
            raise ValueError(f"MESH_ALLOC_MIN_PCT {self.alloc_min_pct} and MESH_ALLOC_MAX_PCT {self.alloc_max_pct} "
                             f"cannot split capital across {n} strategies")
        if self.order_pct > self.max_order_pct:
            raise ValueError(f"MESH_ORDER_PCT {self.order_pct} exceeds MESH_MAX_ORDER_PCT {self.max_order_pct}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        config_file = os.environ.get("MESH_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    # ----- derived locations -------------------------------------------------------------------
    @property
    def home_dir(self) -> Path:
        return self.home.resolve()

    @property
    def db_path(self) -> Path:
        return self.home_dir / "mesh.db"

    @property
    def store_location(self) -> str:
        """Where the durable records live: the PostgreSQL URL, or the SQLite file under MESH_HOME."""
        return self.db_url or str(self.db_path)

    def fork_location(self, registered: str) -> str:
        """A fork's location as registered (passwords redacted) made openable with MESH_DB_URL's password."""
        from meshtrader.runtime.redaction import unredact

        return unredact(registered, self.db_url)

    @property
    def forks_via(self) -> str:
        """The fork backend in force (`auto` resolved)."""
        if self.fork_backend != "auto":
            return self.fork_backend
        return "postgres" if self.db_url else "sqlite"

    @property
    def log_dir(self) -> Path:
        return self.home_dir / "logs"

    @property
    def forks_dir(self) -> Path:
        return self.home_dir / "forks"

    @property
    def data_dir(self) -> Path:
        return (self.data or BUNDLED_DATA).resolve()

    @property
    def supervisor_socket(self) -> Path:
        return self.home_dir / "supervisor.sock"

    @property
    def redis_socket(self) -> Path:
        return self.home_dir / "redis.sock"

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"unix://{self.redis_socket}"

    @property
    def redis_prefix(self) -> str:
        """Key namespace, so meshes sharing one external Redis keep apart."""
        return f"mesh:{self.port_base}:"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.addresses('dashboard')[0]}:{self.http_port('dashboard')}/"

    @property
    def settings_file(self) -> Path:
        """Where `mesh up` records the running mesh's settings."""
        return self.home_dir / SETTINGS_FILE

    @property
    def supervisord_conf(self) -> Path:
        """The config `mesh up` writes and runs supervisord with (`supervisorctl -c` takes it)."""
        return self.home_dir / "supervisord.conf"

    def strategy_index(self, strategy: str) -> int:
        return self.strategies.index(strategy)

    def programs(self, with_redis: bool = False) -> list[topology.Program]:
        """The mesh's programs (from the topology table), in the table's order."""
        return topology.programs(self.strategies, with_redis=with_redis)

    def local_programs(self, with_redis: bool = False) -> list[topology.Program]:
        """The programs this machine runs (MESH_SERVICES; unset: all of them)."""
        programs = self.programs(with_redis=with_redis)
        return [p for p in programs if p.name in self.services] if self.services else programs

    # ----- where programs run ---------------------------------------------------------------------
    def addresses(self, program: str) -> list[str]:
        """Where a program runs: its MESH_HOSTS entry (more than one address for a strategy worker on
        several hosts), else MESH_HOST."""
        return list(self.hosts.get(program) or [self.host])

    def own_address(self, program: str) -> str:
        """The address of this machine's instance of a program: its only one, or of a program on several
        hosts the one that belongs to this machine."""
        addresses = self.addresses(program)
        if len(addresses) == 1:
            return addresses[0]
        local = [address for address in addresses if is_local_address(address)]
        if len(local) != 1:
            raise ConfigError(f"MESH_HOSTS: {program} runs at {', '.join(addresses)}, and {len(local)} of them are "
                              "this machine's: run one instance per host")
        return local[0]

    def bind_address(self, program: str) -> str:
        """Where a program's sockets and HTTP server listen: MESH_BIND_HOST if set, else its own address."""
        return self.bind_host or self.own_address(program)

    def instance_name(self, program: str) -> str:
        """How a program's publisher signs its messages: its name, and for a program on several hosts also
        its address, so subscribers count each instance's sequence apart."""
        if len(self.addresses(program)) == 1:
            return program
        return f"{program}@{self.own_address(program)}"

    def http_port(self, service: str) -> int:
        """Port of a service's HTTP server (dashboard) or Prometheus /metrics."""
        offset = topology.program(service, self.strategies).offset("http")
        if offset is None:
            raise KeyError(f"{service} serves no HTTP")
        return self.port_base + offset

    def endpoint(self, name: str) -> str:
        """ZeroMQ endpoint of a publisher or REP socket, e.g. 'feed.pub', 'risk.rep', 'strategy.macd.pub'
        (of a program on several hosts, the first instance's: `instances` gives them all)."""
        return self.endpoints(name)[0]

    def endpoints(self, name: str) -> list[str]:
        """The endpoint of each instance of a publisher or REP socket (one, but for a strategy worker on
        several hosts)."""
        program, kind = topology.endpoint_program(name, self.strategies)
        if self.transport == "tcp":
            port = self.port_base + program.offset(kind)
            return [f"tcp://{address}:{port}" for address in self.addresses(program.name)]
        path = self.home_dir / "sock" / name
        if len(str(path)) > 100:
            raise ConfigError(f"MESH_HOME: path too long for ipc sockets ({path}); use a shorter MESH_HOME")
        return [f"ipc://{path}"]

    def bind_endpoint(self, name: str) -> str:
        """Where this machine's instance of a publisher or REP socket binds: its own address (or MESH_BIND_HOST)."""
        program, kind = topology.endpoint_program(name, self.strategies)
        if self.transport == "tcp":
            return f"tcp://{self.bind_address(program.name)}:{self.port_base + program.offset(kind)}"
        return self.endpoint(name)

    def instances(self, endpoint: str) -> list[str]:
        """Every instance of the publisher at `endpoint` (as `endpoint` gives it): a subscriber connects to
        them all, so a strategy worker on several hosts is heard from each."""
        for program in self.programs():
            if program.offset("pub") is not None and len(self.addresses(program.name)) > 1:
                every = self.endpoints(program.endpoint_name("pub"))
                if endpoint == every[0]:
                    return every
        return [endpoint]

    def publisher_endpoints(self) -> dict[str, str]:
        """Every publisher of the mesh, by program name: what a subscriber to 'everything' connects to."""
        return {p.name: self.endpoint(p.endpoint_name("pub")) for p in self.programs() if p.offset("pub") is not None}

    def service_names(self) -> list[str]:
        """The mesh's programs, in the topology's order (Redis excluded)."""
        return [p.name for p in self.programs()]

    def prepare_home(self) -> None:
        for directory in (self.home_dir, self.log_dir, self.forks_dir, self.home_dir / "sock"):
            directory.mkdir(parents=True, exist_ok=True)

    def recordable(self) -> dict[str, Any]:
        """These settings as `mesh up` records them: every one but credentials, paths absolute.

        The webhook URL (a token) is left out, and a URL's password is cut out of it: they come only
        from the environment or .env, which then takes precedence for that setting."""
        values = self.model_dump(mode="json", exclude=set(CREDENTIAL_SETTINGS))
        values["home"] = str(self.home_dir)
        values["data"] = str(self.data.resolve()) if self.data else None
        stripped = []
        for key, value in values.items():
            if isinstance(value, str) and "://" in value and urlsplit(value).password is not None:
                values[key] = _without_password(value)
                stripped.append(key)
        values["_without_password"] = stripped
        return values

    def __setstate__(self, state: Any) -> None:
        """Unpickled (an optimiser's spawned worker): its strategy files are loaded there too."""
        super().__setstate__(state)
        if self.strategy_files:
            from meshtrader.strategies import load_files

            load_files(self.strategy_files)


def is_local_address(address: str) -> bool:
    """Whether `address` is one of this machine's (it can be bound)."""
    try:
        infos = socket.getaddrinfo(address, 0, type=socket.SOCK_DGRAM)
    except OSError:
        return False
    for family, kind, proto, _, where in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind(where)
                return True
            except OSError:
                continue
    return False


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    userinfo = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc[2]}" if userinfo else netloc[2]))


def record_settings(settings: Settings) -> Path:
    """Write the running mesh's settings (no credentials) to $MESH_HOME/settings.json; returns the path."""
    settings.prepare_home()
    path = settings.settings_file
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(settings.recordable(), indent=2, sort_keys=True) + "\n")
    temporary.chmod(0o600)
    temporary.replace(path)
    return path


def forget_settings(settings: Settings) -> None:
    """The mesh has stopped: its recorded settings no longer describe anything running."""
    settings.settings_file.unlink(missing_ok=True)


def recorded_values(home: Path) -> dict[str, Any] | None:
    """What settings.json in this MESH_HOME holds, as Settings arguments (credentials excepted)."""
    path = Path(home).expanduser().resolve() / SETTINGS_FILE
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ConfigError(f"unreadable recorded settings {path}: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"unreadable recorded settings {path}: not a JSON object")
    for key in values.pop("_without_password", []):
        if credential(f"MESH_{key.upper()}"):  # the environment or .env has it whole, password included
            values.pop(key, None)
    for key in CREDENTIAL_SETTINGS:
        values.pop(key, None)
    return {k: v for k, v in values.items() if k in Settings.model_fields}


def _configured_home(overrides: dict[str, Any]) -> Path:
    """MESH_HOME as the settings would resolve it: an override, the environment, .env, the config file."""
    if overrides.get("home"):
        return Path(overrides["home"])
    given = credential("MESH_HOME")
    if given:
        return Path(given)
    config_file = os.environ.get("MESH_CONFIG")
    if config_file:
        import tomllib

        try:
            home = tomllib.loads(Path(config_file).read_text()).get("home")
        except (OSError, ValueError):
            home = None
        if home:
            return Path(home)
    return Path(Settings.model_fields["home"].default)


def describe_error(error: ValidationError) -> str:
    """One line per problem: the MESH_* name, what is wrong, and the value given."""
    lines = []
    for problem in error.errors():
        message = problem["msg"].removeprefix("Value error, ")
        if not problem["loc"]:  # a check across settings names them itself
            lines.append(f"invalid settings: {message}")
            continue
        setting = "MESH_" + ".".join(str(p) for p in problem["loc"]).upper()
        given = problem.get("input")
        if isinstance(given, str) and "://" in given:
            from meshtrader.runtime.redaction import redact

            given = redact(given)
        shown = "" if isinstance(given, dict) or given is None else f" (got {given!r})"
        lines.append(f"invalid setting {setting}: {message}{shown}")
    return "; ".join(lines)


def load_settings(recorded: bool = False, **overrides: Any) -> Settings:
    """Load and validate settings; raise ConfigError with a one-line message when invalid.

    With `recorded`, the settings of the mesh running in MESH_HOME, as `mesh up` recorded them, come
    first (overrides still win; credentials still come from the environment or .env); without a
    recorded file, the settings are loaded as usual."""
    refuse_secrets_in_config_file()
    if recorded:
        values = recorded_values(_configured_home(overrides))
        if values is not None:
            overrides = {**values, **overrides}
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(describe_error(error)) from None
    except (OSError, ValueError) as error:  # unreadable or malformed config file
        raise ConfigError(f"invalid config file {os.environ.get('MESH_CONFIG')}: {error}") from None


def refuse_secrets_in_config_file() -> None:
    """Credentials come from the environment or .env only: a password in the config file is refused."""
    config_file = os.environ.get("MESH_CONFIG")
    if not config_file:
        return
    import tomllib
    from urllib.parse import urlsplit

    try:
        values = tomllib.loads(Path(config_file).read_text())
    except (OSError, ValueError):
        return  # reported, with the file's name, by the settings source
    for key in CREDENTIAL_SETTINGS:
        if values.get(key):
            raise ConfigError(f"invalid config file {config_file}: {key} may carry a token; set "
                              f"MESH_{key.upper()} in the environment or .env")
    for key in ("db_url", "redis_url"):
        value = values.get(key)
        if isinstance(value, str) and "://" in value and urlsplit(value).password:
            raise ConfigError(f"invalid config file {config_file}: {key} carries a password; credentials come only "
                              f"from the environment or .env (MESH_{key.upper()}, or PGPASSWORD)")


def credential(name: str) -> str | None:
    """A secret from the environment, or from .env in the working directory: never from the config file."""
    if os.environ.get(name):
        return os.environ[name]
    return dotenv_values().get(name) or None


def dashboard_token(settings: Settings) -> tuple[str, Path | None]:
    """The token the dashboard's controls need, and the file it was kept in (None: it came from
    MESH_DASHBOARD_TOKEN in the environment or .env). Unset, one is made at the mesh's first start and
    kept, readable by its owner only, in $MESH_HOME/dashboard.token: never in a log, the store or a metric."""
    if token := credential("MESH_DASHBOARD_TOKEN"):
        return token, None
    path = settings.home_dir / "dashboard.token"
    if not path.is_file():  # written whole, then linked in place: two starting processes agree on one token
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".dashboard.token.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(24))
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
        draft.unlink()
    return path.read_text().strip(), path


def dotenv_values(path: Path = Path(".env")) -> dict[str, str]:
    """The variables of a .env file (KEY=value lines; `export` and quotes allowed), or {} without one."""
    values: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines() if path.is_file() else []
    except OSError:
        return values
    for line in lines:
        key, sep, value = line.strip().partition("=")
        key = key.strip().removeprefix("export ").strip()
        if sep and key and not key.startswith("#"):
            values.setdefault(key, value.strip().strip("'\""))
    return values
