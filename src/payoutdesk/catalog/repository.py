"""SQL for the catalog: campaigns, partners, event types, disposition codes, contracts, clicks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Row, Table, and_, insert, select

from payoutdesk.models import (
    campaigns,
    clicks,
    contract_payouts,
    contracts,
    disposition_codes,
    event_types,
    partners,
)


def owned(conn: Connection, table: Table, account_id: int, row_id: int) -> Row[Any] | None:
    """A row of ``table`` if it belongs to the account (other accounts' rows do not exist)."""
    return conn.execute(
        select(table).where(table.c.id == row_id, table.c.account_id == account_id)
    ).first()


def insert_row(conn: Connection, table: Table, **values: Any) -> int:
    pk = conn.execute(insert(table).values(**values)).inserted_primary_key
    assert pk is not None
    return int(pk[0])


def list_rows(conn: Connection, table: Table, account_id: int, **filters: Any) -> list[Row[Any]]:
    stmt = select(table).where(table.c.account_id == account_id)
    for name, value in filters.items():
        if value is not None:
            stmt = stmt.where(table.c[name] == value)
    return list(conn.execute(stmt.order_by(table.c.id)))


def by_name(conn: Connection, table: Table, account_id: int) -> list[Row[Any]]:
    """The account's rows of ``table`` (campaigns, partners ...) in name order, as a drop-down lists them."""
    return sorted(list_rows(conn, table, account_id), key=lambda r: (r.name.lower(), r.id))


def campaign_by_token(conn: Connection, token: str) -> Row[Any] | None:
    return conn.execute(select(campaigns).where(campaigns.c.returns_token == token)).first()


def codes_of(conn: Connection, event_type_id: int) -> list[Row[Any]]:
    return list(
        conn.execute(
            select(disposition_codes)
            .where(disposition_codes.c.event_type_id == event_type_id)
            .order_by(disposition_codes.c.code)
        )
    )


def code_of(conn: Connection, event_type_id: int, code: str) -> Row[Any] | None:
    return conn.execute(
        select(disposition_codes).where(
            disposition_codes.c.event_type_id == event_type_id, disposition_codes.c.code == code
        )
    ).first()


def replace_codes(conn: Connection, event_type_id: int, codes: list[dict[str, str]]) -> None:
    conn.execute(disposition_codes.delete().where(disposition_codes.c.event_type_id == event_type_id))
    if codes:
        conn.execute(insert(disposition_codes), [{"event_type_id": event_type_id, **c} for c in codes])


def contract_payout_rows(conn: Connection, contract_id: int) -> list[Row[Any]]:
    return list(
        conn.execute(
            select(contract_payouts)
            .where(contract_payouts.c.contract_id == contract_id)
            .order_by(contract_payouts.c.event_type_id)
        )
    )


def contract_in_force(conn: Connection, campaign_id: int, partner_id: int, on: date) -> Row[Any] | None:
    """The newest contract of the partner in the campaign that started on or before ``on``."""
    return conn.execute(
        select(contracts)
        .where(
            contracts.c.campaign_id == campaign_id,
            contracts.c.partner_id == partner_id,
            contracts.c.starts_on <= on,
        )
        .order_by(contracts.c.starts_on.desc(), contracts.c.id.desc())
        .limit(1)
    ).first()


def contract_payout(conn: Connection, contract_id: int, event_type_id: int) -> Row[Any] | None:
    return conn.execute(
        select(contract_payouts).where(
            and_(contract_payouts.c.contract_id == contract_id, contract_payouts.c.event_type_id == event_type_id)
        )
    ).first()


def widest_referral_window(conn: Connection, campaign_id: int) -> int | None:
    """The longest referral window (days) of the campaign's contracts; None when it has none."""
    from sqlalchemy import func

    value = conn.execute(select(func.max(contracts.c.referral_window_days))
                         .where(contracts.c.campaign_id == campaign_id)).scalar()
    return None if value is None else int(value)


def clicks_between(conn: Connection, campaign_id: int, customer_id: str, since: datetime,
                   until: datetime) -> Iterator[Any]:
    """The customer's clicks in the campaign from ``since`` to ``until`` (both included), newest first:
    one range of ``ix_clicks_customer``, read as the caller goes."""
    result = conn.execute(
        select(clicks.c.id, clicks.c.partner_id, clicks.c.clicked_at)
        .where(
            clicks.c.campaign_id == campaign_id,
            clicks.c.customer_id == customer_id,
            clicks.c.clicked_at >= since,
            clicks.c.clicked_at <= until,
        )
        .order_by(clicks.c.clicked_at.desc(), clicks.c.id.desc())
    )
    try:
        yield from result
    finally:
        result.close()


def names_of(conn: Connection, table: Table, ids: set[int]) -> dict[int, str]:
    """The names of these rows of ``table`` (campaigns, partners, event types), by id; missing ids are left out."""
    if not ids:
        return {}
    return {int(r.id): str(r.name) for r in conn.execute(select(table.c.id, table.c.name).where(table.c.id.in_(ids)))}


__all__ = ["event_types", "partners"]


def page_rows(conn: Connection, table: Table, account_id: int, offset: int, limit: int) -> tuple[int, list[Row[Any]]]:
    """How many rows of ``table`` the account has, and one page of them by id from row ``offset`` on
    (api/compat_reads.py: impact.com's Page/PageSize lists of campaigns and partners)."""
    from sqlalchemy import func

    total = int(conn.execute(select(func.count()).select_from(table).where(table.c.account_id == account_id))
                .scalar_one())
    rows = list(conn.execute(select(table).where(table.c.account_id == account_id).order_by(table.c.id)
                             .offset(offset).limit(limit)))
    return total, rows


def contracts_of_partners(conn: Connection, account_id: int, partner_ids: set[int]) -> list[Row[Any]]:
    """The contracts of these partners of the account (id, partner, campaign, start), oldest start first."""
    if not partner_ids:
        return []
    c = contracts.c
    return list(conn.execute(
        select(c.id, c.partner_id, c.campaign_id, c.starts_on)
        .where(c.account_id == account_id, c.partner_id.in_(partner_ids))
        .order_by(c.starts_on, c.id)))
