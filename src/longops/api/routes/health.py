"""Liveness, readiness and Prometheus metrics.

``/readyz`` answers 503 with the reason when the database is out of reach, when the engine's loops
are not running (``engine``), or when storage is full (``storage``: a write refused for lack of
space within the last minute, or under 1 MiB free where the SQLite file or the uploads live).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from longops.api.deps import State

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: State) -> JSONResponse:
    role = "api" if state.engine is None else state.engine.role
    try:
        async with state.db.read() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return JSONResponse(
            {"status": "unavailable", "database": f"unreachable: {type(exc).__name__}", "role": role},
            status_code=503,
        )
    problems = {
        "engine": state.engine.problem() if state.engine is not None else None,
        "storage": state.storage.problem(),
    }
    found = {name: problem for name, problem in problems.items() if problem is not None}
    if found:
        return JSONResponse(
            {"status": "unavailable", "database": "ok", "role": role, **found}, status_code=503
        )
    return JSONResponse({"status": "ready", "database": "ok", "role": role})


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
