"""Standard Webhooks signatures, for receivers of longops webhooks (standard library only).

Every webhook carries three headers:

* ``webhook-id``: the event id (``evt_…``), the same on every retry and redelivery — deduplicate on it;
* ``webhook-timestamp``: Unix seconds of this attempt;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed by the bytes of
  the secret (``whsec_`` + base64, as in ``LONGOPS_WEBHOOK_SECRET``). Several space-separated
  signatures may be present (secret rotation); one match is enough.

Verify against the raw request body, byte for byte, before parsing it::

    from longops.webhooks import WebhookVerificationError, verify

    try:
        event = verify(raw_body, request.headers, secret)   # the parsed JSON payload
    except WebhookVerificationError:
        return 400
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookVerificationError(Exception):
    """The webhook is not authentic or not fresh: the message says which check failed."""


def generate_secret() -> str:
    """A new random secret (32 bytes) in the ``whsec_`` + base64 form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def parse_secret(secret: str) -> bytes:
    """The key bytes of ``whsec_<base64>`` (the prefix may be omitted); ``ValueError`` if malformed."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from exc
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body


def sign(body: bytes | str, *, msg_id: str, timestamp: int, secret: str | bytes) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) for one message.

    ``secret`` is the ``whsec_`` string, or the already decoded key bytes.
    """
    key = parse_secret(secret) if isinstance(secret, str) else secret
    signed = f"{msg_id}.{timestamp}.".encode() + _as_bytes(body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if not value:
        raise WebhookVerificationError(f"missing {name} header")
    return value


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> Any:
    """Check a received webhook and return its parsed JSON payload.

    Raises :class:`WebhookVerificationError` when a header is missing, the timestamp is more than
    ``tolerance`` seconds away from now (stale or replayed, or from the future), or no ``v1``
    signature matches (wrong secret, or a body changed on the way).
    """
    msg_id = _header(headers, "webhook-id")
    raw_timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp is not Unix seconds: {raw_timestamp!r}") from None
    age = int(time.time()) - timestamp
    if age > tolerance:
        raise WebhookVerificationError(
            f"stale timestamp: the message was signed {age}s ago, more than the {tolerance}s tolerance"
        )
    if -age > tolerance:
        raise WebhookVerificationError(
            f"timestamp {-age}s in the future, more than the {tolerance}s tolerance"
        )
    expected = sign(body, msg_id=msg_id, timestamp=timestamp, secret=secret).encode("ascii")
    for candidate in signatures.split():
        if candidate.startswith("v1,") and hmac.compare_digest(
            candidate.encode("ascii", "replace"), expected
        ):
            try:
                return json.loads(body)
            except ValueError as exc:
                raise WebhookVerificationError("the signed body is not JSON") from exc
    raise WebhookVerificationError("bad signature: no v1 signature matches (wrong secret or modified body)")
