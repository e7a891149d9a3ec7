"""The FastAPI application and its lifespan (database, migrations, engine)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI

from longops._version import __version__
from longops.api.access_log import AccessLogMiddleware
from longops.api.auth import AuthMiddleware, OpenMode, describe_bearer_auth, is_loopback_host
from longops.api.body_limit import BodyLimitMiddleware
from longops.api.deps import AppState
from longops.api.docs_pages import install_docs_pages
from longops.api.errors import install_error_handlers
from longops.api.limits import reject_unknown_query_params
from longops.api.routes import batches, deliveries, files, health, jobs, providers, usage
from longops.api.ui import install_ui
from longops.api.url_guard import URLGuardMiddleware
from longops.engine.engine import Engine
from longops.engine.metrics import Metrics
from longops.handlers import load_handlers
from longops.pricing import load_price_table
from longops.providers.registry import configured_providers
from longops.settings import Settings
from longops.store.db import open_database, sqlite_path
from longops.store.migrate import upgrade_database
from longops.store.storage import StorageHealth


def watched_paths(settings: Settings) -> tuple[Path, ...]:
    """The directories whose free space ``/readyz`` watches: the SQLite file's and the files'."""
    database = sqlite_path(settings.database_url)
    paths = [Path(settings.files_dir)] + ([database.parent] if database is not None else [])
    return tuple(path for path in paths if path.exists())


def create_app(settings: Settings, *, run_engine: bool = True) -> FastAPI:
    load_handlers(settings.handlers)  # job types known to POST /v1/jobs; raises HandlerLoadError
    # Raises ProvidersFileError for a bad LONGOPS_PROVIDERS_FILE, before anything listens.
    provider_specs = configured_providers(settings.provider_options())
    prices = load_price_table(settings)  # raises PriceError naming the file, row and field

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = open_database(settings.database_url)
        await upgrade_database(db)
        metrics = Metrics()
        state = AppState(
            settings=settings,
            db=db,
            metrics=metrics,
            providers=provider_specs,
            prices=prices,
            open_mode=OpenMode(allowed=is_loopback_host(settings.host)),  # settings.host: where it listens
            storage=StorageHealth(watched=watched_paths(settings)),
        )
        if run_engine:
            state.engine = Engine(settings, db, metrics, prices)
            await state.engine.start()
        app.state.longops = state
        try:
            yield
        finally:
            if state.engine is not None:
                await state.engine.stop()
            await db.dispose()

    app = FastAPI(
        title="longops",
        version=__version__,
        description="Long-running operations and LLM batches: REST API.",
        lifespan=lifespan,
        docs_url=None,  # served by install_docs_pages, from the package rather than a CDN
        redoc_url=None,
        dependencies=[Depends(reject_unknown_query_params)],
    )
    install_error_handlers(app)
    app.include_router(usage.batch_router)
    app.include_router(batches.router)
    app.include_router(usage.router)
    app.include_router(jobs.router)
    app.include_router(deliveries.router)
    app.include_router(files.router)
    app.include_router(providers.router)
    app.include_router(health.router)
    install_docs_pages(app)
    install_ui(app)  # /ui/: the dashboard, which authenticates its own requests (session cookie)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        exempt_paths=frozenset({files.UPLOAD_PATH}),  # streamed to disk under MAX_FILE_BYTES
    )
    app.add_middleware(URLGuardMiddleware)
    app.add_middleware(AuthMiddleware)  # added late, so it runs early: no body is read before a 401
    if settings.access_log:
        app.add_middleware(AccessLogMiddleware)  # outermost of ours: it times and logs even a 401
    describe_bearer_auth(app)
    return app
