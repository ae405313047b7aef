"""Sinch Conversation API callback signatures: the one implementation, for signing and verifying.

Scheme (reference section 1.2, reproduced bit-exact against the SDK test vectors):

    signed_data = raw_body + b"." + nonce + b"." + timestamp
    signature   = base64(HMAC-SHA256(key=secret as UTF-8, msg=signed_data))   # with padding

Sinch sends it in four headers (lower-case on the wire; we read them case-insensitively):
``x-sinch-webhook-signature``, ``-nonce``, ``-timestamp`` (epoch seconds) and ``-algorithm``
(``HmacSHA256``). The body is the raw bytes as received: re-serialised JSON does not verify.

Sinch documents no timestamp window; ``verify`` applies ours (300 s by default) and leaves nonce
de-duplication to the caller, who has the storage for it.

Errors::

    SignatureError
    ├── MissingHeaderError
    ├── UnsupportedAlgorithmError
    ├── StaleTimestampError
    └── SignatureMismatchError

No error message ever contains the secret or the expected signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

from convodesk.sinch.ids import new_ulid

ALGORITHM = "HmacSHA256"
SIGNATURE_HEADER = "x-sinch-webhook-signature"
NONCE_HEADER = "x-sinch-webhook-signature-nonce"
TIMESTAMP_HEADER = "x-sinch-webhook-signature-timestamp"
ALGORITHM_HEADER = "x-sinch-webhook-signature-algorithm"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(Exception):
    """The callback signature is not valid."""

    reason = "invalid_signature"


class MissingHeaderError(SignatureError):
    """A signature header is missing or empty."""

    reason = "missing_header"

    def __init__(self, header: str) -> None:
        super().__init__(f"missing signature header: {header}")
        self.header = header


class UnsupportedAlgorithmError(SignatureError):
    """The algorithm header names something other than HmacSHA256."""

    reason = "unsupported_algorithm"

    def __init__(self, algorithm: str) -> None:
        super().__init__(f"unsupported signature algorithm: {algorithm[:40]!r}")
        self.algorithm = algorithm


class StaleTimestampError(SignatureError):
    """The timestamp is not epoch seconds, or too far from now."""

    reason = "stale_timestamp"


class SignatureMismatchError(SignatureError):
    """The signature does not match the body, nonce and timestamp for this secret."""

    reason = "signature_mismatch"

    def __init__(self) -> None:
        super().__init__("signature does not match")


def _digest(secret: str, raw_body: bytes, nonce: str, timestamp: str) -> bytes:
    signed = b"".join((raw_body, b".", nonce.encode("utf-8"), b".", timestamp.encode("utf-8")))
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()


def compute_signature(secret: str, raw_body: bytes, nonce: str, timestamp: str) -> str:
    """The value of ``x-sinch-webhook-signature`` for these exact bytes."""
    return base64.b64encode(_digest(secret, raw_body, nonce, timestamp)).decode("ascii")


def sign_headers(
    secret: str,
    raw_body: bytes,
    *,
    nonce: str | None = None,
    timestamp: str | None = None,
) -> dict[str, str]:
    """The four headers Sinch sends with a signed callback; nonce a fresh ULID, time now."""
    nonce = new_ulid() if nonce is None else nonce
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    return {
        SIGNATURE_HEADER: compute_signature(secret, raw_body, nonce, timestamp),
        NONCE_HEADER: nonce,
        TIMESTAMP_HEADER: timestamp,
        ALGORITHM_HEADER: ALGORITHM,
    }


def verify(
    secret: str,
    raw_body: bytes,
    headers: Mapping[str, str],
    *,
    now: float,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Return if the headers sign ``raw_body`` with ``secret``; raise a SignatureError if not.

    The algorithm header is optional (the Python SDK ignores it) but, when present, must be
    HmacSHA256. The timestamp must be within ``tolerance_seconds`` of ``now`` either way.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER, "").strip()
    nonce = lowered.get(NONCE_HEADER, "").strip()
    timestamp = lowered.get(TIMESTAMP_HEADER, "").strip()
    for header, value in (
        (SIGNATURE_HEADER, signature),
        (NONCE_HEADER, nonce),
        (TIMESTAMP_HEADER, timestamp),
    ):
        if not value:
            raise MissingHeaderError(header)
    algorithm = lowered.get(ALGORITHM_HEADER)
    if algorithm is not None and algorithm.strip().lower() != ALGORITHM.lower():
        raise UnsupportedAlgorithmError(algorithm)
    if not timestamp.isascii() or not timestamp.isdigit():
        raise StaleTimestampError("signature timestamp is not epoch seconds")
    if abs(now - int(timestamp)) > tolerance_seconds:
        raise StaleTimestampError(
            f"signature timestamp is more than {tolerance_seconds} s away from now"
        )
    if not secret:
        # An empty key would make any signature an attacker computes valid.
        raise SignatureMismatchError()
    expected = base64.b64encode(_digest(secret, raw_body, nonce, timestamp))
    if not hmac.compare_digest(signature.encode("utf-8"), expected):
        raise SignatureMismatchError()
