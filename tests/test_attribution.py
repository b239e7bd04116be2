"""R13 attribution: the customer's latest click before the event among the clicks whose partner's contract,
in force on the event date, has a referral window covering the event."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payoutdesk.catalog import service as catalog
from payoutdesk.errors import NotAttributable
from payoutdesk.kit import db
from payoutdesk.ledger import service as ledger
from tests.helpers import World

EVENT = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
_customers = itertools.count()


def customer() -> str:
    return f"cust-{next(_customers)}"


def click(w: World, partner: int, cust: str, at: datetime) -> int:
    with db.write(w.engine) as conn:
        return int(catalog.record_click(conn, w.actor, {"campaign_id": w.campaign_id, "partner_id": partner,
                                                        "customer_id": cust, "clicked_at": at.isoformat()})["id"])


def contract(w: World, partner: int, starts_on: date, window: int, *, pays_sale: bool = True) -> int:
    payout: list[dict[str, Any]] = [{"event_type_id": w.lead, "fixed": "1.00"}]
    if pays_sale:
        payout.append({"event_type_id": w.sale, "percent": "5"})
    with db.write(w.engine) as conn:
        return catalog.create_contract(conn, w.actor, {
            "campaign_id": w.campaign_id, "partner_id": partner, "starts_on": starts_on, "payout": payout,
            "referral_window_days": window})


def decide(w: World, cust: str, at: datetime = EVENT) -> catalog.Attribution:
    with db.read(w.engine) as conn:
        return catalog.attribute_click(conn, w.campaign_id, w.sale, cust, at)


def test_window_edges(world: World) -> None:
    """The window is inclusive at both ends: a click exactly ``referral_window_days`` before the event
    credits it, one a second older does not; a click at the event's very instant counts, one after it
    does not."""
    a = world.partners[0]  # window 30 days (tests.helpers.make_world)
    at_edge, past_edge = customer(), customer()
    edge_click = click(world, a, at_edge, EVENT - timedelta(days=30))
    click(world, a, past_edge, EVENT - timedelta(days=30, seconds=1))
    d = decide(world, at_edge)
    assert (d.click_id, d.partner_id, d.contract_id) == (edge_click, a, world.contract_id)
    with pytest.raises(NotAttributable):
        decide(world, past_edge)
    same_instant, later = customer(), customer()
    c = click(world, a, same_instant, EVENT)
    assert decide(world, same_instant).click_id == c
    click(world, a, later, EVENT + timedelta(seconds=1))
    with pytest.raises(NotAttributable):
        decide(world, later)


def test_older_click_inside_its_window_beats_newer_outside_its_own(world: World) -> None:
    a, b = world.partners[0], world.partners[1]
    b_contract = contract(world, b, date(2026, 1, 1), window=2)  # B's window: 2 days
    cust = customer()
    a_click = click(world, a, cust, EVENT - timedelta(days=10))  # inside A's 30 days
    click(world, b, cust, EVENT - timedelta(days=5))  # newer, but outside B's 2 days
    d = decide(world, cust)
    assert (d.click_id, d.partner_id) == (a_click, a)
    # a newer click of B inside its window wins again
    b_click = click(world, b, cust, EVENT - timedelta(days=1))
    d = decide(world, cust)
    assert (d.click_id, d.partner_id, d.contract_id) == (b_click, b, b_contract)


def test_history_records_the_decision(world: World) -> None:
    a = world.partners[2]
    cust = customer()
    c = click(world, a, cust, EVENT - timedelta(days=3))
    with db.write(world.engine) as conn:
        aid = ledger.record_conversion(conn, world.actor, {"event_type_id": world.sale, "order_id": "attr-1",
                                                           "customer_id": cust, "amount": "10.00",
                                                           "event_date": EVENT.isoformat()})
    with db.read(world.engine) as conn:
        action = ledger.get_action(conn, world.account_id, aid)
    created = action["updates"][0]
    assert created["kind"] == "CREATED" and action["partner_id"] == a
    assert created["note"].startswith(f"attributed to click {c} ")
    assert f"(partner {a}, contract {action['contract_id']})" in created["note"]
    # credited by partner_id: no attribution, no note
    with db.write(world.engine) as conn:
        aid = ledger.record_conversion(conn, world.actor, {"event_type_id": world.sale, "order_id": "attr-2",
                                                           "partner_id": a, "amount": "10.00",
                                                           "event_date": EVENT.isoformat()})
        assert ledger.get_action(conn, world.account_id, aid)["updates"][0]["note"] is None


def test_contracts_that_change_between_the_clicks(world: World) -> None:
    """The contract in force on the event date decides, whatever was in force when the click was made."""
    a, b = world.partners[0], world.partners[1]
    contract(world, b, date(2026, 1, 1), window=2)  # B: 2 days ...
    long_b = contract(world, b, date(2026, 11, 15), window=60)  # ... then 60 days from 15 November
    cust = customer()
    a_click = click(world, a, cust, EVENT - timedelta(days=20))
    b_click = click(world, b, cust, EVENT - timedelta(days=10))  # made under B's 2-day contract
    d = decide(world, cust)
    assert (d.click_id, d.partner_id, d.contract_id) == (b_click, b, long_b)
    # an event before 15 November falls under B's 2-day contract: A's older click wins
    before = datetime(2026, 11, 14, 10, 0, tzinfo=UTC)
    assert decide(world, cust, before).click_id == a_click
    # a contract that does not pay for the event type does not count: A's new contract pays leads only
    contract(world, a, date(2026, 11, 16), window=60, pays_sale=False)
    cust2 = customer()
    click(world, a, cust2, EVENT - timedelta(days=1))
    older_b = click(world, b, cust2, EVENT - timedelta(days=50))
    assert decide(world, cust2).click_id == older_b


def test_not_attributable_through_the_api(world: World) -> None:
    cust = customer()
    click(world, world.partners[0], cust, EVENT - timedelta(days=31))
    with db.write(world.engine) as conn, pytest.raises(NotAttributable) as err:
        ledger.record_conversion(conn, world.actor, {"event_type_id": world.sale, "order_id": "attr-3",
                                                     "customer_id": cust, "amount": "1.00",
                                                     "event_date": EVENT.isoformat()})
    assert err.value.code == "not_attributable" and err.value.status == 422


WINDOWS = (3, 10, 30)


def reference(clicks: list[tuple[int, int, int]], windows: dict[int, int]) -> int | None:
    """The model: clicks (click id, partner, seconds before the event); the newest qualifying click's id
    (the larger id first among clicks of the same instant)."""
    ok = [(-secs, cid) for cid, p, secs in clicks if 0 <= secs <= windows[p] * 86_400]
    return max(ok)[1] if ok else None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from([-3600, 0, 1, 3 * 86_400, 3 * 86_400 + 1,
                                                               10 * 86_400, 29 * 86_400, 30 * 86_400,
                                                               30 * 86_400 + 1, 40 * 86_400])
                          | st.integers(-86_400, 40 * 86_400)), max_size=8))
def test_attribution_matches_the_model(world: World, spec: list[tuple[int, int]]) -> None:
    windows = {}
    if not getattr(world, "_windows_set", False):
        for p, wdays in zip(world.partners, WINDOWS, strict=True):
            contract(world, p, date(2026, 1, 1), window=wdays)
        world._windows_set = True  # type: ignore[attr-defined]
    windows = dict(zip(world.partners, WINDOWS, strict=True))
    cust = customer()
    made = [(click(world, world.partners[i], cust, EVENT - timedelta(seconds=secs)), world.partners[i], secs)
            for i, secs in spec]
    expected = reference(made, windows)
    if expected is None:
        with pytest.raises(NotAttributable):
            decide(world, cust)
    else:
        assert decide(world, cust).click_id == expected
