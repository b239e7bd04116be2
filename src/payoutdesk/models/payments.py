"""Payments recorded against what is owed to partners (payments/service.py, migration 0010)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Date, ForeignKey, Index, Integer, String, Table

from payoutdesk.models.tables import metadata
from payoutdesk.models.types import BigId, UTCDateTime

payments = Table(
    "payments",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("partner_id", Integer, ForeignKey("partners.id"), nullable=False),
    Column("clearing_date", Date, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),  # minor units of ``currency``
    Column("reference", String(200), nullable=True),
    Column("actor", String(320), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_payments_partner", "account_id", "partner_id", "clearing_date"),
)
