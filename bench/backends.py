"""Where the benchmark data lives: a SQLite file, or a database on a (throwaway) PostgreSQL server."""

from __future__ import annotations

import os
import platform
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from payoutdesk.kit.db import make_engine

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "throwaway-postgres.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: [int(x) for x in p.parent.name.split(".")])
    return found[-1] if found else None


@dataclass
class Backend:
    name: str  # sqlite | postgresql
    url: str
    engine: Engine
    cleanup: list[Any]

    def close(self) -> None:
        self.engine.dispose()
        for fn in reversed(self.cleanup):
            fn()


def _as_pg(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.getuid() == 0 else cmd


def _start_pg_cluster(dirpath: Path, keep: bool) -> tuple[str, Any]:
    """A throwaway server exactly as tests/conftest.py starts it (scripts/throwaway-postgres.sh).

    With ``keep`` the cluster stays on disk between runs and is only restarted (same options).
    """
    port = free_port()
    if keep and (dirpath / "data" / "PG_VERSION").exists():
        binp = pg_bin()
        assert binp is not None
        opts = (f"-k {dirpath} -h 127.0.0.1 -p {port} -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=200")
        if os.environ.get("PAYOUTDESK_PG_SHARED_BUFFERS"):  # bench-only, as in scripts/throwaway-postgres.sh
            opts += f" -c shared_buffers={os.environ['PAYOUTDESK_PG_SHARED_BUFFERS']}"
        subprocess.run(_as_pg([str(binp / "pg_ctl"), "-D", str(dirpath / "data"), "-l", str(dirpath / "log"),
                               "-w", "-o", opts, "start"]), check=True, capture_output=True)
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    else:
        if dirpath.exists() and not keep:
            subprocess.run(["bash", str(SCRIPT), "stop", str(dirpath)], check=False)
        out = subprocess.run(["bash", str(SCRIPT), "start", str(dirpath), str(port)], check=True,
                             capture_output=True, text=True)
        url = out.stdout.strip()

    def stop() -> None:
        if keep:
            binp = pg_bin()
            assert binp is not None
            subprocess.run(_as_pg([str(binp / "pg_ctl"), "-D", str(dirpath / "data"), "-m", "fast", "stop"]),
                           check=False, capture_output=True)
        else:
            subprocess.run(["bash", str(SCRIPT), "stop", str(dirpath)], check=False)

    return url, stop


def open_backend(name: str, data_dir: Path, tag: str, keep: bool) -> Backend:
    """The database for one data set (``tag`` names it); created empty when new."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if name == "sqlite":
        path = data_dir / f"{tag}.db"
        url = f"sqlite:///{path}"
        cleanup: list[Any] = []
        if not keep:
            cleanup.append(lambda: [p.unlink(missing_ok=True) for p in data_dir.glob(f"{tag}.db*")])
        return Backend(name, url, make_engine(url), cleanup)
    server = os.environ.get("PAYOUTDESK_TEST_POSTGRES_URL")
    cleanup = []
    if not server:
        cluster = data_dir / "pg"
        if not keep:
            cluster = data_dir / f"pg-{os.getpid()}"
        server, stop = _start_pg_cluster(cluster, keep)
        cleanup.append(stop)
    dbname = tag.replace("-", "_")
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": dbname}).first()
        if exists is None:
            conn.execute(text(f'CREATE DATABASE "{dbname}"'))
    admin.dispose()
    url = make_url(server).set(database=dbname).render_as_string(hide_password=False)

    if not keep:
        def drop() -> None:
            eng = create_engine(server, isolation_level="AUTOCOMMIT")
            with eng.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
            eng.dispose()
        if os.environ.get("PAYOUTDESK_TEST_POSTGRES_URL"):
            cleanup.append(drop)
    return Backend(name, url, make_engine(url, pool_size=20), cleanup)


def reset_database(backend: Backend) -> None:
    """Throw away whatever a previous, different data set left."""
    backend.engine.dispose()
    if backend.name == "sqlite":
        path = Path(make_url(backend.url).database or "")
        for p in path.parent.glob(path.name + "*"):
            p.unlink()
        return
    with backend.engine.connect() as conn, conn.begin():
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))


def machine(backends: list[Backend]) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
    }
    for b in backends:
        if b.name == "postgresql":
            with b.engine.connect() as conn:
                info["postgresql"] = conn.execute(text("SHOW server_version")).scalar_one()
                info["postgresql_settings"] = {
                    k: conn.execute(text(f"SHOW {k}")).scalar_one()
                    for k in ("shared_buffers", "work_mem", "fsync", "synchronous_commit", "max_wal_size")
                }
    return info
