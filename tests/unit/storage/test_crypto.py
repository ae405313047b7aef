from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from convodesk.storage.crypto import KEY_ENV, SecretBox, SecretKeyError, load_secret_box


def test_round_trip_and_ciphertext_hides_the_value(tmp_path: Path) -> None:
    box = load_secret_box(tmp_path, {KEY_ENV: "a passphrase, not a fernet key"})
    token = box.encrypt("s3cr3t-value")
    assert "s3cr3t-value" not in token
    assert box.decrypt(token) == "s3cr3t-value"
    assert box.encrypt("s3cr3t-value") != token  # random IV per encryption


def test_generated_key_file_is_private_and_stable(tmp_path: Path) -> None:
    first = load_secret_box(tmp_path / "data", {})
    key_file = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = first.encrypt("x")
    assert load_secret_box(tmp_path / "data", {}).decrypt(token) == "x"
    assert not list((tmp_path / "data").glob(".secret.key.*"))


def test_wrong_key_is_a_clear_error_without_the_secret(tmp_path: Path) -> None:
    token = SecretBox(["key-one"]).encrypt("hidden-value")
    with pytest.raises(SecretKeyError) as info:
        SecretBox(["key-two"]).decrypt(token)
    assert KEY_ENV in str(info.value)
    assert "hidden-value" not in str(info.value)


def test_rotation_first_key_encrypts_all_decrypt() -> None:
    old = SecretBox(["old-key"])
    token = old.encrypt("v")
    rotated = SecretBox(["new-key", "old-key"])
    assert rotated.decrypt(token) == "v"
    assert SecretBox(["new-key"]).decrypt(rotated.encrypt("w")) == "w"


def test_a_real_fernet_key_is_used_as_is() -> None:
    key = Fernet.generate_key().decode()
    token = SecretBox([key]).encrypt("v")
    assert Fernet(key.encode()).decrypt(token.encode()) == b"v"
