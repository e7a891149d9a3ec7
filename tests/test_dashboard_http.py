"""The dashboard's rules seen over plain HTTP (both backends): refused input names the field, every
page carries the security headers and no inline script, sign-in and CSRF refusals change nothing,
the cookie is Secure over HTTPS, and the key shows up in no page, cookie or log line.
"""

from __future__ import annotations

import logging
import re
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from tests.support.keys import bearer, create_key_now, revoke_keys_now
from tests.support.processes import wait_for
from tests.support.servers import app_in_thread

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


class InlineScriptFinder(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would refuse: inline scripts and handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        self.found.extend(f"{tag} {name}=" for name in names if name.startswith("on"))
        self.found.extend(f"{tag} style=" for name in names if name == "style")


def sign_in(client: httpx.Client, key: str) -> httpx.Response:
    token = CSRF_INPUT.search(client.get("/ui/sign-in").text)
    assert token is not None
    return client.post("/ui/sign-in", data={"api_key": key, "csrf_token": token[1]})


def create_batch(client: httpx.Client, key: str | None = None) -> dict[str, Any]:
    body = {"provider": "simulator", "requests": [{"custom_id": "a", "params": {"max_tokens": 8}}]}
    response = client.post("/v1/batches", json=body, headers=bearer(key) if key else {})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def test_every_page_has_the_headers_and_no_inline_script(make_settings) -> None:  # type: ignore[no-untyped-def]
    with app_in_thread(make_settings(), run_engine=False) as app, httpx.Client(base_url=app.url) as client:
        batch = create_batch(client)
        item = client.get(f"/v1/batches/{batch['id']}/items").json()["data"][0]
        pages = [
            "/ui/",
            "/ui/batches",
            f"/ui/batches/{batch['id']}",
            f"/ui/batches/{batch['id']}/items/{item['id']}",
            "/ui/jobs",
            "/ui/sign-in",
            "/ui/batches/job_unknown",
        ]
        for path in pages:
            response = client.get(path)
            assert response.status_code in (200, 404), path
            refresh = client.get(path, headers={"HX-Request": "true"})  # a live part, or the whole page
            assert refresh.status_code == response.status_code, path
            csp = response.headers["content-security-policy"]
            assert (
                "script-src 'self';" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
            )
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["cache-control"] == "no-store"
            finder = InlineScriptFinder()
            finder.feed(response.text)
            assert finder.found == [], (path, finder.found)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/ui/batches?status=bogus", "status: must be one of created, pending"),
        ("/ui/jobs?status=done", "status: must be one of"),
        ("/ui/batches/{id}?item_status=ok", "item_status: must be one of pending, running"),
        ("/ui/batches?q=" + "x" * 65, "q: String should have at most 64 characters"),
    ],
)
def test_a_wrong_filter_is_a_422_page_naming_it(make_settings, path: str, field: str) -> None:  # type: ignore[no-untyped-def]
    with app_in_thread(make_settings(), run_engine=False) as app, httpx.Client(base_url=app.url) as client:
        batch = create_batch(client)
        response = client.get(path.replace("{id}", batch["id"]))
        assert response.status_code == 422
        assert field in response.text
        assert response.headers["content-type"].startswith("text/html")


def test_sign_in_refusals_change_nothing_and_the_key_stays_out_of_sight(  # type: ignore[no-untyped-def]
    make_settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with app_in_thread(make_settings(), run_engine=False) as app, httpx.Client(base_url=app.url) as client:
        key = create_key_now(database_url, "acme")
        assert client.get("/ui/").status_code == 303  # a key exists: open mode is over
        assert client.get("/ui/").headers["location"] == "/ui/sign-in"
        assert client.get("/ui/", headers={"HX-Request": "true"}).headers["hx-redirect"] == "/ui/sign-in"

        no_token = client.post("/ui/sign-in", data={"api_key": key})
        assert no_token.status_code == 403 and "longops_session" not in no_token.headers.get("set-cookie", "")
        wrong = sign_in(client, key[:-1] + ("A" if key[-1] != "A" else "B"))
        assert wrong.status_code == 401 and "not valid" in wrong.text
        assert "longops_session" not in wrong.headers.get("set-cookie", "")

        signed_in = sign_in(client, key)
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/ui/"
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        assert "Secure" not in cookie
        overview = client.get("/ui/")
        assert overview.status_code == 200 and "acme" in overview.text
        assert key not in overview.text and key not in cookie

        revoke_keys_now(database_url, "acme")
        assert client.get("/ui/").status_code == 303  # the session ended with its key
    assert caplog.records, "the access log was expected to record the requests"
    assert all(key not in record.getMessage() for record in caplog.records)


def test_the_session_cookie_is_secure_over_https(make_settings, database_url: str) -> None:  # type: ignore[no-untyped-def]
    with app_in_thread(make_settings(), run_engine=False) as app, httpx.Client(base_url=app.url) as client:
        key = create_key_now(database_url, "acme")
        # uvicorn trusts X-Forwarded-Proto from 127.0.0.1, as from a TLS-terminating proxy there. The
        # client (plain HTTP here) keeps Secure cookies to itself, so they are sent back by hand.
        https = {"X-Forwarded-Proto": "https"}
        form = client.get("/ui/sign-in", headers=https)
        assert "Secure" in form.headers["set-cookie"]
        token = CSRF_INPUT.search(form.text)
        assert token is not None
        signed_in = client.post(
            "/ui/sign-in",
            data={"api_key": key, "csrf_token": token[1]},
            headers={**https, "Cookie": f"longops_csrf={token[1]}"},
        )
        assert signed_in.status_code == 303
        assert "longops_session=" in signed_in.headers["set-cookie"]
        assert "Secure" in signed_in.headers["set-cookie"]


def test_the_csrf_token_is_the_sessions_own(make_settings, database_url: str) -> None:  # type: ignore[no-untyped-def]
    """A token from another browser (another session) does not pass; the batch stays as it was."""
    with app_in_thread(make_settings(), run_engine=False) as app:
        key = create_key_now(database_url, "acme")
        with httpx.Client(base_url=app.url) as first, httpx.Client(base_url=app.url) as second:
            sign_in(first, key)
            sign_in(second, key)
            batch = create_batch(first, key)
            page = second.get(f"/ui/batches/{batch['id']}")
            token = CSRF_INPUT.search(page.text)
            assert token is not None
            refused = first.post(f"/ui/batches/{batch['id']}/cancel", data={"csrf_token": token[1]})
            assert refused.status_code == 403
            assert first.get(f"/v1/batches/{batch['id']}", headers=bearer(key)).json()["status"] == "created"
            done = second.post(f"/ui/batches/{batch['id']}/cancel", data={"csrf_token": token[1]})
            assert done.status_code == 303
            assert (
                first.get(f"/v1/batches/{batch['id']}", headers=bearer(key)).json()["status"] == "cancelled"
            )


def test_batches_filter_by_provider_in_the_api_and_the_page(make_settings) -> None:  # type: ignore[no-untyped-def]
    with app_in_thread(make_settings(), run_engine=False) as app, httpx.Client(base_url=app.url) as client:
        batch = create_batch(client)
        listed = client.get("/v1/batches", params={"provider": "simulator"}).json()["data"]
        assert [b["id"] for b in listed] == [batch["id"]]
        assert client.get("/v1/batches", params={"provider": "anthropic"}).json()["data"] == []
        too_long = client.get("/v1/batches", params={"provider": "p" * 33})
        assert too_long.status_code == 422 and too_long.json()["error"]["message"].startswith("provider:")
        assert batch["id"] in client.get("/ui/batches", params={"provider": "simulator"}).text
        assert batch["id"] not in client.get("/ui/batches", params={"provider": "anthropic"}).text


def test_the_batch_and_item_pages_show_the_apis_cost_and_tokens(make_settings) -> None:  # type: ignore[no-untyped-def]
    with app_in_thread(make_settings(), run_engine=True) as app, httpx.Client(base_url=app.url) as client:
        params = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "cost me something"}],
        }
        body = {"provider": "simulator", "requests": [{"custom_id": "a", "params": params}]}
        created = client.post("/v1/batches", json=body)
        assert created.status_code == 201, created.text
        batch_id = created.json()["id"]

        def ended() -> dict[str, Any] | None:
            batch: dict[str, Any] = client.get(f"/v1/batches/{batch_id}").json()
            return batch if batch["status"] == "completed" else None

        batch = wait_for(ended, timeout=60, what="the batch completed")
        [item] = client.get(f"/v1/batches/{batch_id}/items").json()["data"]
        assert item["cost"] is not None and batch["cost"]["amount"] == item["cost"]

        page = client.get(f"/ui/batches/{batch_id}").text
        assert f"${batch['cost']['amount']} (batch prices)" in page
        usage = batch["usage"]
        assert f"{usage['input_tokens']} / {usage['output_tokens']}" in page
        item_page = client.get(f"/ui/batches/{batch_id}/items/{item['id']}").text
        assert f"${item['cost']}" in item_page
        assert f"{item['usage']['input_tokens']} / {item['usage']['output_tokens']}" in item_page
        overview = client.get("/ui/").text  # the only batch of this database: today's spend is its cost
        assert f'<dd id="cost-today">${batch["cost"]["amount"]}</dd>' in overview
