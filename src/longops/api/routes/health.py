"""Liveness, readiness (database reachable, this instance's role) and Prometheus metrics."""

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
    problem = state.engine.problem() if state.engine is not None else None
    if problem is not None:
        return JSONResponse(
            {"status": "unavailable", "database": "ok", "role": role, "engine": problem}, status_code=503
        )
    return JSONResponse({"status": "ready", "database": "ok", "role": role})


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
