"""The file store (DESIGN §6, "Stored files" and "Files"): files in chunks of at most 1 MiB, streamed in
and out, never held whole by the worker; JSON batches read as a stream; retention of the original files;
the migration of the files kept before chunks. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Engine, bindparam, func, select, text

from payoutdesk.kit import db
from payoutdesk.kit.db import alembic_config, make_engine, migrate
from payoutdesk.kit.time import utcnow
from payoutdesk.models import stored_file_chunks, stored_files, submission_results, submissions
from payoutdesk.models.types import UTCDateTime
from payoutdesk.submissions import files, jsonrows
from payoutdesk.submissions import repository as repo
from payoutdesk.submissions import service as subs
from payoutdesk.worker import scheduler
from tests.helpers import World, conversion, drain, make_world

MiB = 1024 * 1024


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ from chunk to chunk (a misplaced chunk shows)."""
    out = bytearray()
    n = seed
    while len(out) < size:
        out += hashlib.sha256(str(n).encode()).digest() * 512
        n += 1
    return bytes(out[:size])


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def chunk_sizes(engine: Engine, file_id: int) -> list[int]:
    with engine.connect() as conn:
        return [int(r[0]) for r in conn.execute(
            select(func.length(stored_file_chunks.c.data)).where(stored_file_chunks.c.file_id == file_id)
            .order_by(stored_file_chunks.c.seq))]


def sub_row(engine: Engine, label: str) -> object:
    with engine.connect() as conn:
        row = repo.get(conn, subs.parse_id(label))
    assert row is not None
    return row


# --- the store ------------------------------------------------------------------------------------


def test_a_file_is_stored_in_chunks_of_at_most_1_mib_and_read_back_identically(engine: Engine) -> None:
    data = pattern(3 * MiB + 12_345)
    stored = files.store_stream(engine, pieces(data, 100_000))  # pieces of any size, cut into 1 MiB chunks
    assert (stored.size, stored.sha256, stored.chunks) == (len(data), hashlib.sha256(data).hexdigest(), 4)
    assert chunk_sizes(engine, stored.id) == [MiB, MiB, MiB, 12_345]
    assert b"".join(files.read_chunks(engine, stored)) == data
    with db.read(engine) as conn:
        blob = files.spool(conn, stored)
    with blob.open() as f:
        assert f.read() == data
    blob.close()
    assert files.discard(engine, stored.id)
    assert chunk_sizes(engine, stored.id) == []
    with engine.connect() as conn:
        assert conn.execute(select(stored_files).where(stored_files.c.id == stored.id)).first() is None


def test_a_file_over_the_limit_is_refused_while_it_streams_and_leaves_nothing(engine: Engine) -> None:
    seen = []

    def parts() -> Iterator[bytes]:
        for n in range(100):
            seen.append(n)
            yield b"x" * MiB

    with engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(stored_files)).scalar_one()
    with pytest.raises(subs.FileTooLarge, match="larger than the limit of 3 MB"):
        files.store_stream(engine, parts(), max_bytes=3 * MiB)
    assert len(seen) == 4  # stopped at the first chunk past the limit, not at the end of the stream
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(stored_files)).scalar_one() == before


def test_an_upload_is_stored_in_chunks_processed_and_downloaded_back(engine: Engine, world: World,
                                                                       api: TestClient) -> None:
    aid = conversion(world, "CHUNKED-1", "100.00")
    pad = "p" * 100_000
    lines = [f"{aid},80.00,ORDER_UPDATE,{pad}"] + [f"{10**12 + n},1.00,ORDER_UPDATE,{pad}" for n in range(45)]
    data = ("ActionId,Amount,Reason,Padding\n" + "\n".join(lines) + "\n").encode()
    assert len(data) > 4 * MiB
    r = api.post("/api/v1/submissions", headers=world.auth, files={"file": ("big.csv", data, "text/csv")},
                 data={"campaign_id": str(world.campaign_id)})
    assert r.status_code == 202, r.text
    row = sub_row(engine, r.json()["id"])
    assert chunk_sizes(engine, row.file_id) == [MiB] * 4 + [len(data) - 4 * MiB]  # type: ignore[attr-defined]
    got = api.get(f"/api/v1/submissions/{r.json()['id']}/file", headers=world.auth)
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-length"] == str(len(data))
    with engine.connect() as conn, pytest.raises(ValueError, match="more than"):
        repo.file_of(conn, row.id)  # type: ignore[attr-defined]  # no whole read of a large file
    drain(engine)
    done = api.get(f"/api/v1/submissions/{r.json()['id']}", headers=world.auth).json()
    assert (done["status"], done["total_records"], done["applied"], done["errors"]) == ("COMPLETE", 46, 1, 45)


def test_the_worker_never_holds_a_whole_file(fresh_engine: Engine, fresh_url: str, tmp_path: Path) -> None:
    """A 150 MB file of few rows (a wide ignored column): the worker's peak memory grows by far less than
    the file (the old worker read it whole, as one value: at least 150 MB)."""
    w = make_world(fresh_engine)
    pad = b"p" * 100_000
    rows = 1500

    def parts() -> Iterator[bytes]:
        yield b"ActionId,Reason,Padding\n"
        for n in range(rows):
            yield b"%d,APPROVED,%s\n" % (10**12 + n, pad)

    stored = files.store_stream(fresh_engine, parts())
    assert stored.size > 150 * 1_000_000
    with db.write(fresh_engine) as conn:
        sid = subs.parse_id(subs.create(conn, w.actor, w.campaign_id, stored, file_name="wide.csv",
                                        content_type="text/csv")["id"])
    child = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from payoutdesk.kit.db import make_engine
        from payoutdesk.submissions import engine as sub_engine
        from payoutdesk.worker.runner import claim
        def status(key):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        engine = make_engine({fresh_url!r})
        assert claim(engine, {sid}, "mem-worker")
        before = status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        final = sub_engine.process(engine, {sid}, "mem-worker")
        print(json.dumps({{"before": before, "peak": status("VmHWM"), "status": final.status,
                          "total": final.total_records, "errors": final.errors}}))
    """)
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=600, check=False,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert (got["status"], got["total"], got["errors"]) == ("COMPLETE", rows, rows)
    assert got["peak"] - got["before"] < 75, got


# --- JSON batches --------------------------------------------------------------------------------


def test_a_json_batch_is_stored_as_before_and_read_back_row_by_row(engine: Engine, world: World,
                                                                      api: TestClient) -> None:
    rows = [{"ActionId": 5, "Amount": 12.5, "Reason": "ORDER_UPDATE", "Note": "é\u2028"},
            {"ActionId": "6", "Amount": "1e5", "Reason": None, "x": [1, {"y": True}]}]
    r = api.post("/api/v1/submissions", headers=world.auth, json={"rows": rows, "campaign_id": world.campaign_id})
    assert r.status_code == 202, r.text
    stored = api.get(f"/api/v1/submissions/{r.json()['id']}/file", headers=world.auth).content
    # the stored form of a batch parsed whole (json.loads, then json.dumps of the rows)
    assert stored == json.dumps(rows, separators=(",", ":")).encode()
    assert list(jsonrows.stored_rows(io.BytesIO(stored))) == rows


@pytest.mark.parametrize(("body", "status", "code", "detail"), [
    (b'{"campaign_id": 1, "rows": [{"ActionId": 1}]', 400, "malformed_json", "not valid JSON"),
    (b'{"campaign_id": 1, "rows": []} trailing', 400, "malformed_json", "not valid JSON"),
    (b'{"campaign_id": 1, "rows": [{"ActionId": 123456789012345678901234567890}]}', 400, "malformed_json",
     "beyond 64 bits"),
    (b'[{"ActionId": 1}]', 422, "validation_error", "The body is an object {campaign_id, rows, dry_run?}."),
    (b'{"rows": [{}], "extra": {"deep": [1, 2]}, "more": 1, "campaign_id": "abc"}', 422, "validation_error",
     "extra, more: not a field of this request."),
    (b'{"rows": [{}], "campaign_id": "abc"}', 422, "validation_error", "campaign_id must be a whole number"),
    (b'{"rows": [{}], "campaign_id": 99999999999999}', 422, "validation_error", "campaign_id must be a whole number"),
    (b'{"rows": [{}]}', 422, "validation_error", "campaign_id is required"),
    (b'{"rows": [{}], "campaign_id": CID, "dry_run": "maybe"}', 422, "validation_error",
     "dry_run must be true or false, not 'maybe'."),
    (b'{"campaign_id": CID, "rows": {}}', 422, "validation_error", "rows must be a non-empty list"),
    (b'{"campaign_id": CID, "rows": []}', 422, "validation_error", "rows must be a non-empty list"),
    (b'{"campaign_id": CID}', 422, "validation_error", "rows must be a non-empty list"),
    (b'{"campaign_id": CID, "rows": [{}, 3, {}]}', 422, "validation_error", "Row 2 is not an object."),
    (b'{"campaign_id": CID, "rows": [{}], "rows": [{}]}', 422, "validation_error", "rows is given twice"),
    (b'{"campaign_id": CID, "rows": [{"Note": "' + b"n" * (MiB + 1) + b'"}]}', 422, "validation_error",
     "Row 1 is too large"),
])
def test_bad_json_batches_are_refused_and_store_nothing(engine: Engine, world: World, api: TestClient, body: bytes,
                                                        status: int, code: str, detail: str) -> None:
    with engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(stored_files)).scalar_one()
    r = api.post("/api/v1/submissions", headers={**world.auth, "Content-Type": "application/json"},
                 content=body.replace(b"CID", str(world.campaign_id).encode()))
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert detail in r.json()["detail"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(stored_files)).scalar_one() == before


def test_a_json_batch_of_more_than_100000_rows_is_refused(world: World, api: TestClient) -> None:
    body = b'{"campaign_id": %d, "rows": [' % world.campaign_id + b",".join([b"{}"] * 100_001) + b"]}"
    r = api.post("/api/v1/submissions", headers={**world.auth, "Content-Type": "application/json"}, content=body)
    assert r.status_code == 422
    assert r.json()["detail"] == "A JSON batch has at most 100,000 rows; upload a file for more."


def test_multipart_errors_have_their_own_code(world: World, api: TestClient) -> None:
    r = api.post("/api/v1/submissions", headers={**world.auth, "Content-Type": "multipart/form-data"},
                 content=b"--x\r\n")
    assert (r.status_code, r.json()["code"]) == (400, "malformed_multipart"), r.text
    assert "multipart body cannot be read" in r.json()["detail"]
    two = api.post("/api/v1/submissions", headers=world.auth, data={"campaign_id": str(world.campaign_id)},
                   files=[("file", ("a.csv", b"a", "text/csv")), ("file", ("b.csv", b"b", "text/csv"))])
    assert (two.status_code, two.json()["code"]) == (400, "malformed_multipart")
    abc = api.post("/api/v1/submissions", headers=world.auth, data={"campaign_id": "abc"},
                   files={"file": ("a.csv", b"ActionId,Reason\n1,APPROVED\n", "text/csv")})
    assert abc.status_code == 422
    assert abc.json()["detail"].startswith("campaign_id must be a whole number")


def test_a_refused_duplicate_leaves_no_stored_file(engine: Engine, world: World, api: TestClient) -> None:
    data = b"ActionId,Reason\n1,APPROVED\n"
    first = api.post("/api/v1/submissions", headers=world.auth, files={"file": ("r.csv", data, "text/csv")},
                     data={"campaign_id": str(world.campaign_id)})
    assert first.status_code == 202
    with engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(stored_files)).scalar_one()
    again = api.post("/api/v1/submissions", headers=world.auth, files={"file": ("r.csv", data, "text/csv")},
                     data={"campaign_id": str(world.campaign_id)})
    assert (again.status_code, again.json()["code"]) == (409, "duplicate_file")
    assert "send it again with force=true" in again.json()["detail"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(stored_files)).scalar_one() == before


def test_the_cli_streams_the_file_and_names_its_force_flag(fresh_url: str, fresh_engine: Engine, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from payoutdesk import cli

    w = make_world(fresh_engine)
    path = tmp_path / "returns.csv"
    path.write_bytes(b"ActionId,Reason,Padding\n" + b"".join(b"%d,APPROVED,%s\n" % (10**12 + n, b"q" * 100_000)
                                                            for n in range(25)))
    monkeypatch.setenv("PAYOUTDESK_DATABASE_URL", fresh_url)
    monkeypatch.setenv("PAYOUTDESK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PAYOUTDESK_SECRET_KEY", "test-secret")
    assert cli.main(["submit", str(path), "--campaign", str(w.campaign_id)]) == 0
    with fresh_engine.connect() as conn:
        row = conn.execute(select(submissions).order_by(submissions.c.id.desc())).first()
    assert row is not None and row.total_records == 25
    assert chunk_sizes(fresh_engine, row.file_id) == [MiB, MiB, path.stat().st_size - 2 * MiB]
    capsys.readouterr()
    assert cli.main(["submit", str(path), "--campaign", str(w.campaign_id)]) == 2
    assert "run it again with --force to process it once more" in capsys.readouterr().err
    assert cli.main(["submit", str(path), "--campaign", str(w.campaign_id), "--force"]) == 0


# --- retention ------------------------------------------------------------------------------------


def test_retention_deletes_old_files_and_keeps_counts_results_and_errors(engine: Engine, world: World,
                                                                         api: TestClient) -> None:
    aid = conversion(world, "RETAIN-1", "100.00")
    ok = api.post("/api/v1/submissions", headers=world.auth, data={"campaign_id": str(world.campaign_id)},
                  files={"file": ("r.csv", f"ActionId,Amount,Reason\n{aid},90.00,ORDER_UPDATE\n9999999,1,X\n".encode(),
                                  "text/csv")})
    bad = api.post("/api/v1/submissions", headers=world.auth, data={"campaign_id": str(world.campaign_id)},
                   files={"file": ("photo.csv", b"\x89PNG\r\n\x1a\n" + pattern(2 * MiB), "image/png")})
    assert ok.status_code == bad.status_code == 202
    drain(engine)
    labels = [ok.json()["id"], bad.json()["id"]]
    before = {x: api.get(f"/api/v1/submissions/{x}", headers=world.auth).json() for x in labels}
    assert before[labels[1]]["status"] == "FAILED"
    errors = api.get(f"/api/v1/submissions/{labels[0]}/errors", headers=world.auth).json()
    file_ids = [sub_row(engine, x).file_id for x in labels]  # type: ignore[attr-defined]

    # 89 days later: kept
    files.purge(engine, 90, now=utcnow() + timedelta(days=89))
    assert all(chunk_sizes(engine, f) for f in file_ids)
    # 91 days later: deleted, failed file too; the counts, results and errors stay
    later = utcnow() + timedelta(days=91)
    done = files.purge(engine, 90, now=later)
    assert done.expired >= 2
    for x, f in zip(labels, file_ids, strict=True):
        assert chunk_sizes(engine, f) == []
        after = api.get(f"/api/v1/submissions/{x}", headers=world.auth).json()
        assert after.pop("file_deleted_at") is not None and before[x].pop("file_deleted_at") is None
        assert after == before[x]
        gone = api.get(f"/api/v1/submissions/{x}/file", headers=world.auth)
        assert (gone.status_code, gone.json()["code"]) == (410, "file_deleted")
        assert "PAYOUTDESK_FILE_RETENTION_DAYS" in gone.json()["detail"]
    assert api.get(f"/api/v1/submissions/{labels[0]}/errors", headers=world.auth).json() == errors
    with engine.connect() as conn:
        kept = conn.execute(select(func.count()).select_from(submission_results).where(
            submission_results.c.submission_id == subs.parse_id(labels[0]))).scalar_one()
        assert kept == 2
        assert conn.execute(select(stored_files).where(stored_files.c.id.in_(file_ids))).all() == []


def test_retention_deletes_unused_files_after_a_day(engine: Engine, world: World) -> None:
    orphan = files.store_stream(engine, [b"left by a crash between storing and queueing"])
    files.purge(engine, 90, now=utcnow() + timedelta(hours=12))
    assert chunk_sizes(engine, orphan.id) != []  # an upload may still be attaching it
    files.purge(engine, 90, now=utcnow() + timedelta(days=2))
    assert chunk_sizes(engine, orphan.id) == []
    with engine.connect() as conn:
        assert conn.execute(select(stored_files).where(stored_files.c.id == orphan.id)).first() is None


def test_the_scheduler_runs_the_retention_once_a_day(fresh_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_world(fresh_engine)
    with db.write(fresh_engine) as conn:
        made = subs.create(conn, w.actor, w.campaign_id, b"ActionId,Reason\n1,APPROVED\n", file_name="a.csv",
                           content_type="text/csv")
    drain(fresh_engine)
    monkeypatch.setenv("PAYOUTDESK_FILE_RETENTION_DAYS", "30")
    file_id = sub_row(fresh_engine, made["id"]).file_id  # type: ignore[attr-defined]
    scheduler.tick(fresh_engine, "w1", now=utcnow() + timedelta(days=29))
    assert chunk_sizes(fresh_engine, file_id) != []
    scheduler.tick(fresh_engine, "w1", now=utcnow() + timedelta(days=31))
    assert chunk_sizes(fresh_engine, file_id) == []
    with fresh_engine.connect() as conn:
        results = [r[0] for r in conn.execute(text("SELECT result FROM job_runs WHERE job = 'file_retention' "
                                                   "ORDER BY slot"))]
    assert results == ["deleted the files of 0 submissions, 0 unused files",
                       "deleted the files of 1 submissions, 0 unused files"]


# --- the migration of the files kept before chunks ------------------------------------------------


def test_migration_0006_moves_old_files_into_chunks(fresh_url: str, tmp_path: Path) -> None:
    """A database at 0005 with files in submission_files: upgraded, each file is in chunks (an undo's empty
    file is none), the submission points at it, and the old table is gone."""
    url = fresh_url
    eng = make_engine(url)
    w = make_world(eng)  # made by today's code, at head
    eng.dispose()
    command.downgrade(alembic_config(url), "0005")  # back to before chunks
    eng = make_engine(url)
    big = pattern(2 * MiB + 5)
    small = b"ActionId,Reason\n1,APPROVED\n"
    now = utcnow()
    with eng.begin() as conn:
        ids = []
        for n, data in enumerate((big, small, b"")):
            sid = conn.execute(text(
                "INSERT INTO submissions (account_id, campaign_id, kind, channel, file_name, size, sha256, dry_run, "
                "force, status, processed_records, applied, unchanged, errors, amount_delta, payout_delta, "
                "created_at) VALUES (:a, :c, 'F', 'file', :name, :size, :sha, false, false, 'COMPLETE', 0, 0, 0, 0, "
                "0, 0, :now) RETURNING id").bindparams(bindparam("now", type_=UTCDateTime())),
                {"a": w.account_id, "c": w.campaign_id, "name": f"f{n}.csv", "size": len(data),
                 "sha": hashlib.sha256(data).hexdigest(), "now": now}).scalar_one()
            conn.execute(text("INSERT INTO submission_files (submission_id, data) VALUES (:s, :d)"),
                         {"s": sid, "d": data})
            ids.append(int(sid))
    eng.dispose()
    migrate(url)
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            rows = {r.id: r for r in conn.execute(select(submissions).where(submissions.c.id.in_(ids)))}
            for sid, data in zip(ids, (big, small), strict=False):
                stored = files.stored(conn, int(rows[sid].file_id))
                assert stored is not None
                assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
                assert b"".join(files.chunks_in(conn, stored)) == data
            assert rows[ids[2]].file_id is None
            tables = set(conn.dialect.get_table_names(conn))
        assert "submission_files" not in tables
        assert chunk_sizes(eng, int(rows[ids[0]].file_id)) == [MiB, MiB, 5]
        new = files.store_stream(eng, [b"after the migration"])  # the ids of new files follow the copied ones
        assert new.id > max(ids[:2])
    finally:
        eng.dispose()


def test_the_readers_read_zip_gzip_and_xlsx_from_a_file_on_disk(tmp_path: Path) -> None:
    """Files above 1 MiB reach the readers as a file on disk (the worker's temporary copy): a zip and an XLSX
    are read by seeking in it, a workbook inside gzip is spooled to a temporary file of its own."""
    import gzip
    import os
    import zipfile

    from openpyxl import Workbook

    from payoutdesk.submissions.formats import FileBlob, parse

    noise = [os.urandom(1000).hex() for _ in range(1500)]  # 3 MB that does not compress away
    csv = "ActionId,Reason,Padding\n" + "".join(f"{n + 1},APPROVED,{noise[n]}\n" for n in range(1500))
    with zipfile.ZipFile(tmp_path / "r.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("returns.csv", csv)
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["ActionId", "Reason", "Padding"])
    for n in range(1500):
        ws.append([n + 1, "APPROVED", noise[n]])
    wb.save(tmp_path / "r.xlsx")
    (tmp_path / "r.xlsx.gz").write_bytes(gzip.compress((tmp_path / "r.xlsx").read_bytes()))
    for name, fmt in (("r.zip", "csv+zip"), ("r.xlsx", "xlsx"), ("r.xlsx.gz", "xlsx+gzip")):
        assert (tmp_path / name).stat().st_size > MiB
        blob = FileBlob.of_path(tmp_path / name)
        parsed = parse(blob, name)
        assert (parsed.format, parsed.total) == (fmt, 1500)
        rows = list(parsed.rows)
        assert rows[-1].fields == {"ActionId": "1500", "Reason": "APPROVED"}
        assert len(list(parsed.rows)) == 1500  # read again from the file
        blob.close()
