"""An entry asked of the risk guard again (a Lazy Pirate retry, a signal replayed by a second instance of its
strategy to an executor that restarted between the approval and its journal) counts once against the day's
entries, across a restart of the guard too; it is judged afresh each time."""
from __future__ import annotations

from decimal import Decimal

from meshtrader.domain.risk import REMEMBERED_ENTRIES, Limits, RiskBook, judge
from meshtrader.wire.messages import ApproveOrder

D = Decimal
LIMITS = Limits(D("0.20"), D("0.80"), 2, D("0.05"), D("0.10"), max_trades_per_day=2)
DAY = 1_746_372_780_000


def entry(request_id: str, **changes) -> ApproveOrder:
    base = dict(request_id=request_id, strategy="m", symbol="BTCUSDT", side="buy", qty=D("0.05"), price=D("100000"),
                reduces=False, opens_position=True, strategy_equity=D("50000"), strategy_open_positions=0,
                portfolio_equity=D("100000"), portfolio_exposure=D("0"), event_time=DAY)
    return ApproveOrder(**{**base, **changes})


def test_an_entry_asked_again_counts_once_and_keeps_its_own_place():
    book = RiskBook()
    assert [judge(book, entry("a"), LIMITS)[0].rule for _ in range(3)] == ["within_limits"] * 3
    assert book.entries_today == 1
    assert judge(book, entry("b"), LIMITS)[0].approved and book.entries_today == 2  # the day's last entry
    assert judge(book, entry("b"), LIMITS)[0].approved and book.entries_today == 2  # not refused by its own count
    assert judge(book, entry("c"), LIMITS)[0].rule == "max_trades_per_day"


def test_a_repeat_is_judged_afresh_and_a_refused_one_no_longer_counts():
    book = RiskBook()
    judge(book, entry("a"), LIMITS)
    book.kill_switch = True
    assert judge(book, entry("a"), LIMITS)[0].rule == "kill_switch"  # a repeat gets no approval past a halt
    assert book.entries_today == 0 and book.entry_ids == []
    book.kill_switch = False
    assert judge(book, entry("a"), LIMITS)[0].approved and book.entries_today == 1


def test_remembered_entries_survive_a_restart_and_a_new_day_starts_afresh():
    book = RiskBook()
    judge(book, entry("a"), LIMITS)
    restarted = RiskBook.from_json(book.to_json())
    judge(restarted, entry("a"), LIMITS)
    assert restarted.entries_today == 1
    judge(restarted, entry("a", event_time=DAY + 86_400_000), LIMITS)  # the next UTC day: its own first entry
    assert restarted.entries_today == 1 and restarted.entry_ids == ["a"]


def test_exits_are_never_remembered_and_the_memory_is_bounded():
    book = RiskBook()
    judge(book, entry("x", reduces=True, opens_position=False), LIMITS)
    assert book.entry_ids == []
    unlimited = Limits(D("0.20"), D("0.80"), 2, D("0.05"), D("0.10"), max_trades_per_day=10_000)
    for n in range(REMEMBERED_ENTRIES + 5):
        judge(book, entry(f"e{n}"), unlimited)
    assert len(book.entry_ids) == REMEMBERED_ENTRIES and book.entry_ids[-1] == f"e{REMEMBERED_ENTRIES + 4}"
    assert len(RiskBook.from_json(book.to_json()).entry_ids) == REMEMBERED_ENTRIES
