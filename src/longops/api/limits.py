"""Input limits as the API applies them: the pure checks of ``domain.limits`` with this server's settings,
and the refusal of query parameters a route does not declare.

Every failure is a 422 ``validation_error`` whose message names the field and the setting, checked
before anything is stored.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute

from longops.api.errors import APIError
from longops.domain.limits import LimitExceeded, check_json, check_length, check_metadata
from longops.settings import Settings


def check_create_fields(
    settings: Settings,
    *,
    metadata: dict[str, Any],
    callback_url: str | None,
    input: Any = None,
    prefix: str = "",
) -> None:
    """The limits on the fields a new batch or job shares: ``metadata``, ``callback_url``, ``input``.
    ``prefix`` names where they sit in the body (``"input."`` for those of a ``batch_ingest`` input)."""
    try:
        check_metadata(
            metadata,
            max_keys=settings.max_metadata_keys,
            max_key_length=settings.max_metadata_key_length,
            max_bytes=settings.max_metadata_bytes,
            max_depth=settings.max_json_depth,
        )
        check_length(
            "callback_url", callback_url, settings.max_callback_url_length, "MAX_CALLBACK_URL_LENGTH"
        )
        if callback_url is not None and not callback_url.isprintable():
            raise LimitExceeded("callback_url", "contains control characters")
        check_json("input", input, settings.max_json_depth)
    except LimitExceeded as exc:
        raise APIError(422, "validation_error", f"{prefix}{exc}") from None


async def reject_unknown_query_params(request: Request) -> None:
    """422 naming the query parameters a ``/v1`` route does not declare (FastAPI would ignore them, so a
    typo like ``?stauts=running`` would silently list everything). The declared ones are read from the
    app's own OpenAPI description, the contract clients see."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.path.startswith("/v1/") or not request.query_params:
        return
    operation = request.app.openapi()["paths"].get(route.path, {}).get(request.method.lower(), {})
    declared = {param["name"] for param in operation.get("parameters", []) if param.get("in") == "query"}
    unknown = sorted(set(request.query_params) - declared)
    if unknown:
        raise APIError(422, "validation_error", f"unknown query parameter(s): {', '.join(unknown)}")
