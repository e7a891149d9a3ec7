"""The create-time SSRF check of ``callback_url`` as an API error (422 ``validation_error``)."""

from __future__ import annotations

from longops.api.errors import APIError
from longops.net import UnsafeCallbackURL, check_callback_url
from longops.settings import Settings


async def ensure_callback_url_allowed(url: str | None, settings: Settings, *, prefix: str = "") -> None:
    """Raise a 422 naming ``callback_url`` (after ``prefix``, e.g. ``"input."``) unless ``url`` is
    absent or an allowed target."""
    if url is None:
        return
    try:
        await check_callback_url(url, allow_private=settings.webhook_allow_private)
    except UnsafeCallbackURL as exc:
        raise APIError(422, "validation_error", f"{prefix}{exc}") from exc
