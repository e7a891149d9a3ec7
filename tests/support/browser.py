"""Headless Chromium for the dashboard tests: Debian's ``chromium`` driven by Playwright for Python.

Playwright's own browser download is never used (``executable_path`` points at the system's
chromium; the README's test command, which .ci/run runs, installs it with apt-get). Every page the
tests open is watched: each request the page makes is recorded, and one to any host other than
127.0.0.1 is aborted and recorded as leaving loopback, so a test can assert that nothing did. The
host resolver maps every other name to nothing as a second lock.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright

CHROMIUM = os.environ.get("LONGOPS_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
LOOPBACK = frozenset({"127.0.0.1"})
WAIT_MS = 60_000  # the bound of every wait on a page: a condition awaited, never a sleep

expect.set_options(timeout=WAIT_MS)  # Playwright's assertions otherwise give up after 5 s


@contextmanager
def chromium() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class WatchedContext:
    """A browser context (its own cookies) whose every request is recorded."""

    context: BrowserContext
    requested: list[str] = field(default_factory=list)
    left_loopback: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)  # e.g. Content-Security-Policy violations

    def new_page(self) -> Page:
        page = self.context.new_page()
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("console", lambda msg: self.console_errors.append(msg.text) if msg.type == "error" else None)
        return page

    def _route(self, route: Route) -> None:
        url = route.request.url
        self.requested.append(url)
        if urlsplit(url).hostname not in LOOPBACK and not url.startswith(("data:", "blob:")):
            self.left_loopback.append(url)
            route.abort()
            return
        route.continue_()


@contextmanager
def watched_context(browser: Browser) -> Iterator[WatchedContext]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    watched = WatchedContext(context)
    context.route("**/*", watched._route)
    try:
        yield watched
    finally:
        context.close()
