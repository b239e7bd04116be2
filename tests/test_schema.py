"""The migrations build exactly the schema that models/tables.py describes, on both backends."""

from __future__ import annotations

import warnings
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from payoutdesk.models import metadata


def _diff(engine: Engine) -> list[Any]:
    with warnings.catch_warnings():
        # expression indexes (the event day) cannot be reflected: alembic skips them with a warning
        warnings.simplefilter("ignore")
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    # an index that the models create on the other backend only (``ddl_if``) is not a difference
    return [d for d in diff if not (d[0] == "add_index" and d[1].name.startswith("ix_actions_event_day"))]


def test_migrations_match_the_models(engine: Engine) -> None:
    assert _diff(engine) == []


def test_history_has_no_foreign_key(engine: Engine) -> None:
    """Migration 0003: the history rows' action_id is checked by the service, not by the database."""
    with engine.connect() as conn:
        fks = inspect(conn).get_foreign_keys("action_updates")
        indexes = {ix["name"] for ix in inspect(conn).get_indexes("action_updates")}
    assert fks == []
    assert "ix_action_updates_action" in indexes


def test_actions_leave_room_for_hot_updates(engine: Engine) -> None:
    """Migration 0004: on PostgreSQL, actions and their items keep 15 % of each page free."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        options = dict(conn.exec_driver_sql(
            "SELECT relname, array_to_string(reloptions, ',') FROM pg_class "
            "WHERE relname IN ('actions', 'action_items')").all())
    assert options == {"actions": "fillfactor=85", "action_items": "fillfactor=85"}
