"""The library, without processes: schemas, settings, money, risk rules, store, strategies, data."""
from __future__ import annotations

import gzip
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from meshtrader.domain.allocation import equal_weights
from meshtrader.domain.candles import Bar, candle_problem
from meshtrader.domain.money import fee, instrument, slipped_price, to_decimal
from meshtrader.domain.portfolio import AccountingError, Portfolio, size_buy
from meshtrader.domain.risk import Limits, RiskBook, evaluate, judge
from meshtrader.marketdata.files import find_candle_file, load_bars
from meshtrader.persistence.store import ORDER_BASICS, SCHEMA_VERSION, Store
from meshtrader.runtime.config import REPO_ROOT, ConfigError, load_settings
from meshtrader.runtime.supervise import default_paths, render
from meshtrader.strategies import ParameterError, create
from meshtrader.wire.codec import DecodeError, UnknownTopic, decode_event, decoder_for, encode
from meshtrader.wire.messages import (
    ApproveOrder,
    Candle,
    Fill,
    RiskRequests,
    SetKillSwitch,
    Tick,
    candle_topic,
    tick_topic,
)

D = Decimal


# ----- wire ------------------------------------------------------------------------------------------
def test_events_round_trip_and_validate_on_decode():
    tick = Tick(symbol="BTCUSDT", price=95505.4, et=1, tid=7, src="feed", seq=3)
    assert decode_event(tick_topic("BTCUSDT"), encode(tick)) == tick
    fill = Fill(trade_id="t", order_id="o", signal_id="s", strategy="m", symbol="BTCUSDT", side="buy",
                qty=D("0.052"), price=D("95545.1"), fee=D("4.96834520"), realized_pnl=D(0),
                cash_after=D("45026.01"), position_after=D("0.052"))
    decoded = decode_event(b"fill", encode(fill))
    assert decoded.fee == D("4.96834520") and isinstance(decoded.qty, Decimal)
    with pytest.raises(DecodeError):
        decode_event(candle_topic("BTCUSDT"), encode(tick))  # a tick is not a candle
    with pytest.raises(DecodeError):
        decode_event(b"fill", encode({**msgspec.to_builtins(fill), "side": "sideways"}))
    with pytest.raises(UnknownTopic):
        decode_event(b"nonsense", encode(tick))


def test_requests_are_a_tagged_union():
    decoder = decoder_for(RiskRequests)
    assert decoder.decode(encode(SetKillSwitch(on=True))) == SetKillSwitch(on=True)
    with pytest.raises(DecodeError):
        decoder.decode(encode({"kind": "drop_tables"}))


# ----- settings --------------------------------------------------------------------------------------
def test_invalid_setting_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("MESH_REPLAY_SPEED", "-3")
    with pytest.raises(ConfigError) as error:
        load_settings()
    message = str(error.value)
    assert "MESH_REPLAY_SPEED" in message and "greater than 0" in message and "\n" not in message


def test_settings_precedence_defaults_file_env(tmp_path, monkeypatch):
    config = tmp_path / "mesh.toml"
    config.write_text('replay_speed = 3.5\nstrategies = ["macd"]\nport_base = 9000\n')
    monkeypatch.setenv("MESH_CONFIG", str(config))
    monkeypatch.setenv("MESH_PORT_BASE", "9100")
    settings = load_settings()
    assert settings.replay_speed == 3.5 and settings.strategies == ["macd"]  # file over default
    assert settings.port_base == 9100  # environment over file
    monkeypatch.setenv("MESH_STRATEGIES", "momentum, macd")
    assert load_settings().strategies == ["momentum", "macd"]
    monkeypatch.setenv("MESH_STRATEGIES", "momentum,yolo")
    with pytest.raises(ConfigError, match="MESH_STRATEGIES.*unknown strategy 'yolo'"):
        load_settings()


def test_service_exits_with_config_error(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "MESH_HOME": str(tmp_path), "MESH_ORDER_PCT": "0.5"}
    result = subprocess.run([sys.executable, "-m", "meshtrader.services.feed"], env=env, capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "MESH_ORDER_PCT 0.5 exceeds MESH_MAX_ORDER_PCT" in result.stderr


def test_meshes_with_different_home_and_ports_do_not_clash(tmp_path):
    a = load_settings(home=tmp_path / "a", port_base=20000)
    b = load_settings(home=tmp_path / "b", port_base=20100)
    assert a.endpoint("feed.pub") != b.endpoint("feed.pub")
    assert a.http_port("executor") != b.http_port("executor") and a.redis_prefix != b.redis_prefix
    tcp = load_settings(transport="tcp", port_base=20000)
    assert tcp.endpoint("risk.rep").startswith("tcp://127.0.0.1:")


def test_committed_supervisord_conf_is_the_rendered_one():
    expected = render(load_settings(), default_paths(), with_redis=True)
    assert (REPO_ROOT / "supervisord.conf").read_text() == expected, "run `make conf` after changing programs"


# ----- money -----------------------------------------------------------------------------------------
def test_prices_fees_and_quantities_are_exact():
    btc = instrument("BTCUSDT")
    assert to_decimal(95505.4) == D("95505.4")
    assert slipped_price("buy", D("95500.0"), D("5"), btc) == D("95547.8")  # 95547.75 rounded up
    assert slipped_price("sell", D("95500.0"), D("5"), btc) == D("95452.2")  # 95452.25 rounded down
    assert fee(D("0.052") * D("95547.8"), D("0.001")) == D("4.96848560")
    assert btc.floor_qty(D("0.0529999")) == D("0.052")


def test_portfolio_reconciles_to_the_last_digit():
    book = Portfolio()
    book.fund("m", D("50000"))
    spent = D("0.052") * D("95547.8") + D("4.96848560")
    book.apply_fill("m", "BTCUSDT", "buy", D("0.052"), D("95547.8"), D("4.96848560"))
    assert book.accounts["m"].cash == D("50000") - spent
    book.mark("BTCUSDT", D("96000.1"))
    assert book.equity("m") == book.accounts["m"].cash + D("0.052") * D("96000.1")
    realized = book.apply_fill("m", "BTCUSDT", "sell", D("0.052"), D("96000.1"), D("4.99200520"))
    assert realized == D("0.052") * D("96000.1") - D("4.99200520") - spent
    assert book.equity("m") == book.accounts["m"].cash == D("50000") + realized
    with pytest.raises(AccountingError):
        book.apply_fill("m", "BTCUSDT", "sell", D("0.001"), D("1"), D("0"))
    with pytest.raises(AccountingError):
        book.apply_fill("m", "BTCUSDT", "buy", D("100"), D("96000"), D("0"))


def test_buy_sizing_respects_cash_and_exchange_minimums():
    book = Portfolio()
    book.fund("m", D("1000"))
    account = book.accounts["m"]
    qty, _ = size_buy(account, D("1000"), D("95000"), D("0.2"), D("0.001"), instrument("BTCUSDT"))
    assert qty == D("0.002")
    qty, why = size_buy(account, D("1000"), D("95000"), D("0.05"), D("0.001"), instrument("BTCUSDT"))
    assert qty == 0 and "too small" in why


def test_equal_weights_add_up_to_one():
    for n in range(1, 8):
        weights = equal_weights([f"s{i}" for i in range(n)])
        assert sum(weights.values()) == 1


# ----- risk ------------------------------------------------------------------------------------------
LIMITS = Limits(D("0.20"), D("0.80"), 2, D("0.05"), D("0.10"))


def order(**changes) -> ApproveOrder:
    base = dict(request_id="r", strategy="m", symbol="BTCUSDT", side="buy", qty=D("0.05"), price=D("100000"),
                reduces=False, opens_position=True, strategy_equity=D("50000"), strategy_open_positions=0,
                portfolio_equity=D("100000"), portfolio_exposure=D("0"), event_time=1_746_372_780_000)
    return ApproveOrder(**{**base, **changes})


def test_an_order_within_limits_is_approved():
    verdict = evaluate(order(), RiskBook(), LIMITS)
    assert verdict.approved and verdict.rule == "within_limits"


@pytest.mark.parametrize("changes, rule", [
    ({"qty": D("0.11")}, "max_order_size"),                                  # 11,000 > 20% of 50,000
    ({"strategy_open_positions": 2}, "max_positions"),
    ({"portfolio_exposure": D("76000")}, "max_exposure"),                    # 76,000 + 5,000 > 80,000
    ({"portfolio_open_positions": 10}, "max_open_positions"),
    ({"qty": D("0.0505")}, "precision"),                                     # BTCUSDT steps of 0.001
    ({"price": D("100000.05")}, "precision"),                                # ticks of 0.1
    ({"qty": D("0.001"), "price": D("90000")}, "min_order_size"),             # 90 < 100 USDT notional
    ({"stop_price": D("89000")}, "risk_per_trade"),                          # 550 at risk > 1% of 50,000
    ({"stop_price": D("99500"), "position_qty": D("0.01")}, "max_position_size"),  # 6,000 > 10% of 50,000
    ({"strategy_kelly": 0.05}, "kelly_cap"),                                 # 5,000 > 1 x 0.05 x 50,000
])
def test_each_limit_trips(changes, rule):
    limits = Limits(D("0.20"), D("0.80"), 2, D("0.05"), D("0.10"), kelly_multiple=D("1"))
    verdict = evaluate(order(**changes), RiskBook(), limits)
    assert not verdict.approved and verdict.rule == rule and verdict.reason


def test_entries_per_day_are_counted_and_exits_still_pass():
    limits = Limits(D("0.20"), D("0.80"), 2, D("0.05"), D("0.10"), max_trades_per_day=2)
    book = RiskBook()
    assert [judge(book, order(), limits)[0].rule for _ in range(3)] == ["within_limits"] * 2 + ["max_trades_per_day"]
    assert judge(book, order(reduces=True, opens_position=False), limits)[0].approved
    assert judge(book, order(event_time=1_746_372_780_000 + 86_400_000), limits)[0].approved  # a new UTC day


def test_portfolio_drawdown_turns_the_kill_switch_on():
    book = RiskBook()
    book.observe(1, D("100000"), {}, LIMITS)
    book.observe(2, D("110000"), {}, LIMITS)
    assert not book.observe(3, D("99500"), {}, LIMITS)
    changes = book.observe(4, D("98900"), {}, LIMITS)  # 10.1% under the 110,000 peak
    assert changes[0][0] == "portfolio_drawdown" and book.kill_switch and book.trading_state == "HALTED"
    assert "below its peak" in RiskBook.from_json(book.to_json()).state_reason()


def test_daily_loss_halts_until_the_next_utc_day():
    book = RiskBook()
    day = 1_746_316_800_000  # 2025-05-04 00:00 UTC
    book.observe(day + 1000, D("100000"), {}, LIMITS)
    changes = book.observe(day + 3_600_000, D("94999"), {}, LIMITS)
    assert changes[0][0] == "daily_loss" and book.trading_state == "HALTED"
    assert evaluate(order(event_time=day + 3_600_000, portfolio_equity=D("94999")), book, LIMITS).rule == "daily_loss"
    assert not evaluate(order(reduces=True, event_time=day + 3_600_000), book, LIMITS).approved
    book.observe(day + 86_400_000, D("94999"), {}, LIMITS)
    assert book.trading_state == "ACTIVE"


def test_strategy_drawdown_deactivates_but_lets_it_exit():
    book = RiskBook()
    book.observe(1, D("100000"), {"m": D("50000")}, LIMITS)
    book.observe(2, D("100000"), {"m": D("55000")}, LIMITS)
    book.observe(3, D("100000"), {"m": D("49400")}, LIMITS)  # 10.2% below the 55,000 peak
    assert "m" in book.deactivated
    assert evaluate(order(strategy_equity=D("49400")), book, LIMITS).rule == "strategy_drawdown"
    assert evaluate(order(reduces=True), book, LIMITS).approved


def test_kill_switch_stops_everything_and_book_survives_json():
    book = RiskBook(kill_switch=True)
    assert evaluate(order(reduces=True), book, LIMITS).rule == "kill_switch"
    assert RiskBook.from_json(book.to_json()) == book


# ----- store -----------------------------------------------------------------------------------------
def test_schema_is_created_once_and_signal_ids_are_unique(tmp_path):
    store = Store(tmp_path / "s.db")
    Store(tmp_path / "s.db").close()  # a second service opening the same file migrates nothing
    assert store.scalar("PRAGMA user_version") == SCHEMA_VERSION
    assert store.scalar("PRAGMA journal_mode") == "wal"
    tables = {r[0] for r in store.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables >= {"candles", "signals", "orders", "trades", "positions", "strategy_performance", "allocations",
                      "risk_events", "agent_events", "fork_tracking", "market_regimes", "pr_events"}
    row = ("o1", "sig-1", "m", "BTCUSDT", "buy", "1", "1", "FILLED", "", 0, "", 0.0)
    store.execute("INSERT INTO orders(" + ORDER_BASICS + ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row)
    with pytest.raises(Exception, match="UNIQUE"):
        store.execute("INSERT INTO orders(" + ORDER_BASICS + ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", ("o2", *row[1:]))
    store.close()


# ----- strategies and data ---------------------------------------------------------------------------
def bundled_candles(symbol: str, n: int) -> list[Candle]:
    bars, rejected = load_bars(find_candle_file(REPO_ROOT / "data", symbol))
    assert not rejected
    return [Candle(symbol=symbol, tf="1m", open_time=b.open_time, open=b.open, high=b.high, low=b.low,
                   close=b.close, volume=b.volume, et=b.open_time + 60_000) for b in bars[:n]]


@pytest.mark.parametrize("name", ["momentum", "macd"])
def test_strategies_are_deterministic_and_trade_the_bundled_data(name):
    candles = bundled_candles("BTCUSDT", 3000)
    runs = []
    for _ in range(2):
        strategy = create(name, "BTCUSDT")
        runs.append([(c.open_time, d.side) for c in candles if (d := strategy.decide(c))])
    assert runs[0] == runs[1] and len(runs[0]) > 10
    assert {side for _, side in runs[0]} == {"buy", "sell"}


def test_bad_strategy_parameters_fail_clearly():
    with pytest.raises(ParameterError, match="momentum: invalid parameters.*fast"):
        create("momentum", "BTCUSDT", {"fast": 30, "slow": 20})
    with pytest.raises(ParameterError, match="unknown strategy"):
        create("astrology", "BTCUSDT")


def test_bad_candles_are_rejected_with_a_reason(tmp_path):
    assert candle_problem(Bar(2, 10, 9, 8, 9.5, 1), None) == "high below open, close or low"
    assert candle_problem(Bar(2, 10, 11, 10.5, 9.5, 1), None) == "low above open or close"
    assert candle_problem(Bar(2, 10, 11, 9, 10, -1), None) == "negative volume"
    assert candle_problem(Bar(2, 10, 11, 9, float("nan"), 1), None) == "NaN or infinite value"
    assert candle_problem(Bar(2, 10, 11, 9, 10, 1), 2) == "duplicate"
    path = tmp_path / "x_BTCUSDT_1m_test.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("timestamp_ms,open,high,low,close,volume\n60000,1,2,0.5,1.5,3\nbad,row\n"
                     "60000,1,2,0.5,1.5,3\n120000,1,0.9,0.5,1.5,3\n180000,1,2,0.5,1.5,3\n")
    bars, rejected = load_bars(find_candle_file(tmp_path, "BTCUSDT"))
    assert [b.open_time for b in bars] == [60000, 180000]
    assert len(rejected) == 3 and "duplicate" in rejected[1]


def test_bundled_data_ships_with_provenance():
    assert (REPO_ROOT / "data" / "PROVENANCE.md").exists()
    assert len(list(Path(REPO_ROOT / "data").glob("*_1m_*.csv.gz"))) == 2


def test_readme_documents_every_setting_and_both_commands():
    from meshtrader.runtime.config import Settings

    readme = (REPO_ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    missing = [name for name in Settings.model_fields if f"`MESH_{name.upper()}`" not in readme]
    assert not missing, f"README lacks settings: {missing}"


def test_candles_built_from_trades_have_no_holes():
    from meshtrader.domain.candles import CandleBuilder, Trade

    builder = CandleBuilder(60_000)
    closed = []
    for t in (Trade(1_000, 10.0, 1), Trade(30_000, 12.0, 2), Trade(59_999, 9.0, 1), Trade(185_000, 11.0, 1)):
        closed += builder.add(t)
    assert closed == [Bar(0, 10.0, 12.0, 9.0, 9.0, 4.0), Bar(60_000, 9.0, 9.0, 9.0, 9.0, 0.0),
                      Bar(120_000, 9.0, 9.0, 9.0, 9.0, 0.0)]
    assert builder.current[0] == 180_000


@pytest.mark.parametrize("exchange_id", ["binance", "kraken", "coinbase"])
def test_any_ccxt_exchange_can_be_pointed_at_a_local_url(exchange_id):
    import zmq

    from meshtrader.marketdata.live import LiveMarketData
    from meshtrader.runtime.log import Logger

    live = LiveMarketData(exchange_id, "http://127.0.0.1:9", ["BTCUSDT"], "1m", "inproc://x", zmq.Context.instance(),
                          Logger("t", "ERROR"), lambda *_: None)
    exchange = live.exchange()
    urls = []

    def collect(value):
        if isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, str) and "://" in value:
            urls.append(value)

    collect(exchange.urls["api"])
    assert urls and all("//127.0.0.1:9/" in u for u in urls)
    assert exchange.has.get("watchOHLCV") or exchange.has.get("fetchOHLCV")  # stream, or the REST fallback


def test_vectorized_sweep_finds_the_event_paths_trades():
    import numpy as np

    from meshtrader.research.backtest import Backtester
    from meshtrader.research.sweep import sweep_sma_cross

    bars = load_bars(find_candle_file(REPO_ROOT / "data", "BTCUSDT"))[0][:6000]
    settings = load_settings(max_order_pct=1, daily_loss_pct=1, strategy_drawdown_pct=1)
    for fast, slow in ((5, 20), (10, 30), (20, 60)):
        report = Backtester({"sma_cross": {"fast": fast, "slow": slow}}, ["BTCUSDT"], settings).run({"BTCUSDT": bars})
        swept = sweep_sma_cross(np.array([b.close for b in bars]), [fast], [slow])[0]
        closes_at = [b.open_time + 60_000 for b in bars]
        assert [closes_at[i] for i in swept.entries] == [f.event_time for f in report.fills if f.side == "buy"]
        assert [closes_at[i] for i in swept.exits] == [f.event_time for f in report.fills if f.side == "sell"]
        assert swept.trades == report.trades > 10


def test_backtest_cli_is_deterministic_and_plots(tmp_path):
    import json as json_module

    command = [sys.executable, "-m", "meshtrader", "backtest", "--strategy", "breakout", "--symbol", "ETHUSDT",
               "--from", "2025-05-10", "--to", "2025-05-11", "--json"]
    first = subprocess.run(command + ["--plot", str(tmp_path / "eq.png")], capture_output=True, text=True,
                           cwd=REPO_ROOT, timeout=120)
    second = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    one, two = json_module.loads(first.stdout), json_module.loads(second.stdout)
    assert set(one) >= {"bars", "trades", "roi", "sharpe", "max_drawdown", "win_rate", "fees"}
    assert one["bars"] == 1440 and one["trades"] > 0
    for volatile in ("seconds", "bars_per_s", "plot"):
        one.pop(volatile, None)
        two.pop(volatile, None)
    assert one == two, "same input, same output"
    assert (tmp_path / "eq.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, "-m", "meshtrader", "backtest", "--strategy", "macd", "--params",
                          '{"fast": 0}'], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert bad.returncode == 2 and "fast" in bad.stderr and "Traceback" not in bad.stderr


def test_readme_lists_every_strategy():
    from meshtrader.strategies import builtin

    readme = (REPO_ROOT / "README.md").read_text()  # strategy files loaded by other tests are not the package's
    assert not [name for name in builtin() if name != "bench" and f"| `{name}` |" not in readme]


def test_volume_aware_slippage_grows_with_the_share_of_the_bar():
    from meshtrader.domain.money import FeeModel
    from meshtrader.execution.planning import OrderRules, plan_order

    book = Portfolio()
    book.fund("m", D("50000"))
    book.mark("BTCUSDT", D("95000.0"))
    fixed = OrderRules(D("0.10"), FeeModel(D("0.001"), D("0.0002")), D("5"))
    impact = OrderRules(D("0.10"), FeeModel(D("0.001"), D("0.0002")), D("5"), impact_bp=D("100"))
    base = plan_order(book, "m", "BTCUSDT", "buy", fixed, bar_volume=1.0)
    thin = plan_order(book, "m", "BTCUSDT", "buy", impact, bar_volume=0.5)    # 0.052 of 0.5: ~32 bp more
    deep = plan_order(book, "m", "BTCUSDT", "buy", impact, bar_volume=5000.0)  # a sliver: ~0.3 bp more
    assert base.price == D("95047.5") and deep.price < thin.price and base.price <= deep.price
    assert thin.qty * thin.price + fee(thin.qty * thin.price, D("0.001")) <= D("50000")


def test_takers_and_makers_pay_their_own_fee():
    from dataclasses import replace

    from meshtrader.domain.money import MAKER, TAKER
    from meshtrader.execution.planning import OrderRules, plan_order

    book = Portfolio()
    book.fund("m", D("50000"))
    book.mark("BTCUSDT", D("95000.0"))
    rules = OrderRules.from_settings(load_settings(taker_fee_bp=5, maker_fee_bp=2))
    market = plan_order(book, "m", "BTCUSDT", "buy", rules)
    assert market.liquidity == TAKER and rules.fees.fee(market.qty * market.price, market.liquidity) == fee(market.qty * market.price, D("0.0005"))
    resting = replace(market, liquidity=MAKER)
    assert rules.fees.fee(resting.qty * resting.price, resting.liquidity) == fee(market.qty * market.price, D("0.0002"))


def test_a_version_1_store_is_upgraded_in_place(tmp_path):
    import sqlite3

    from meshtrader.persistence.store import MIGRATIONS

    old = sqlite3.connect(tmp_path / "v1.db")
    old.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
    old.execute("INSERT INTO orders VALUES ('o1','s1','m','BTCUSDT','buy','1','1','FILLED','',0,'',0)")
    old.execute("INSERT INTO trades(trade_id, order_id, strategy, symbol, side, qty, price, fee, realized_pnl, "
                "created_at) VALUES ('t1','o1','m','BTCUSDT','buy','1','1','0.0005','0',0)")
    old.commit()
    old.close()
    store = Store(tmp_path / "v1.db")
    assert store.scalar("PRAGMA user_version") == SCHEMA_VERSION
    assert [dict(r)["liquidity"] for r in store.trades()] == ["taker"]  # fills made before maker fees: takers
    store.close()


def test_resampling_keeps_only_whole_periods():
    from meshtrader.domain.candles import resample

    minutes = [Bar(t * 60_000, 10 + t, 20 + t, 5 + t, 11 + t, 1.0) for t in range(2, 13)]  # 00:02 .. 00:12
    five = resample(minutes, 300_000)
    assert [b.open_time for b in five] == [300_000]  # 00:00 lacks its first bars but closes; 00:10 is unfinished
    assert five[0] == Bar(300_000, 15, 29, 10, 20, 5.0)


def test_sqlite_fork_is_a_consistent_clone_of_one_snapshot(tmp_path):
    from meshtrader.forks.backends import SqliteForks

    live = Store(tmp_path / "mesh.db")
    live.insert_many("pr_events", ("kind", "title", "created_at"), [("k", "t", 1.0)])
    (tmp_path / "forks").mkdir()
    backend = SqliteForks(tmp_path / "mesh.db", tmp_path / "forks", golden_max_age_s=60)
    first, second = backend.create("fork-a"), backend.create("fork-b")
    assert first.details["snapshot_ms"] > 0 and second.details["snapshot_ms"] == 0  # the golden snapshot is reused
    for fork in (first, second):
        assert fork.details["method"] in ("reflink", "copy_file_range", "copy")
        forked = Store(fork.location, read_only=True)
        assert forked.scalar("PRAGMA integrity_check") == "ok" and forked.scalar("SELECT COUNT(*) FROM pr_events") == 1
        forked.close()
    (tmp_path / "forks" / "fork-stray.db").write_bytes(b"x")
    assert backend.orphans({first.location, second.location}) == [str(tmp_path / "forks" / "fork-stray.db")]
    backend.destroy(first.location)
    assert not Path(first.location).exists() and Path(second.location).exists()
    live.close()


def test_regimes_from_synthetic_markets():
    import math
    import random

    from meshtrader.domain.regime import (
        HIGH_VOL_RANGE,
        LOW_VOL_CONSOLIDATION,
        TRENDING_BEAR,
        TRENDING_BULL,
        RegimeDetector,
        RegimeRules,
    )

    def run(prices: list[float], twin: bool = False):
        detector = RegimeDetector("AAA", "BBB", RegimeRules(window=60, adx_period=14, slope_bars=20))
        reading = None
        for i, price in enumerate(prices):
            for symbol in ("AAA", "BBB") if twin else ("AAA",):
                bar = Candle(symbol=symbol, tf="1m", open_time=i * 60_000, open=price, high=price * 1.0005,
                             low=price * 0.9995, close=price, volume=10.0, et=(i + 1) * 60_000)
                reading = detector.update(bar) or reading
        return reading

    rng = random.Random(7)
    assert run([100 * 1.002 ** i for i in range(300)]).regime == TRENDING_BULL
    assert run([100 * 0.998 ** i for i in range(300)]).regime == TRENDING_BEAR
    assert run([100 + 0.01 * math.sin(i) + rng.gauss(0, 0.01) for i in range(300)]).regime == LOW_VOL_CONSOLIDATION
    choppy = run([100 * (1 + 0.01 * (-1) ** i) + rng.gauss(0, 0.3) for i in range(300)], twin=True)
    assert choppy.regime == HIGH_VOL_RANGE and choppy.correlation == pytest.approx(1.0)


def test_performance_weights_are_bounded_and_exact():
    from meshtrader.domain.allocation import meaningful_change, performance_weights

    weights = performance_weights({"a": 3.0, "b": 1.0, "c": -2.0}, D("0.05"), D("0.6"))
    assert sum(weights.values()) == 1 and weights["a"] <= D("0.6") and weights["c"] >= D("0.05")
    assert weights["a"] > weights["b"] > weights["c"]
    scaled = performance_weights({"a": -189.0, "b": -213.0}, D("0.05"), D("0.95"))
    assert D("0.6") < scaled["a"] < D("0.95"), "a scale-free split, not winner-takes-all"
    losers = performance_weights({"a": -1.0, "b": -3.0}, D("0.05"), D("0.9"))
    assert sum(losers.values()) == 1 and losers["a"] > losers["b"] >= D("0.05")
    assert performance_weights({"a": 0.5, "b": 0.5}, D("0.05"), D("0.9")) == {"a": D("0.5"), "b": D("0.5")}
    assert not meaningful_change(weights, {**weights}, D("0.02"))
    assert meaningful_change(weights, {"a": D("0.5"), "b": D("0.45"), "c": D("0.05")}, D("0.02"))


def test_rebalance_moves_free_cash_only_and_nets_to_zero():
    from meshtrader.domain.portfolio import rebalance_transfers

    book = Portfolio()
    book.fund("a", D("50000"))
    book.fund("b", D("50000"))
    book.mark("BTCUSDT", D("100000"))
    book.apply_fill("a", "BTCUSDT", "buy", D("0.4"), D("100000"), D("40"))  # a: 9,960 cash + 40,000 BTC
    moves = rebalance_transfers(book, {"a": D("0.2"), "b": D("0.8")})
    assert sum(moves.values()) == 0 and moves["a"] == -book.accounts["a"].cash  # only free cash moves
    before = book.equity()
    for strategy, amount in moves.items():
        book.fund(strategy, amount)
    assert book.equity() == before
    assert rebalance_transfers(book, {"a": D("0.2"), "b": D("0.8")}) == {}  # nothing left to give


def test_meta_allocator_inputs():
    from meshtrader.domain.allocation import (
        blend_windows,
        correlation_penalties,
        exposure_correlations,
        kelly_capped,
        kelly_fraction,
    )

    # Windows on different scales count by their standardised scores, the recent window most.
    blended = blend_windows([{"a": -200.0, "b": -100.0}, {"a": 5.0, "b": 1.0}], [0.7, 0.3])
    assert blended["b"] > blended["a"] and blended["a"] + blended["b"] == pytest.approx(0)
    assert kelly_fraction(0.5, 2.0) == pytest.approx(0.25) and kelly_fraction(0.4, 0.8) < 0
    capped, bound = kelly_capped({"a": D("0.6"), "b": D("0.3"), "c": D("0.1")}, {"a": D("0.25")}, D("0.05"), D("0.6"))
    assert bound == ["a"] and capped["a"] == D("0.25") and sum(capped.values()) == 1
    assert capped["b"] / capped["c"] == pytest.approx(3, rel=0.01)  # the freed share goes pro rata
    everyone = {"a": D("0.5"), "b": D("0.5")}
    assert kelly_capped(everyone, {"a": D("0"), "b": D("0")}, D("0.05"), D("0.6")) == (everyone, [])
    together = exposure_correlations({"a": [0, 1, 1, 0, 1, 1], "b": [0, 1, 1, 0, 1, 1], "c": [1, 0, 0, 1, 0, 0]})
    assert together[("a", "b")] == pytest.approx(1) and together[("a", "c")] == pytest.approx(-1)
    penalties = correlation_penalties({"a": 1.0, "b": 0.5, "c": 0.0}, together, 0.7)
    assert penalties == {"a": 0.0, "b": pytest.approx(1.0), "c": 0.0}  # the weaker of the twins pays


def test_a_deactivated_strategy_can_be_reactivated():
    book, limits = RiskBook(), Limits.from_settings(load_settings())
    book.observe(1, D("100000"), {"m": D("1.0")}, limits)
    changes = book.observe(2, D("100000"), {"m": D("0.85")}, limits)
    assert [rule for rule, _ in changes] == ["strategy_drawdown"] and "m" in book.deactivated
    assert book.reactivate("m", "validation: ROI 1.2%")[0][0] == "strategy_reactivated"
    assert not book.observe(3, D("100000"), {"m": D("0.85")}, limits)  # its drawdown counts afresh
    assert book.reactivate("m", "again") == []


@pytest.fixture(scope="module")
def candle_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("opt") / "candles.db"
    store = Store(path)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        store.insert_candles(bundled_candles(symbol, 3000))
    store.close()
    return str(path)


def test_walk_forward_optimisation_same_in_one_or_two_processes(candle_db):
    from meshtrader.research.optimize import optimize, parameter_sets, split_in_time

    sets = parameter_sets("macd", samples=10, seed=3)
    assert len(sets) == 10 and sets == parameter_sets("macd", samples=10, seed=3)
    assert all(p["fast"] < p["slow"] for p in parameter_sets("sma_cross"))  # invalid combinations left out
    bars = {"BTCUSDT": [Bar(t, 1, 1, 1, 1, 1) for t in range(10)]}
    early, late = split_in_time(bars, 0.7)
    assert len(early["BTCUSDT"]) == 7 and late["BTCUSDT"][0].open_time == 7
    settings = load_settings()
    first = 1_746_316_800_000
    runs = [optimize("macd", None, candle_db, ["BTCUSDT", "ETHUSDT"], settings, first, first + 3000 * 60_000,
                     samples=8, workers=workers) for workers in (1, 2)]
    serial, parallel = (r.summary() for r in runs)
    for noisy in ("seconds", "workers"):
        serial.pop(noisy), parallel.pop(noisy)
    assert serial == parallel
    assert serial["trials"] == 8 and serial["bars_in_sample"] > 2 * serial["bars_out_of_sample"] > 0
    assert serial["adopt"] == (serial["best_out_of_sample"] is not None and serial["best_params"] != serial[
        "live_params"] and (serial["live_out_of_sample"] is None or
                            serial["best_out_of_sample"] > serial["live_out_of_sample"]))
    assert "walk-forward by sharpe" in serial["reason"]


def test_store_urls_never_show_a_password(tmp_path, monkeypatch):
    from meshtrader.runtime.redaction import redact, unredact

    url = "postgresql://mesh:s3cret@db.internal:5432/mesh"
    assert redact(url) == "postgresql://mesh:***@db.internal:5432/mesh" and redact("/var/mesh.db") == "/var/mesh.db"
    assert unredact(redact(url) + "#snapshot=00000003-1", url) == url + "#snapshot=00000003-1"
    with pytest.raises(ConfigError) as error:
        load_settings(db_url="mysql://mesh:s3cret@db/mesh")
    assert "s3cret" not in str(error.value) and "postgresql://" in str(error.value)
    config = tmp_path / "mesh.toml"
    config.write_text(f'db_url = "{url}"\n')
    monkeypatch.setenv("MESH_CONFIG", str(config))
    with pytest.raises(ConfigError, match="only from the environment"):
        load_settings()


def test_the_order_state_machine_refuses_what_it_does_not_allow():
    from meshtrader.domain.orders import InvalidTransition, Order, OrderStatus

    order = Order("mt1", D("0.3"))
    order.move(OrderStatus.SUBMITTED)
    order.move(OrderStatus.ACCEPTED)
    order.move(OrderStatus.PARTIALLY_FILLED, "1 of 3", D("0.1"))
    order.move(OrderStatus.PARTIALLY_FILLED, "2 of 3", D("0.2"))
    done = order.move(OrderStatus.FILLED, "3 of 3", D("0.3"))
    assert done.seq == 5 and order.done and [t.after for t in order.history][-1] == "FILLED"
    for bad in (lambda: order.move(OrderStatus.CANCELED),                                # terminal
                lambda: Order("mt2", D("1")).move(OrderStatus.FILLED, filled_qty=D("1")),  # NEW cannot fill
                lambda: Order("mt3", D("1"), OrderStatus.ACCEPTED).move(OrderStatus.FILLED, filled_qty=D("0.5")),
                lambda: Order("mt4", D("1"), OrderStatus.ACCEPTED, D("0.5")).move(
                    OrderStatus.PARTIALLY_FILLED, filled_qty=D("0.4"))):                # fills never go back
        with pytest.raises(InvalidTransition):
            bad()
    assert Order("mt5", D("1")).history == []


def test_exchange_fills_book_exactly_whatever_asset_the_fee_is_in():
    """Binance charges a buy's commission in the asset bought: the books hold what arrived, and cash
    moves by exactly what the exchange moved it by."""
    from meshtrader.domain.orders import Order, OrderStatus
    from meshtrader.execution.engine import end_state
    from meshtrader.venues.ccxt_venue import as_booked

    price, amount = D("60000.00"), D("0.00200")
    for side, charged, asset in (("buy", D("0.000002"), "BTC"), ("sell", D("0.000002"), "BTC"),
                             ("buy", D("0.06"), "USDT")):
        fill = as_booked("7", side, amount, price, charged, asset, "BTC", "USDT")
        book = Portfolio()
        book.fund("s", D("1000"))
        if side == "sell":
            book.apply_fill("s", "BTCUSDT", "buy", D("0.01"), price, D(0))
        position = book.accounts["s"].positions.get("BTCUSDT")
        cash_before, held_before = book.accounts["s"].cash, position.qty if position else D(0)
        book.apply_fill("s", "BTCUSDT", side, fill.qty, fill.price, fill.fee)
        sign = -1 if side == "buy" else 1
        quote_fee = charged if asset == "USDT" else D(0)
        base_fee = charged if asset == "BTC" else D(0)
        assert book.accounts["s"].cash - cash_before == sign * amount * price - quote_fee
        held = book.accounts["s"].positions["BTCUSDT"].qty - held_before
        assert held == -sign * amount - base_fee
    third = as_booked("8", "buy", amount, price, D("0.0001"), "BNB", "BTC", "USDT")
    assert third.fee == 0 and third.qty == amount and "BNB" in third.note
    accepted = Order("mt1", D("1"), OrderStatus.ACCEPTED)
    assert end_state(accepted, "canceled") == OrderStatus.CANCELED
    assert end_state(accepted, "rejected") == OrderStatus.EXPIRED  # not allowed from ACCEPTED: never forced


def test_walking_the_book_takes_levels_in_order_within_cash_and_lots():
    from meshtrader.venues.matching import walk_book

    spec = instrument("BTCUSDT")  # step 0.001
    asks = [(100000.0, 0.0105), (100010.0, 0.02), (100020.0, 1.0)]
    walk = walk_book(asks, D("0.05"), spec)
    assert walk.fills == [(D("0.0105"), D("100000.0")), (D("0.02"), D("100010.0")), (D("0.0195"), D("100020.0"))]
    assert walk.filled == D("0.05") and D(0) < walk.slippage_bp("buy", D("100000")) < D("2")
    thin = walk_book(asks[:2], D("0.05"), spec)  # 0.0305 on offer: whole lots only, the rest unfilled
    assert thin.filled == D("0.030") and thin.fills[-1] == (D("0.0195"), D("100010.0"))
    budget = D("2000")
    poor = walk_book(asks, D("0.05"), spec, budget, D("0.0005"))
    assert poor.filled == D("0.019")
    assert sum(q * p + fee(q * p, D("0.0005")) for q, p in poor.fills) <= budget
    assert walk_book([], D("1"), spec).fills == []


def test_alerts_are_rate_limited_and_deduplicated():
    from meshtrader.runtime.alerts import Alert, RateLimit

    limit = RateLimit(per_minute=3, repeat_s=300)
    allowed = [limit.allow(Alert("warning", f"t{i}", "", "s"), now=i) for i in range(5)]
    assert allowed == [True, True, True, False, False]
    assert limit.allow(Alert("warning", "t9", "", "s"), now=61)  # the window moved on
    assert not limit.allow(Alert("warning", "t9", "", "s"), now=200)  # the same title again: held back


def test_fill_models_and_the_slippage_tolerance():
    from dataclasses import replace

    from meshtrader.domain.money import FeeModel
    from meshtrader.execution.planning import OrderRules, plan_order, slippage_problem

    book = Portfolio()
    book.fund("m", D("50000"))
    book.mark("BTCUSDT", D("95000.0"))
    fixed = OrderRules(D("0.10"), FeeModel(D("0.0005"), D("0.0002")), D("5"), impact_bp=D("100"))
    instant = replace(fixed, fill_model="instant")
    assert plan_order(book, "m", "BTCUSDT", "buy", instant, bar_volume=0.5).price == D("95000.0")
    thin = plan_order(book, "m", "BTCUSDT", "buy", fixed, bar_volume=0.5)  # ~0.05 BTC of a 0.5 BTC bar
    assert thin.slippage_bp > 30 and slippage_problem(thin, fixed) is None  # within the default 50 bp
    strict = replace(fixed, max_slippage_bp=D("10"))
    assert "tolerance" in slippage_problem(thin, strict)
    book.apply_fill("m", "BTCUSDT", "buy", D("0.01"), D("95000"), D("0"))
    assert slippage_problem(plan_order(book, "m", "BTCUSDT", "sell", strict, bar_volume=0.001), strict) is None


def test_reconciliation_says_where_books_and_exchange_disagree():
    from meshtrader.execution.reconciliation import reconcile

    problems, notes = reconcile(D("1000.00"), {"BTC": D("0.010")}, {"USDT": D("1000.005"), "BTC": D("0.010"),
                                                                   "ETH": D("1")}, [], set(), D("0.01"))
    assert problems == [] and notes == []  # within tolerance; an asset the books do not trade is not theirs
    problems, notes = reconcile(D("1000.00"), {"BTC": D("0.010"), "ETH": D("0")},
                                {"USDT": D("990"), "BTC": D("0.012")}, ["mt1", "mt9"], {"mt1"}, D("0.01"))
    assert problems == ["USDT: the exchange holds 990, the books 1000.00",
                        "open orders at the exchange the store does not know: mt9"]
    assert notes == ["BTC: the exchange holds 0.012, 0.002 more than the books manage"]
    from meshtrader.execution.venue import UnbookedFill

    ours = UnbookedFill("mt7", "5000009", "BTCUSDT", "buy", D("0.001"), D("95000"))
    manual = UnbookedFill("web_1", "5000010", "BTCUSDT", "sell", D("0.002"), D("95010"))
    problems, notes = reconcile(D("1000"), {}, {"USDT": D("1000")}, [], set(), D("0.01"), [ours, manual], {"mt7"})
    assert problems == ["fills at the exchange missing from the store: trade 5000009 of order mt7 (BTCUSDT buy "
                        "0.001 at 95000)"]
    assert notes == ["1 recent fills of orders the mesh did not place, e.g. trade 5000010 of order web_1 (BTCUSDT "
                     "sell 0.002 at 95010)"]
