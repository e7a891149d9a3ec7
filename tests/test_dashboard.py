"""The dashboard (``/ui/``) in a real headless Chromium, against the real app on a loopback port, on
both backends: what the pages show, that they update by themselves, the actions and their agreement
with the REST API, rendering of hostile values, sign-in, sessions, organizations and CSRF, and the
offline ``/docs`` and ``/redoc``.

Every wait is on a condition in the page with Playwright's bounded timeout (tests/support/browser.py),
never a sleep. Screenshots for the README are written by ``test_pages_follow_a_batch_to_completion``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import chromium, watched_context
from tests.support.harness import message
from tests.support.keys import bearer, create_key_now, revoke_keys_now
from tests.support.receiver import Receiver
from tests.support.servers import app_in_thread

T = TypeVar("T")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
# No double quote in them: JSON would escape it, and the page shows the values as JSON.
HOSTILE_ANSWER = "<script>window.__pwned='script'</script><img src=x onerror=window.__pwned='img'>"
HOSTILE_METADATA = {"note": "<img src=x onerror=window.__pwned='meta'>", "team": "<b>bold</b>"}


@pytest.fixture
def browser(database_url: str) -> Iterator[Browser]:
    """Launched after the test's database exists and closed before it is dropped: the database helpers
    call ``asyncio.run``, which cannot run while Playwright's sync API holds this thread's loop."""
    with chromium() as launched:
        yield launched


def create_batch(url: str, texts: list[str], key: str | None = None, **extra: Any) -> dict[str, Any]:
    requests = [{"custom_id": f"r{i}", "params": message(text)} for i, text in enumerate(texts)]
    response = httpx.post(
        f"{url}/v1/batches",
        json={"provider": "simulator", "requests": requests, **extra},
        headers=bearer(key) if key else {},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def off_loop(function: Callable[..., T], *args: Any) -> T:
    """Run ``function`` in a worker thread: Playwright's sync API holds an event loop in this one, so
    the key helpers' ``asyncio.run`` cannot run here."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()


def create_job(url: str, job_type: str, input: Any, **extra: Any) -> dict[str, Any]:
    response = httpx.post(f"{url}/v1/jobs", json={"job_type": job_type, "input": input, **extra}, timeout=30)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def api_get(url: str, path: str, key: str | None = None) -> httpx.Response:
    return httpx.get(f"{url}{path}", headers=bearer(key) if key else {}, timeout=30)


def batch_row(page: Page, batch_id: str) -> Any:
    return page.locator(f'tr[data-batch-id="{batch_id}"]')


def mark_document(page: Page) -> None:
    """A mark on this document: still there later means the page was never reloaded."""
    page.evaluate("window.__loaded_once = true")


def was_not_reloaded(page: Page) -> bool:
    return bool(page.evaluate("window.__loaded_once === true"))


def test_pages_follow_a_batch_to_completion(browser: Browser, make_settings, database_url: str) -> None:  # type: ignore[no-untyped-def]
    """An API-only server (``--no-engine``) serves the pages; the batch stays ``created`` until an engine
    starts on the same database, and the open pages then show it completing, without a reload."""
    settings = make_settings(simulator_processing_seconds=0.5)
    with app_in_thread(settings, run_engine=False) as ui, watched_context(browser) as watched:
        batch = create_batch(
            ui.url, ["hello", "world", "[sim:error=overloaded_error] no luck"], metadata={"run": "nightly"}
        )
        other = create_batch(ui.url, ["one more"], metadata={"team": "search"})
        listing, detail = watched.new_page(), watched.new_page()
        listing.goto(f"{ui.url}/ui/batches")
        row = batch_row(listing, batch["id"])
        expect(row).to_contain_text("created")
        expect(row).to_contain_text("0/3")
        expect(batch_row(listing, other["id"])).to_contain_text("0/1")
        detail.goto(f"{ui.url}/ui/batches/{batch['id']}")
        expect(detail.locator("#count-total")).to_have_text("3")
        expect(detail.locator("#count-processing")).to_have_text("3")
        for page in (listing, detail):
            mark_document(page)

        with app_in_thread(settings) as _engine:  # the engine, on the same database
            expect(row).to_contain_text("completed")
            expect(row).to_contain_text("3/3")
            expect(row).to_contain_text("1 errored")
            expect(detail.locator(".headline .status")).to_have_text("completed")
            expect(detail.locator("#count-succeeded")).to_have_text("2")
            expect(detail.locator("#count-errored")).to_have_text("1")
            expect(detail.locator("#count-processing")).to_have_text("0")
            expect(detail.locator('tr[data-custom-id="r2"]')).to_contain_text("overloaded_error")
            assert was_not_reloaded(listing) and was_not_reloaded(detail)

            api = api_get(ui.url, f"/v1/batches/{batch['id']}").json()
            assert api["status"] == "completed"
            assert api["request_counts"]["succeeded"] == 2 and api["request_counts"]["errored"] == 1
            expect(detail.locator(".mono").first).to_be_visible()
            assert api["provider_batches"][0]["provider_batch_id"] in detail.content()

            overview = watched.new_page()
            overview.goto(f"{ui.url}/ui/")
            expect(overview.locator("#batch-counts")).to_contain_text("completed")
            attention = overview.locator("section", has_text="Needs attention")
            expect(attention.locator(f'tr[data-batch-id="{batch["id"]}"]')).to_be_visible()
            expect(batch_row(listing, other["id"])).to_contain_text("completed")
            if database_url.startswith("sqlite"):  # one set of screenshots, from one backend
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                overview.screenshot(path=SCREENSHOTS / "overview.png", full_page=True)
                listing.screenshot(path=SCREENSHOTS / "batches.png", full_page=True)
                detail.screenshot(path=SCREENSHOTS / "batch.png", full_page=True)
        assert watched.left_loopback == [] and watched.console_errors == []


def test_cancel_and_download_agree_with_the_api(browser: Browser, make_settings) -> None:  # type: ignore[no-untyped-def]
    with (
        app_in_thread(make_settings(simulator_processing_seconds=3600)) as app,
        watched_context(browser) as watched,
    ):
        batch = create_batch(app.url, ["a", "b"])
        page = watched.new_page()
        page.goto(f"{app.url}/ui/batches/{batch['id']}")
        expect(page.locator(".headline .status")).to_have_text("running")  # submitted, then held
        page.get_by_role("button", name="Cancel", exact=True).click()
        expect(page.locator(".flash")).to_have_text("Cancellation requested.")
        assert api_get(app.url, f"/v1/batches/{batch['id']}").json()["cancel_requested_at"] is not None
        expect(page.locator(".headline .status")).to_have_text("cancelled")
        expect(page.get_by_role("button", name="Cancel", exact=True)).to_have_count(0)
        expect(page.locator("#count-cancelled")).to_have_text("2")
        assert api_get(app.url, f"/v1/batches/{batch['id']}").json()["status"] == "cancelled"

        with page.expect_download() as download_info:
            page.get_by_role("button", name="Download results", exact=True).click()
        download = download_info.value
        assert download.suggested_filename == f"{batch['id']}.ndjson"
        downloaded = Path(download.path()).read_text()
        assert downloaded == api_get(app.url, f"/v1/batches/{batch['id']}/results").text
        assert downloaded.count("\n") == 2 and '"status":"cancelled"' in downloaded
        assert watched.left_loopback == []


def test_hostile_answers_and_metadata_render_as_text(browser: Browser, make_settings) -> None:  # type: ignore[no-untyped-def]
    with app_in_thread(make_settings()) as app, watched_context(browser) as watched:
        batch = create_batch(app.url, [HOSTILE_ANSWER], metadata=HOSTILE_METADATA)
        page = watched.new_page()
        page.goto(f"{app.url}/ui/batches/{batch['id']}")
        expect(page.locator(".headline .status")).to_have_text("completed")
        expect(page.locator("#metadata")).to_contain_text(HOSTILE_METADATA["note"])
        expect(page.locator("#metadata")).to_contain_text("<b>bold</b>")
        page.locator('tr[data-custom-id="r0"] a').click()
        expect(page.locator("#response")).to_contain_text(HOSTILE_ANSWER)
        expect(page.locator("#request")).to_contain_text("<script>")
        for where in (page.locator("main"),):
            expect(where.locator("script")).to_have_count(0)
            expect(where.locator("img")).to_have_count(0)
            expect(where.locator("b")).to_have_count(0)
        assert page.evaluate("typeof window.__pwned") == "undefined"
        page.go_back()
        expect(page.locator("#metadata")).to_be_visible()
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert watched.dialogs == [] and watched.left_loopback == [] and watched.console_errors == []


def test_sign_in_sessions_organizations_and_csrf(browser: Browser, make_settings, database_url: str) -> None:  # type: ignore[no-untyped-def]
    with app_in_thread(make_settings(simulator_processing_seconds=3600)) as app:
        key_a = off_loop(create_key_now, database_url, "acme")
        key_b = off_loop(create_key_now, database_url, "globex")
        mine = create_batch(app.url, ["ours"], key=key_a)
        theirs = create_batch(app.url, ["theirs"], key=key_b)
        with watched_context(browser) as watched:
            page = watched.new_page()
            page.goto(f"{app.url}/ui/batches")  # signed out: sent to sign-in
            expect(page).to_have_url(f"{app.url}/ui/sign-in")

            page.locator('input[name="api_key"]').fill(key_a + "x")  # wrong key: refused
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator('[role="alert"]')).to_contain_text("not valid")
            assert not [c for c in watched.context.cookies() if c["name"] == "longops_session"]

            page.locator('input[name="api_key"]').fill(key_a)
            page.get_by_role("button", name="Sign in").click()
            expect(page).to_have_url(f"{app.url}/ui/")
            expect(page.locator(".org")).to_have_text("acme")
            (cookie,) = [c for c in watched.context.cookies() if c["name"] == "longops_session"]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
            assert not cookie["secure"]  # plain HTTP on loopback; Secure over HTTPS
            assert key_a not in cookie["value"] and key_a not in page.content()

            page.goto(f"{app.url}/ui/batches")  # one organization never sees another's batches
            expect(batch_row(page, mine["id"])).to_be_visible()
            expect(batch_row(page, theirs["id"])).to_have_count(0)
            answer = page.goto(f"{app.url}/ui/batches/{theirs['id']}")
            assert answer is not None and answer.status == 404
            assert theirs["id"] not in page.locator("main table").all_inner_texts().__str__()
            assert page.request.get(f"{app.url}/ui/batches/{theirs['id']}/results").status == 404

            # CSRF: the session's own cookie, but no token (or a wrong one): refused, nothing done.
            cancel = f"{app.url}/ui/batches/{mine['id']}/cancel"
            assert page.request.post(cancel, form={}).status == 403
            assert page.request.post(cancel, form={"csrf_token": "forged"}).status == 403
            assert api_get(app.url, f"/v1/batches/{mine['id']}", key_a).json()["cancel_requested_at"] is None

            page.goto(f"{app.url}/ui/batches/{mine['id']}")
            expect(page.locator(".headline .status")).to_have_text("running")
            off_loop(revoke_keys_now, database_url, "acme")  # the open page's next refresh ends on sign-in
            expect(page).to_have_url(f"{app.url}/ui/sign-in")
            page.goto(f"{app.url}/ui/")
            expect(page).to_have_url(f"{app.url}/ui/sign-in")

            page.locator('input[name="api_key"]').fill(key_b)  # sign in as the other org, then out
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator(".org")).to_have_text("globex")
            page.get_by_role("button", name="Sign out").click()
            expect(page).to_have_url(f"{app.url}/ui/sign-in")
            assert not [c for c in watched.context.cookies() if c["name"] == "longops_session"]
            page.goto(f"{app.url}/ui/batches/{theirs['id']}")
            expect(page).to_have_url(f"{app.url}/ui/sign-in")
            assert watched.left_loopback == []


@pytest.mark.parametrize(("path", "ready"), [("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")])
def test_api_docs_render_offline(browser: Browser, make_settings, path: str, ready: str) -> None:  # type: ignore[no-untyped-def]
    with app_in_thread(make_settings(), run_engine=False) as app, watched_context(browser) as watched:
        page = watched.new_page()
        page.goto(f"{app.url}{path}")
        expect(page.locator(ready).first).to_contain_text("longops")
        expect(page.get_by_text("/v1/batches").first).to_be_visible()
        assert watched.left_loopback == []
        assert any("/ui/static/vendor/" in url for url in watched.requested)


def test_job_pages_cancel_and_redeliver_the_webhook(browser: Browser, make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(handlers="tests.handlers_example", webhook_allow_private=True)
    with (
        Receiver().running() as receiver,
        app_in_thread(settings) as app,
        watched_context(browser) as watched,
    ):
        done = create_job(app.url, "echo", {"say": "<b>hi</b>"}, callback_url=receiver.url)
        page = watched.new_page()
        page.goto(f"{app.url}/ui/jobs")
        expect(page.locator(f'tr[data-job-id="{done["id"]}"]')).to_contain_text("completed")
        page.locator(f'tr[data-job-id="{done["id"]}"] a').click()
        expect(page.locator("#result")).to_contain_text('"say": "<b>hi</b>"')
        expect(page.locator("#input")).to_contain_text("<b>hi</b>")
        expect(page.locator("#attempts")).to_have_text("1")
        deliveries = page.locator("section", has_text="Webhook deliveries").locator("tbody tr")
        expect(deliveries).to_have_count(1)  # the page refreshed until the webhook was delivered
        page.get_by_role("button", name="Redeliver webhook", exact=True).click()
        expect(page.locator(".flash")).to_have_text("Webhook queued for redelivery.")
        expect(deliveries).to_have_count(2)
        api = api_get(app.url, f"/v1/jobs/{done['id']}/deliveries").json()["data"]
        assert [d["attempt"] for d in api] == [1, 2] and all(d["status_code"] == 200 for d in api)
        assert len({hit.headers["webhook-id"] for hit in receiver.hits}) == 1 and len(receiver.hits) == 2

        held = create_job(app.url, "hold", {"dir": str(tmp_path)})
        page.goto(f"{app.url}/ui/jobs/{held['id']}")
        expect(page.locator(".headline .status")).to_have_text("running")
        page.get_by_role("button", name="Cancel", exact=True).click()
        expect(page.locator(".flash")).to_have_text("Cancellation requested.")
        assert api_get(app.url, f"/v1/jobs/{held['id']}").json()["cancel_requested_at"] is not None
        (tmp_path / "release").touch()  # the handler returns; the job still ends cancelled
        expect(page.locator(".headline .status")).to_have_text("cancelled")
        assert api_get(app.url, f"/v1/jobs/{held['id']}").json()["status"] == "cancelled"
        assert watched.left_loopback == [] and watched.console_errors == []
