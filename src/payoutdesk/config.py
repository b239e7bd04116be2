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
    # the intake channels (DESIGN §3; docs/CHANNELS.md and docs/DEPLOYMENT.md)
    public_url: str = "http://localhost:8000"  # how the world reaches the HTTP server (outbound_url, links in mails)
    ftp_passive_ports: tuple[int, int] | None = None  # PAYOUTDESK_FTP_PASSIVE_PORTS "60000-60099"; None: any
    ftp_masquerade_address: str = ""  # the address passive replies announce when behind NAT
    ftp_tls_cert: str = ""  # PEM certificate (and key, unless ftp_tls_key): explicit FTPS when set
    ftp_tls_key: str = ""
    ftp_tls_required: bool = False  # refuse logins that did not AUTH TLS first
    smtp_relay: str = ""  # host:port of the relay for results replies and alerts; empty: none sent
    smtp_relay_user: str = ""
    smtp_relay_password: str = ""
    smtp_relay_starttls: bool = False
    mail_from: str = ""  # sender of results replies and alerts; default returns-noreply@<mail domain>

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
            public_url=(e.get("PAYOUTDESK_PUBLIC_URL") or f"http://localhost:{_int(e, 'PAYOUTDESK_HTTP_PORT', 8000)}"
                        ).rstrip("/"),
            ftp_passive_ports=_port_range(e, "PAYOUTDESK_FTP_PASSIVE_PORTS"),
            ftp_masquerade_address=e.get("PAYOUTDESK_FTP_MASQUERADE_ADDRESS", ""),
            ftp_tls_cert=e.get("PAYOUTDESK_FTP_TLS_CERT", ""),
            ftp_tls_key=e.get("PAYOUTDESK_FTP_TLS_KEY", ""),
            ftp_tls_required=_flag(e, "PAYOUTDESK_FTP_TLS_REQUIRED"),
            smtp_relay=e.get("PAYOUTDESK_SMTP_RELAY", ""),
            smtp_relay_user=e.get("PAYOUTDESK_SMTP_RELAY_USER", ""),
            smtp_relay_password=e.get("PAYOUTDESK_SMTP_RELAY_PASSWORD", ""),
            smtp_relay_starttls=_flag(e, "PAYOUTDESK_SMTP_RELAY_STARTTLS"),
            mail_from=e.get("PAYOUTDESK_MAIL_FROM", ""),
        )

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb * 1024 * 1024

    @property
    def sender(self) -> str:
        return self.mail_from or f"returns-noreply@{self.mail_domain}"


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


def _flag(env: dict[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SystemExit(f"{name} must be true or false, not '{raw}'.")


def _port_range(env: dict[str, str], name: str) -> tuple[int, int] | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    low, _, high = raw.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise SystemExit(f"{name} is a range of ports like 60000-60099, not '{raw}'.") from None
    if not 1 <= first <= last <= 65535:
        raise SystemExit(f"{name} is a range of ports like 60000-60099, not '{raw}'.")
    return first, last
