"""The dashboard at ``/ui/``: server-rendered pages (Jinja2) refreshed in place by htmx, in the API's
own process.

The API's auth middleware lets ``/ui`` through without a bearer key: the dashboard authenticates
every request itself, with its session cookie or open mode (``security``), and everything it shows
comes from the API's route functions with the viewer's organization (``pages``, ``actions``). Its
static files (``static/``: the stylesheet, htmx, and the Swagger UI and ReDoc bundles of ``/docs``
and ``/redoc``) are served from the package, so nothing is fetched from another host.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from longops.api.ui import actions, pages
from longops.api.ui.render import HERE

PREFIX = "/ui"
STATIC_PATH = "/ui/static"


def install_ui(app: FastAPI) -> None:
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.mount(STATIC_PATH, StaticFiles(directory=HERE / "static"), name="ui-static")
