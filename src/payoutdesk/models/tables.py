"""The schema. Money columns are integers in the currency's minor unit; times are UTC."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    cast,
    func,
    literal_column,
    text,
)

from payoutdesk.models.types import BigId, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sid", String(40), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False),  # sha256 hex of the auth token
    Column("alert_email", String(320), nullable=True),  # where failures of the intake channels are mailed
    Column("created_at", UTCDateTime, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

web_sessions = Table(
    "web_sessions",  # the pages' sign-ins (web/session.py): the cookie holds a random token, this its hash
    metadata,
    Column("id", BigId, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("csrf_token", String(64), nullable=False),  # the token every form of this sign-in carries
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("ftp_username", String(64), nullable=False, unique=True),
    Column("ftp_password_hash", String(200), nullable=False),
    Column("returns_token", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

partners = Table(
    "partners",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

event_types = Table(
    "event_types",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("campaign_id", Integer, ForeignKey("campaigns.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("locking", String(20), nullable=False),  # contract | open_ended
    Column("returns_mode", String(20), nullable=False, server_default="manual"),
    Column("returns_settings", Text, nullable=False, server_default="{}"),  # JSON, secrets encrypted
    # the unguessable part of the Salesforce Outbound Message address (outbound_url)
    Column("outbound_token", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("uq_event_types_outbound_token", "outbound_token", unique=True),
)

disposition_codes = Table(
    "disposition_codes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("event_type_id", Integer, ForeignKey("event_types.id"), nullable=False),
    Column("code", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("operation", String(20), nullable=False),  # approve | reverse | modify
    UniqueConstraint("event_type_id", "code", name="uq_disposition_codes_event_type_code"),
)

contracts = Table(
    "contracts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("campaign_id", Integer, ForeignKey("campaigns.id"), nullable=False),
    Column("partner_id", Integer, ForeignKey("partners.id"), nullable=False),
    Column("starts_on", Date, nullable=False),
    Column("lock_months", Integer, nullable=False),
    Column("lock_days", Integer, nullable=False),
    Column("pay_months", Integer, nullable=False),
    Column("pay_days", Integer, nullable=False),
    Column("referral_window_days", Integer, nullable=False),
    Column("category_rates", Text, nullable=False, server_default="{}"),  # JSON {category: ppm}
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_contracts_lookup", "campaign_id", "partner_id", "starts_on"),
)

contract_payouts = Table(
    "contract_payouts",
    metadata,
    Column("contract_id", Integer, ForeignKey("contracts.id"), primary_key=True),
    Column("event_type_id", Integer, ForeignKey("event_types.id"), primary_key=True),
    Column("rate_ppm", Integer, nullable=True),
    Column("fixed_minor", BigInteger, nullable=True),
)

clicks = Table(
    "clicks",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("campaign_id", Integer, ForeignKey("campaigns.id"), nullable=False),
    Column("partner_id", Integer, ForeignKey("partners.id"), nullable=False),
    Column("customer_id", String(200), nullable=False),
    Column("clicked_at", UTCDateTime, nullable=False),
    Index("ix_clicks_customer", "campaign_id", "customer_id", "clicked_at"),
)

actions = Table(
    "actions",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("campaign_id", Integer, ForeignKey("campaigns.id"), nullable=False),
    Column("event_type_id", Integer, ForeignKey("event_types.id"), nullable=False),
    Column("partner_id", Integer, ForeignKey("partners.id"), nullable=False),
    Column("contract_id", Integer, ForeignKey("contracts.id"), nullable=False),
    Column("order_id", String(200), nullable=False),
    Column("customer_id", String(200), nullable=True),
    Column("promo_code", String(200), nullable=True),
    Column("event_date", UTCDateTime, nullable=False),
    Column("state", String(10), nullable=False),
    Column("reason", String(64), nullable=True),  # the reversal reason while REVERSED
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("payout", BigInteger, nullable=False),
    Column("intended_amount", BigInteger, nullable=False),
    Column("intended_payout", BigInteger, nullable=False),
    Column("locking_date", Date, nullable=True),  # null for open-ended locking
    Column("lock_due", Date, nullable=False),  # when the lock run locks it (R2)
    Column("locked_at", UTCDateTime, nullable=True),
    Column("version", Integer, nullable=False),
    Column("update_count", Integer, nullable=False),
    Column("restore", Text, nullable=True),  # JSON [[quantity, amount], ...] while REVERSED
    Column("created_at", UTCDateTime, nullable=False),
    # keyset paging is newest first (id desc) inside every filter
    Index("ix_actions_account_id", "account_id", "id"),
    Index("ix_actions_state", "account_id", "state", "id"),
    Index("ix_actions_campaign", "account_id", "campaign_id", "id"),
    Index("ix_actions_partner", "account_id", "partner_id", "id"),
    Index("ix_actions_event_type_order", "event_type_id", "order_id", "id"),
    Index("ix_actions_order", "account_id", "order_id", "id"),
    # the event date by UTC day is indexed as an expression, per backend (see EVENT_DAY below)
    Index("ix_actions_locking_date", "account_id", "locking_date", "id"),
    # the locking-date sorts of the list with a partner, event type or state filter (migration 0012):
    # neither column is one a change of an action's amount or payout writes (HOT updates, 0004)
    Index("ix_actions_partner_locking", "account_id", "partner_id", "locking_date", "id"),
    Index("ix_actions_event_type_locking", "account_id", "event_type_id", "locking_date", "id"),
    Index("ix_actions_state_locking", "account_id", "state", "locking_date", "id"),
    # the list's promo code and reversal reason filters (migration 0013); partial: most actions have
    # neither, and a reversal, which sets the reason, changes the state and its index anyway
    Index("ix_actions_promo", "account_id", "promo_code", "id", sqlite_where=text("promo_code IS NOT NULL"),
          postgresql_where=text("promo_code IS NOT NULL")),
    Index("ix_actions_reason", "account_id", "reason", "id", sqlite_where=text("reason IS NOT NULL"),
          postgresql_where=text("reason IS NOT NULL")),
    Index(
        "ix_actions_lock_due_open",
        "lock_due",
        "id",
        sqlite_where=text("locked_at IS NULL"),
        postgresql_where=text("locked_at IS NULL"),
    ),
    # room on each page for HOT updates of a changed action (migration 0004)
    postgresql_with={"fillfactor": 85},
)

# The UTC day of an action's event, as the list's per-day plan asks for it (ledger.repository):
# the expression must be written exactly like this for the indexes below to serve it.
EVENT_DAY_SQLITE = func.date(actions.c.event_date)  # stored as naive UTC text
EVENT_DAY_POSTGRESQL = cast(func.timezone(literal_column("'UTC'"), actions.c.event_date), Date)
Index("ix_actions_event_day", actions.c.account_id, EVENT_DAY_SQLITE, actions.c.id).ddl_if(dialect="sqlite")
Index("ix_actions_event_day_pg", actions.c.account_id, EVENT_DAY_POSTGRESQL, actions.c.id).ddl_if(
    dialect="postgresql"
)

action_items = Table(
    "action_items",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("action_id", BigInteger, ForeignKey("actions.id"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("sku", String(200), nullable=False),
    Column("name", String(300), nullable=True),
    Column("category", String(200), nullable=True),
    Column("quantity", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("payout", BigInteger, nullable=False),
    Column("intended_quantity", Integer, nullable=False),
    Column("intended_amount", BigInteger, nullable=False),
    Column("intended_payout", BigInteger, nullable=False),
    UniqueConstraint("action_id", "position", name="uq_action_items_action_position"),
    postgresql_with={"fillfactor": 85},  # migration 0004
)

action_updates = Table(
    "action_updates",
    metadata,
    Column("id", BigId, primary_key=True),
    # no FOREIGN KEY (migration 0003): actions are never deleted and only the ledger writes history,
    # for an action it has just read or changed; the per-row check was a tenth of a lock run
    Column("action_id", BigInteger, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(10), nullable=False),
    Column("state", String(10), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("note", Text, nullable=True),
    Column("delta_amount", BigInteger, nullable=False),
    Column("delta_payout", BigInteger, nullable=False),
    Column("items", Text, nullable=True),  # JSON of the items as they are after the change
    Column("channel", String(12), nullable=False),
    Column("submission_id", BigInteger, nullable=True),
    Column("actor", String(320), nullable=True),
    Index("ix_action_updates_action", "action_id", "id"),
    # impact.com's StartDate/EndDate (the last update) of GET /Actions (api/compat.py): the changes of a
    # time window, on the append-only history rather than on ``actions`` (whose every change would then
    # rewrite an index entry and lose its HOT update); a lock is no change there, so LOCKED rows (a lock
    # run writes millions) are left out of the index (migration 0008)
    Index("ix_action_updates_at", "at", "action_id", sqlite_where=text("kind <> 'LOCKED'"),
          postgresql_where=text("kind <> 'LOCKED'")),
    # its companion, the LOCKED rows alone: the compatible ActionUpdates list (locks included) reads a time
    # window, or the rows after a next page's position, as one range of each index (migration 0011)
    Index("ix_action_updates_locked_at", "at", "action_id", sqlite_where=text("kind = 'LOCKED'"),
          postgresql_where=text("kind = 'LOCKED'")),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("account_id", "key", name="uq_idempotency_keys_account_key"),
)

