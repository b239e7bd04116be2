"""Encryption at rest for stored remote credentials (Fernet, keyed by the secret key)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from payoutdesk.kit.files import private_dir, private_file, write_private


def load_secret_key(configured: str, data_dir: Path) -> str:
    """The configured secret key, else one generated once and kept in the data folder."""
    if configured:
        return configured
    path = data_dir / "secret.key"
    if path.exists():
        private_file(path)  # tighten a key file left readable by others
        return path.read_text().strip()
    private_dir(data_dir)
    key = secrets.token_urlsafe(32)
    write_private(path, key)
    return key


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(("payoutdesk-secrets:" + secret_key).encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise ValueError("stored secret cannot be decrypted with this PAYOUTDESK_SECRET_KEY") from None
