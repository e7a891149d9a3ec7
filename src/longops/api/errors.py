"""Every error answers ``{"error": {"type", "message"}}`` (DESIGN §5 "Errors"); never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from longops.domain.requests import BatchValidationError
from longops.domain.statuses import InvalidTransition
from longops.store.jobs import CancelNotAllowed, IdempotencyConflict, JobNotFound
from longops.store.storage import (
    DATABASE_UNAVAILABLE_MESSAGE,
    STORAGE_FULL_MESSAGE,
    is_database_unavailable,
    is_storage_full,
)

log = logging.getLogger(__name__)

_HTTP_TYPES = {
    400: "invalid_request",
    401: "authentication_error",
    404: "not_found",
    405: "invalid_request",
    409: "invalid_transition",
    413: "payload_too_large",
    422: "validation_error",
    429: "rate_limited",
    431: "headers_too_large",
    503: "database_unavailable",
    507: "insufficient_storage",
}


class APIError(Exception):
    def __init__(self, status_code: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.message = message


def error_response(status_code: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": error_type, "message": message}}, status_code=status_code)


def _location(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    path = ""
    for part in parts:
        path += f"[{part}]" if part.isdigit() else (f".{part}" if path else part)
    return path or "request"


def _validation_message(errors: Sequence[Any]) -> tuple[int, str, str]:
    first = errors[0]
    if first.get("type") == "json_invalid":
        return (
            400,
            "invalid_request",
            f"request body is not valid JSON: {first.get('ctx', {}).get('error', '')}".rstrip(": "),
        )
    if first.get("type") == "model_attributes_type" and tuple(first.get("loc", ())) == ("body",):
        return 400, "invalid_request", "request body must be a JSON object"
    unknown = [_location(error.get("loc", ())) for error in errors if error.get("type") == "extra_forbidden"]
    if unknown:  # named before any other problem: a misspelt field also shows up as a missing one
        return (
            422,
            "validation_error",
            f"{', '.join(unknown)}: unknown field{'s' if len(unknown) > 1 else ''}",
        )
    where = _location(first.get("loc", ()))
    return 422, "validation_error", f"{where}: {first.get('msg', 'is invalid')}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status_code, exc.error_type, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(*_validation_message(exc.errors()))

    @app.exception_handler(BatchValidationError)
    async def _batch_validation(_: Request, exc: BatchValidationError) -> JSONResponse:
        return error_response(422, "validation_error", str(exc))

    @app.exception_handler(JobNotFound)
    async def _not_found(_: Request, exc: JobNotFound) -> JSONResponse:
        return error_response(404, "not_found", f"no such job or batch: {exc.args[0]}")

    @app.exception_handler(CancelNotAllowed)
    async def _cancel(_: Request, exc: CancelNotAllowed) -> JSONResponse:
        return error_response(409, "invalid_transition", str(exc))

    @app.exception_handler(InvalidTransition)
    async def _transition(_: Request, exc: InvalidTransition) -> JSONResponse:
        return error_response(409, "invalid_transition", str(exc))

    @app.exception_handler(IdempotencyConflict)
    async def _idempotency(_: Request, exc: IdempotencyConflict) -> JSONResponse:
        return error_response(409, "idempotency_conflict", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = _HTTP_TYPES.get(
            exc.status_code, "internal_error" if exc.status_code >= 500 else "invalid_request"
        )
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return error_response(exc.status_code, error_type, message)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        if is_storage_full(exc):
            log.error("a write was refused for lack of space: %s", type(exc).__name__)
            app_state = getattr(request.app.state, "longops", None)
            if app_state is not None:
                app_state.storage.refused()
            return error_response(507, "insufficient_storage", STORAGE_FULL_MESSAGE)
        if is_database_unavailable(exc):
            log.warning("a request found the database out of reach: %s", type(exc).__name__, exc_info=exc)
            response = error_response(503, "database_unavailable", DATABASE_UNAVAILABLE_MESSAGE)
            response.headers["Retry-After"] = "1"
            return response
        log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
        return error_response(500, "internal_error", "internal error; see the server log")
