"""Encryption of secrets at rest (Fernet: AES-128-CBC with HMAC-SHA256).

The key comes from ``CONVODESK_SECRET_KEY`` or, when that is unset, from
``{data_dir}/secret.key``, generated on first use with 0600 permissions. The variable may
hold several comma-separated keys: the first encrypts, all decrypt (key rotation; see
docs/operations/backups.md). A value that is not a Fernet key is stretched into one with
HKDF-SHA256, so a passphrase works too.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_ENV = "CONVODESK_SECRET_KEY"
KEY_FILE = "secret.key"


class SecretKeyError(Exception):
    """The secret key is missing, unreadable, or does not open the stored secrets."""


def _as_fernet_key(material: str) -> bytes:
    material = material.strip()
    try:
        raw = base64.urlsafe_b64decode(material.encode("ascii"))
        if len(raw) == 32:
            return material.encode("ascii")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        pass
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"convodesk-secrets-v1", info=b"fernet"
    ).derive(material.encode("utf-8"))
    return base64.urlsafe_b64encode(derived)


class SecretBox:
    def __init__(self, keys: list[str]) -> None:
        if not keys or not all(k.strip() for k in keys):
            raise SecretKeyError("empty secret key")
        self._fernet = MultiFernet([Fernet(_as_fernet_key(k)) for k in keys])
        self._primary = _as_fernet_key(keys[0])
        self._keys = list(keys)

    def key_material(self) -> list[str]:
        """The keys as given, for a child process of this one (`web.intake_process`, over
        a pipe); never to be logged or shown."""
        return list(self._keys)

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for `purpose` (e.g. signing CSRF tokens), derived from the first
        secret key with HKDF: the same on every node that shares the key, never the key."""
        return HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"convodesk-derived-v1",
            info=purpose.encode("utf-8"),
        ).derive(base64.urlsafe_b64decode(self._primary))

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise SecretKeyError(
                f"a stored secret cannot be decrypted with the configured key ({KEY_ENV} "
                "or the data directory's secret.key changed?)"
            ) from exc


def load_secret_box(data_dir: str | Path, environ: Mapping[str, str] | None = None) -> SecretBox:
    env = os.environ if environ is None else environ
    if env.get(KEY_ENV):
        return SecretBox(env[KEY_ENV].split(","))
    path = Path(data_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written to a private temporary file, then linked into place: linking fails if
        # another process got there first, and nobody ever reads a half-written key.
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key() + b"\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    try:
        material = path.read_text().strip()
    except OSError as exc:
        raise SecretKeyError(f"cannot read the secret key file {path}: {exc.strerror}") from exc
    if not material:
        raise SecretKeyError(f"the secret key file {path} is empty")
    return SecretBox([material])
