"""Configuration from environment variables (DESIGN §4)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    secret_key: str
    bind: str
    http_port: int
    ftp_port: int
    smtp_port: int
    mail_domain: str
    api_rate_limit: int  # requests per second per account; 0 = none
    login_rate_limit: int  # failed logins per minute per client address; 0 = none
    max_file_mb: int = 200  # the largest returns file accepted, in MiB (DESIGN §6, "Bounded memory")
    file_retention_days: int = 90  # original files of submissions are deleted this long after (DESIGN §6, "Files")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        data_dir = Path(e.get("PAYOUTDESK_DATA_DIR", "./data")).resolve()
        url = e.get("PAYOUTDESK_DATABASE_URL") or f"sqlite:///{data_dir / 'payoutdesk.db'}"
        return cls(
            data_dir=data_dir,
            database_url=url,
            secret_key=e.get("PAYOUTDESK_SECRET_KEY", ""),
            bind=e.get("PAYOUTDESK_BIND", "127.0.0.1"),
            http_port=_int(e, "PAYOUTDESK_HTTP_PORT", 8000),
            ftp_port=_int(e, "PAYOUTDESK_FTP_PORT", 2121),
            smtp_port=_int(e, "PAYOUTDESK_SMTP_PORT", 2525),
            mail_domain=e.get("PAYOUTDESK_MAIL_DOMAIN", "returns.payoutdesk.local"),
            api_rate_limit=_int(e, "PAYOUTDESK_API_RATE_LIMIT", 100),
            login_rate_limit=_int(e, "PAYOUTDESK_LOGIN_RATE_LIMIT", 10),
            max_file_mb=max(1, _int(e, "PAYOUTDESK_MAX_FILE_MB", 200)),
            file_retention_days=max(1, _int(e, "PAYOUTDESK_FILE_RETENTION_DAYS", 90)),
        )


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, not '{raw}'.") from None
    if value < 0:
        raise SystemExit(f"{name} must not be negative.")
    return value
