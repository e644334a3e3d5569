"""Kie's webhook signature: ``base64(HMAC-SHA256(key, taskId + "." + timestamp))``."""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["sign", "verify_signature"]


def _key_bytes(hmac_key: str | bytes) -> bytes:
    return hmac_key.encode() if isinstance(hmac_key, str) else hmac_key


def sign(task_id: str, timestamp: int | str, hmac_key: str | bytes) -> str:
    """The ``X-Webhook-Signature`` Kie sends for ``task_id`` at ``timestamp`` (Unix seconds)."""
    message = f"{task_id}.{timestamp}".encode()
    digest = hmac.new(_key_bytes(hmac_key), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_signature(
    task_id: str, timestamp: int | str, signature: str, hmac_key: str | bytes
) -> bool:
    """True if ``signature`` is Kie's signature of ``task_id`` and ``timestamp``.

    Compared in constant time. Anything malformed (wrong types, empty key, non-ASCII signature)
    is simply not valid: this function never raises for bad input.
    """
    if not isinstance(task_id, str) or not isinstance(signature, str):
        return False
    if not isinstance(hmac_key, str | bytes) or not hmac_key:
        return False
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | str):
        return False
    if not signature.isascii():
        return False
    expected = sign(task_id, timestamp, hmac_key)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii"))
