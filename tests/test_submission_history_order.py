"""The history a submission writes keeps the file's order, across actions too.

The engine writes a chunk's history rows in action order (repository.Bulk.insert_updates) with the
ids they would get row by row; undo relies on that order (``updates_of_submission`` lists the
actions in the order the submission first changed them), so the ids must follow the file, not the
action ids, whatever the chunk size.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, select

from payoutdesk.kit import db
from payoutdesk.models import action_updates
from payoutdesk.submissions import engine as sub_engine
from payoutdesk.submissions import repository as repo
from payoutdesk.worker.runner import claim
from tests.conftest import only_on
from tests.helpers import World, conversion


@pytest.mark.parametrize(("chunk", "batch"), [(1, None), (2, None), (4, None), (1000, None), (4, 1), (1000, 3)])
def test_history_ids_follow_the_file_across_actions(api: TestClient, world: World, engine: Engine, chunk: int,
                                                    batch: int | None) -> None:
    a1, a2, a3, a4 = (conversion(world, f"O-{n}", "100.00") for n in range(1, 5))
    amounts = ["90.00", "80.00", "70.00", "60.00", "50.00", "40.00", "30.00"]
    order = [a4, a2, a2, a1, a3, a2, a4]  # descending ids first, an action several times, straddling chunks
    rows = [{"ActionId": aid, "Amount": amount, "Reason": "ORDER_UPDATE", "Note": f"row {n}"}
            for n, (aid, amount) in enumerate(zip(order, amounts, strict=True), 1)]
    r = api.post("/api/v1/submissions", headers=world.auth, json={"campaign_id": world.campaign_id, "rows": rows})
    assert r.status_code == 202, r.text
    sid = int(r.json()["id"][2:])
    assert claim(engine, sid, "order-worker")
    done = sub_engine.process(engine, sid, "order-worker", chunk=chunk, batch=batch)
    assert done.status == "COMPLETE" and done.applied == len(rows)
    with db.read(engine) as conn:
        written = conn.execute(
            select(action_updates.c.id, action_updates.c.action_id, action_updates.c.note)
            .where(action_updates.c.submission_id == sid).order_by(action_updates.c.id)
        ).all()
        first_changed = repo.updates_of_submission(conn, sid)
    assert [u.action_id for u in written] == order
    assert [u.note for u in written] == [f"row {n}" for n in range(1, len(rows) + 1)]
    assert len({u.id for u in written}) == len(rows)
    assert first_changed == [a4, a2, a1, a3]
    # undo walks the actions in that order: row N of the undo is the N-th action the file changed first
    r = api.post(f"/api/v1/submissions/A-{sid}/undo", headers=world.auth)
    assert r.status_code in (200, 202), r.text
    undo_id = int(r.json()["id"][2:])
    assert claim(engine, undo_id, "order-worker")
    undone = sub_engine.process(engine, undo_id, "order-worker", chunk=chunk, batch=batch)
    assert undone.status == "COMPLETE" and undone.applied == 4
    with db.read(engine) as conn:
        results = repo.results(conn, undo_id, errors_only=False, after_row=0, limit=10)
    assert [res.action_id for res in results] == [a4, a2, a1, a3]
    assert all(res.amount_after == 10_000 for res in results)


@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_chunk_retried_after_a_lost_race_reads_its_rows_again(
    api: TestClient, world: World, engine: Engine, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """A chunk of several batches is one transaction: when its first or second batch finds an action changed
    meanwhile (StaleVersion), the whole chunk is rolled back and tried again from its first row, which
    the engine reads again from the file; every row applies exactly once. (A failure in the first batch
    once went on from the row after that batch, so its rows were never applied.)"""
    from payoutdesk.errors import StaleVersion

    ids = [conversion(world, f"R-{n}", "100.00") for n in range(6)]
    rows = [{"ActionId": aid, "Amount": f"{50 + n}.00", "Reason": "ORDER_UPDATE"} for n, aid in enumerate(ids)]
    rows += [{"ActionId": ids[0], "Amount": "10.00", "Reason": "ORDER_UPDATE"}]  # again, in a later batch
    r = api.post("/api/v1/submissions", headers=world.auth, json={"campaign_id": world.campaign_id, "rows": rows})
    assert r.status_code == 202, r.text
    sid = int(r.json()["id"][2:])
    real = repo.Bulk.write_actions
    calls = {"n": 0}

    def flaky(self: repo.Bulk, rows: object, items: object) -> None:
        calls["n"] += 1
        if calls["n"] == fail_at:  # the first or second batch of the first attempt
            raise StaleVersion("an action of this chunk changed meanwhile; the chunk is retried")
        real(self, rows, items)  # type: ignore[arg-type]

    monkeypatch.setattr(repo.Bulk, "write_actions", flaky)
    assert claim(engine, sid, "order-worker")
    seen: list[tuple[int, int]] = []
    done = sub_engine.process(engine, sid, "order-worker", chunk=5, batch=2,
                              progress=lambda n, total: seen.append((n, total)))
    assert calls["n"] == fail_at + 3 + 1  # the failed batches, then the chunk again (three batches), the rest
    assert (done.status, done.processed_records, done.applied, done.errors) == ("COMPLETE", 7, 7, 0)
    with db.read(engine) as conn:
        written = conn.execute(select(action_updates.c.action_id, action_updates.c.delta_amount)
                               .where(action_updates.c.submission_id == sid).order_by(action_updates.c.id)).all()
        results = repo.results(conn, sid, errors_only=False, after_row=0, limit=10)
    assert [u.action_id for u in written] == [*ids, ids[0]]
    assert [u.delta_amount for u in written] == [-5000, -4900, -4800, -4700, -4600, -4500, -4000]
    assert [res.row_no for res in results] == list(range(1, 8))
    assert seen[-1] == (7, 7)


def test_a_chunk_ends_early_once_its_time_is_up(
    api: TestClient, world: World, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk ends after the batch that finishes its time (CHUNK_SECONDS) past its start, whatever its
    row count, so that other writers never wait long for the database; every row still applies once."""
    ids = [conversion(world, f"T-{n}", "100.00") for n in range(4)]
    rows = [{"ActionId": ids[n % 4], "Amount": f"{50 + n}.00", "Reason": "ORDER_UPDATE"} for n in range(7)]
    r = api.post("/api/v1/submissions", headers=world.auth, json={"campaign_id": world.campaign_id, "rows": rows})
    assert r.status_code == 202, r.text
    sid = int(r.json()["id"][2:])
    recorded: list[int] = []
    real = repo.advance

    def spy(conn: Connection, submission_id: int, worker: str, start: int, values: dict[str, Any]) -> None:
        if "processed_records" in values:
            recorded.append(values["processed_records"])
        real(conn, submission_id, worker, start, values)

    monkeypatch.setattr(repo, "advance", spy)
    assert claim(engine, sid, "order-worker")
    done = sub_engine.process(engine, sid, "order-worker", chunk=1000, batch=2, chunk_seconds=0)
    assert recorded == [2, 4, 6, 7]  # one transaction per batch: each was past its time
    assert (done.status, done.applied, done.errors) == ("COMPLETE", 7, 0)
    with db.read(engine) as conn:
        written = conn.execute(select(action_updates.c.action_id).where(action_updates.c.submission_id == sid)
                               .order_by(action_updates.c.id)).scalars().all()
    assert written == [ids[n % 4] for n in range(7)]


@only_on("postgresql")  # on SQLite the write transaction excludes other writers
def test_a_change_made_between_the_unlocked_read_and_the_write_sends_the_chunk_round_again_locked(
    api: TestClient, world: World, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk's first try reads its actions without locking them; a change committed by another
    transaction after that read makes the version-checked write refuse the chunk, which is rolled back and
    read again, this time FOR UPDATE, and applied once over the changed action (PostgreSQL: on SQLite the
    write transaction shuts other writers out, so no change can come in between)."""
    ids = [conversion(world, f"L-{n}", "100.00") for n in range(4)]
    rows = [{"ActionId": aid, "Amount": f"{60 + n}.00", "Reason": "ORDER_UPDATE"} for n, aid in enumerate(ids)]
    r = api.post("/api/v1/submissions", headers=world.auth, json={"campaign_id": world.campaign_id, "rows": rows})
    assert r.status_code == 202, r.text
    sid = int(r.json()["id"][2:])
    real = repo.Bulk.load
    locks: list[bool] = []

    def load_then_change(self: repo.Bulk, account_id: int, campaign_id: int, ids_: Any, *,
                          for_update: bool) -> Any:
        got = real(self, account_id, campaign_id, ids_, for_update=for_update)
        locks.append(for_update)
        if len(locks) == 1:  # another transaction commits a change to one of them meanwhile
            changed = api.post(f"/api/v1/actions/{ids[2]}/modify", headers=world.auth,
                               json={"amount": "90.00", "reason": "ITEM_RETURNED"})
            assert changed.status_code == 200, changed.text
        return got

    monkeypatch.setattr(repo.Bulk, "load", load_then_change)
    assert claim(engine, sid, "race-worker")
    done = sub_engine.process(engine, sid, "race-worker")
    assert locks == [False, True]
    assert (done.status, done.applied, done.errors) == ("COMPLETE", 4, 0)
    with db.read(engine) as conn:
        hist = conn.execute(select(action_updates.c.kind, action_updates.c.submission_id, action_updates.c.delta_amount)
                            .where(action_updates.c.action_id == ids[2]).order_by(action_updates.c.id)).all()
        results = repo.results(conn, sid, errors_only=False, after_row=0, limit=10)
    # the file's row applies over the API's change: 100.00 -> 90.00 (API) -> 62.00 (file)
    assert [(h.kind, h.submission_id, h.delta_amount) for h in hist] == [
        ("CREATED", None, 10_000), ("MODIFIED", None, -1_000), ("MODIFIED", sid, -2_800)]
    assert [(res.row_no, res.amount_before, res.amount_after) for res in results] == [
        (1, 10_000, 6_000), (2, 10_000, 6_100), (3, 9_000, 6_200), (4, 10_000, 6_300)]


def _one_batch_chunks_submission(api: TestClient, world: World, prefix: str) -> tuple[list[int], int]:
    """Seven rows over four actions, one of them in chunks 1, 2 and 4 (chunks of two rows)."""
    ids = [conversion(world, f"{prefix}-{n}", "100.00") for n in range(4)]
    order = [ids[0], ids[1], ids[0], ids[2], ids[3], ids[1], ids[0]]
    rows = [{"ActionId": aid, "Amount": f"{90 - 5 * n}.00", "Reason": "ORDER_UPDATE"} for n, aid in enumerate(order)]
    r = api.post("/api/v1/submissions", headers=world.auth, json={"campaign_id": world.campaign_id, "rows": rows})
    assert r.status_code == 202, r.text
    return order, int(r.json()["id"][2:])


@pytest.mark.parametrize("fail_at", [1, 2, 4])
def test_a_one_batch_chunk_that_lost_a_race_is_applied_again_locked(
    api: TestClient, world: World, engine: Engine, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """Chunks of one batch each (PostgreSQL's default shape): the chunk whose write loses a race, first,
    in the middle or last, rolls back alone and is applied again with its actions locked; the chunks after
    it go unlocked again; every row applies exactly once, each over the one before it on its action."""
    from payoutdesk.errors import StaleVersion

    order, sid = _one_batch_chunks_submission(api, world, f"P{fail_at}")
    real_write, real_load = repo.Bulk.write_actions, repo.Bulk.load
    writes = {"n": 0}
    locks: list[bool] = []

    def flaky(self: repo.Bulk, rows_: object, items: object) -> None:
        writes["n"] += 1
        if writes["n"] == fail_at:
            raise StaleVersion("an action of this chunk changed meanwhile; the chunk is retried")
        real_write(self, rows_, items)  # type: ignore[arg-type]

    def load(self: repo.Bulk, account_id: int, campaign_id: int, ids_: Any, *, for_update: bool) -> Any:
        locks.append(for_update)
        return real_load(self, account_id, campaign_id, ids_, for_update=for_update)

    monkeypatch.setattr(repo.Bulk, "write_actions", flaky)
    monkeypatch.setattr(repo.Bulk, "load", load)
    assert claim(engine, sid, "retry-worker")
    seen: list[int] = []
    done = sub_engine.process(engine, sid, "retry-worker", chunk=2, progress=lambda n, total: seen.append(n))
    assert (done.status, done.processed_records, done.applied, done.errors) == ("COMPLETE", 7, 7, 0)
    assert writes["n"] == 4 + 1  # four chunks, one of them twice
    assert seen == sorted(seen) and seen[-1] == 7
    assert locks == [False] * fail_at + [True] + [False] * (4 - fail_at)
    with db.read(engine) as conn:
        written = conn.execute(select(action_updates.c.action_id)
                               .where(action_updates.c.submission_id == sid).order_by(action_updates.c.id)).all()
        results = repo.results(conn, sid, errors_only=False, after_row=0, limit=10)
    assert [u.action_id for u in written] == order
    before: dict[int, int] = {}
    for n, (res, aid) in enumerate(zip(results, order, strict=True)):
        assert (res.row_no, res.outcome, res.action_id) == (n + 1, "applied", aid)
        assert res.amount_before == before.get(aid, 10_000)
        assert res.amount_after == 9_000 - 500 * n
        before[aid] = res.amount_after
