"""Keys, organizations and open mode (DESIGN §5 "Authentication"), on both backends.

The route tests enumerate every ``/v1`` operation from the app's own OpenAPI description, so a route
added later is covered without touching this file, or makes it fail until it can be exercised (a path
parameter not in :data:`PARAM_KINDS`).
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from longops.api.auth import AUTH_MESSAGE
from longops.domain.ids import new_id
from longops.store import api_keys
from tests.support.harness import requests_for
from tests.support.keys import bearer, create_key_now
from tests.support.noop_handlers import NOOP_JOB_TYPE
from tests.support.processes import cluster, free_port, wait_for
from tests.support.servers import RunningApp, app_in_loop, app_in_thread

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
# The kinds of object a path parameter may name, and the id prefix of each kind. A route with any other
# path parameter fails the tests below until it is added here.
PARAM_KINDS: dict[str, tuple[str, ...]] = {
    "batch_id": ("batch",),
    "job_id": ("job", "batch"),  # a batch is a job too
    "file_id": ("file",),
}
ID_PREFIX = {"batch": "job", "job": "job", "file": "file"}
CALLBACK_URL = "http://127.0.0.1:9/hook"  # never called: these tests run without the engine


@dataclass
class Tenant:
    name: str
    key: str
    ids: dict[str, str]  # kind -> the id of one object of that kind

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.key)


@dataclass
class World:
    app: RunningApp
    client: httpx.AsyncClient
    a: Tenant
    b: Tenant
    revoked_key: str


def v1_operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path template, operation) of every ``/v1`` operation in the app's OpenAPI description."""
    found = [
        (method.upper(), path, operation)
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS and path.startswith("/v1/")
    ]
    assert found, "no /v1 operation in the OpenAPI description"
    return found


def path_params(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


def kinds_of(method: str, path: str, name: str) -> tuple[str, ...]:
    if name not in PARAM_KINDS:
        pytest.fail(f"{method} {path}: no way to fill path parameter {name!r}; add it to PARAM_KINDS")
    return PARAM_KINDS[name]


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda match: values[match.group(1)], path)


async def seed(client: httpx.AsyncClient, key: str) -> dict[str, str]:
    """One batch, one generic job and one file, created through the API with ``key``."""
    batch = await client.post(
        "/v1/batches",
        json={"provider": "simulator", "requests": requests_for("hello"), "callback_url": CALLBACK_URL},
        headers=bearer(key),
    )
    job = await client.post(
        "/v1/jobs",
        json={"job_type": NOOP_JOB_TYPE, "input": {"n": 1}, "callback_url": CALLBACK_URL},
        headers=bearer(key),
    )
    file = await client.post(
        "/v1/files",
        content=b'{"custom_id": "a", "params": {}}\n',
        headers={**bearer(key), "content-type": "application/octet-stream"},
    )
    for response in (batch, job, file):
        assert response.status_code == 201, response.text
    return {"batch": batch.json()["id"], "job": job.json()["id"], "file": file.json()["id"]}


@pytest.fixture
async def world(make_settings: Any, tmp_path: Path) -> AsyncIterator[World]:
    """Organizations acme (a) and globex (b), a key and one object of every kind each, and a revoked key."""
    settings = make_settings(
        files_dir=str(tmp_path / "files"), webhook_allow_private=True, handlers="tests.support.noop_handlers"
    )
    async with (
        app_in_loop(settings, run_engine=False) as app,
        httpx.AsyncClient(base_url=app.url, timeout=30) as client,
    ):
        db = app.app.state.longops.db
        a_key = (await api_keys.create_key(db, "acme")).secret
        b_key = (await api_keys.create_key(db, "globex")).secret
        revoked = await api_keys.create_key(db, "acme")
        await api_keys.revoke_key(db, revoked.record.id)
        a = Tenant("acme", a_key, await seed(client, a_key))
        b = Tenant("globex", b_key, await seed(client, b_key))
        yield World(app, client, a, b, revoked.secret)


# Lists of what the server offers, the same for every organization (and holding no ids).
SERVER_WIDE_LISTS = frozenset({"/v1/providers", "/v1/prices"})
# GETs without path parameters that list no objects with ids: those, and the usage report (sums;
# its organization scoping is tested in test_usage.py).
NOT_OBJECT_LISTS = SERVER_WIDE_LISTS | {"/v1/usage"}


async def listed_ids(world: World, tenant: Tenant) -> dict[str, set[str]]:
    """The ids every list operation of the organization's objects shows ``tenant`` (list
    operations: GET without path parameters, except the server-wide ones)."""
    shown: dict[str, set[str]] = {}
    for method, path, _ in v1_operations(world.app.app):
        if method == "GET" and not path_params(path) and path not in NOT_OBJECT_LISTS:
            response = await world.client.get(path, headers=tenant.headers)
            assert response.status_code == 200, f"GET {path}: {response.text}"
            shown[path] = ids_in(response.json())
    assert shown, "no list operation in the OpenAPI description"
    return shown


def ids_in(value: Any) -> set[str]:
    """Every ``id`` value anywhere in a JSON document."""
    found: set[str] = set()
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("id"), str):
                found.add(node["id"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


BAD_CREDENTIALS: dict[str, str | None] = {
    "no Authorization header": None,
    "a malformed key": "Bearer lo_tooshort",
    "a key without the lo_ prefix": "Bearer " + secrets.token_urlsafe(32),
    "a Bearer scheme without a token": "Bearer",
    "another scheme": "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
    "an unknown, well-formed key": "Bearer " + api_keys.generate_key(),
}


async def test_every_v1_route_answers_401_without_a_valid_key(world: World) -> None:
    credentials = {**BAD_CREDENTIALS, "a revoked key": f"Bearer {world.revoked_key}"}
    listed_before = (await listed_ids(world, world.a), await listed_ids(world, world.b))
    for method, path, _ in v1_operations(world.app.app):
        values = {name: world.a.ids[kinds_of(method, path, name)[0]] for name in path_params(path)}
        for what, value in credentials.items():
            headers = {} if value is None else {"Authorization": value}
            body = {} if method in ("POST", "PUT", "PATCH") else None
            response = await world.client.request(method, fill(path, values), headers=headers, json=body)
            assert response.status_code == 401, f"{method} {path} with {what}: {response.text}"
            assert response.json() == {"error": {"type": "authentication_error", "message": AUTH_MESSAGE}}
            assert response.headers["www-authenticate"] == "Bearer"
    # Nothing was created, cancelled or changed by any of those requests.
    assert (await listed_ids(world, world.a), await listed_ids(world, world.b)) == listed_before
    for tenant in (world.a, world.b):
        job = (await world.client.get(f"/v1/jobs/{tenant.ids['batch']}", headers=tenant.headers)).json()
        assert job["status"] == "created" and job["cancel_requested_at"] is None


def _normalized(response: httpx.Response, ids: dict[str, str]) -> tuple[int, str]:
    text = response.text
    for value in ids.values():
        text = text.replace(value, "<id>")
    return response.status_code, text


async def test_another_organizations_ids_answer_404_exactly_like_unknown_ids(world: World) -> None:
    checked = 0
    for method, path, operation in v1_operations(world.app.app):
        names = path_params(path)
        if not names:
            continue
        assert "requestBody" not in operation, f"{method} {path} takes a body: teach this test to send one"
        for kinds in itertools.product(*(kinds_of(method, path, name) for name in names)):
            theirs = {name: world.b.ids[kind] for name, kind in zip(names, kinds, strict=True)}
            unknown = {name: new_id(ID_PREFIX[kind]) for name, kind in zip(names, kinds, strict=True)}
            as_a = await world.client.request(method, fill(path, theirs), headers=world.a.headers)
            baseline = await world.client.request(method, fill(path, unknown), headers=world.a.headers)
            where = f"{method} {path} with {world.b.name}'s {'/'.join(kinds)}"
            assert as_a.status_code == 404, f"{where}: {as_a.status_code} {as_a.text}"
            assert as_a.json()["error"]["type"] == "not_found"
            assert _normalized(as_a, theirs) == _normalized(baseline, unknown), where
            checked += 1
    assert checked
    # acme's cancel and redeliver calls did nothing to globex's objects.
    for kind in ("batch", "job"):
        job = (await world.client.get(f"/v1/jobs/{world.b.ids[kind]}", headers=world.b.headers)).json()
        assert job["cancel_requested_at"] is None and job["status"] in ("created", "pending"), job


async def test_own_ids_reach_every_route(world: World) -> None:
    """The other side of the 404 test: with its own ids, the caller gets something other than the
    unknown-id answer on every route (so that test's 404s come from the scoping, not from bad ids)."""
    for method, path, _ in v1_operations(world.app.app):
        names = path_params(path)
        if not names:
            continue
        for kinds in itertools.product(*(kinds_of(method, path, name) for name in names)):
            own = {name: world.a.ids[kind] for name, kind in zip(names, kinds, strict=True)}
            unknown = {name: new_id(ID_PREFIX[kind]) for name, kind in zip(names, kinds, strict=True)}
            mine = await world.client.request(method, fill(path, own), headers=world.a.headers)
            baseline = await world.client.request(method, fill(path, unknown), headers=world.a.headers)
            assert mine.status_code < 500, f"{method} {path}: {mine.text}"
            assert _normalized(mine, own) != _normalized(baseline, unknown), f"{method} {path}: {mine.text}"


async def test_lists_show_only_the_callers_objects(world: World) -> None:
    for me, them in ((world.a, world.b), (world.b, world.a)):
        for path, shown in (await listed_ids(world, me)).items():
            assert shown, f"GET {path} showed {me.name} nothing"
            assert not shown & set(them.ids.values()), f"GET {path} showed {me.name} {them.name}'s objects"
    for path in SERVER_WIDE_LISTS:
        answers = [(await world.client.get(path, headers=t.headers)).json() for t in (world.a, world.b)]
        assert answers[0] == answers[1] and answers[0]["data"], path


async def test_references_and_idempotency_keys_stay_within_an_organization(world: World) -> None:
    theirs, unknown = world.b.ids["file"], new_id("file")
    ingest = [
        await world.client.post(
            "/v1/jobs",
            json={"job_type": "batch_ingest", "input": {"file_id": file_id, "provider": "simulator"}},
            headers=world.a.headers,
        )
        for file_id in (theirs, unknown)
    ]
    assert 400 <= ingest[0].status_code < 500, ingest[0].text
    assert _normalized(ingest[0], {"f": theirs}) == _normalized(ingest[1], {"f": unknown})

    created = {}
    for tenant in (world.a, world.b):
        response = await world.client.post(
            "/v1/batches",
            json={"provider": "simulator", "requests": requests_for(tenant.name)},
            headers={**tenant.headers, "Idempotency-Key": "order-1"},
        )
        assert response.status_code == 201, response.text
        created[tenant.name] = response.json()["id"]
    assert created["acme"] != created["globex"]


async def test_open_mode_on_loopback_lasts_until_a_key_exists(make_settings: Any) -> None:
    async with (
        app_in_loop(make_settings(), run_engine=False) as app,
        httpx.AsyncClient(base_url=app.url) as client,
    ):
        made = await client.post("/v1/batches", json={"provider": "simulator", "requests": requests_for("x")})
        assert made.status_code == 201, made.text
        assert (await client.get("/v1/batches", headers=bearer(api_keys.generate_key()))).status_code == 401

        key = await api_keys.create_key(app.app.state.longops.db, "default")
        assert (await client.get("/v1/batches")).status_code == 401
        listed = await client.get("/v1/batches", headers=bearer(key.secret))
        assert [batch["id"] for batch in listed.json()["data"]] == [made.json()["id"]]  # open mode's org


async def test_no_open_mode_unless_bound_to_loopback(make_settings: Any) -> None:
    # The app believes it listens on every interface (the test still connects over loopback).
    async with (
        app_in_loop(make_settings(host="0.0.0.0"), run_engine=False) as app,
        httpx.AsyncClient(base_url=app.url) as client,
    ):
        refused = await client.get("/v1/batches")
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
        key = await api_keys.create_key(app.app.state.longops.db, "acme")
        assert (await client.get("/v1/batches", headers=bearer(key.secret))).status_code == 200
        assert (await client.get("/healthz")).status_code == 200  # public paths need no key
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200


def test_bearer_header_variants(make_settings: Any, database_url: str) -> None:
    with app_in_thread(make_settings(host="0.0.0.0"), run_engine=False) as app:
        key = create_key_now(database_url, "acme")
        with httpx.Client(base_url=app.url) as client:
            assert client.get("/v1/jobs", headers={"Authorization": f"bearer {key}"}).status_code == 200
            assert client.get("/v1/jobs", headers={"Authorization": f"Bearer  {key}"}).status_code == 200
            assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}x"}).status_code == 401
            two = httpx.Headers([("Authorization", f"Bearer {key}"), ("Authorization", f"Bearer {key}")])
            assert client.get("/v1/jobs", headers=two).status_code == 401
            assert client.get(f"/v1/jobs?api_key={key}").status_code == 401  # only the header counts


# --- real processes: serve and the keys CLI -------------------------------------------------------------


def longops_cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "longops", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_serve_refuses_a_non_loopback_address_without_a_key(database_url: str, tmp_path: Path) -> None:
    env = {"LONGOPS_DATABASE_URL": database_url}
    port = free_port()
    refused = longops_cli(env, "serve", "--host", "0.0.0.0", "--port", str(port), cwd=tmp_path)
    assert refused.returncode != 0
    assert "an API key is needed" in refused.stderr and "longops keys create --org NAME" in refused.stderr
    assert "Uvicorn running" not in refused.stderr + refused.stdout  # it never listened

    # A revoked key is no key: still refused (here with the address from LONGOPS_HOST).
    key_id = re.findall(r"key_\w+", longops_cli(env, "keys", "create", "--org", "acme").stdout)[0]
    assert longops_cli(env, "keys", "revoke", key_id).returncode == 0
    refused = longops_cli({**env, "LONGOPS_HOST": "0.0.0.0"}, "serve", "--port", str(port), cwd=tmp_path)
    assert refused.returncode != 0 and "an API key is needed" in refused.stderr


def test_serve_on_loopback_without_keys_runs_open_and_says_so(database_url: str, tmp_path: Path) -> None:
    with cluster(tmp_path, LONGOPS_DATABASE_URL=database_url) as group:
        url = group.start_server("server", "--no-engine")
        assert httpx.get(url + "/v1/batches").status_code == 200
        assert "OPEN MODE" in group.processes[0].log()
        assert longops_cli(group.env, "keys", "create", "--org", "acme").returncode == 0
        assert httpx.get(url + "/v1/batches").status_code == 401  # open mode ends with the first key


def test_keys_cli_create_list_revoke(make_settings: Any, database_url: str) -> None:
    env = {"LONGOPS_DATABASE_URL": database_url}
    with app_in_thread(make_settings(), run_engine=False) as app, httpx.Client(base_url=app.url) as client:
        created = longops_cli(env, "keys", "create", "--org", "acme")
        assert created.returncode == 0, created.stderr
        lines = created.stdout.splitlines()
        key = lines[-1]
        assert api_keys.is_well_formed(key), created.stdout
        assert created.stdout.count(key) == 1 and key not in created.stderr
        (key_id,) = re.findall(r"key_\w+", created.stdout)

        listed = longops_cli(env, "keys", "list")
        assert listed.returncode == 0, listed.stderr
        (row,) = [line for line in listed.stdout.splitlines() if key_id in line]
        assert "acme" in row and key[: api_keys.SHOWN_CHARS] in row
        assert key[: api_keys.SHOWN_CHARS + 1] not in listed.stdout  # never more of the key than its prefix

        assert client.get("/v1/batches", headers=bearer(key)).status_code == 200
        revoked = longops_cli(env, "keys", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        assert client.get("/v1/batches", headers=bearer(key)).status_code == 401  # the very next request
        (row,) = [line for line in longops_cli(env, "keys", "list").stdout.splitlines() if key_id in line]
        assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", row)) == 2  # created and revoked

    bad_org = longops_cli(env, "keys", "create", "--org", "two words")
    assert bad_org.returncode == 1 and "invalid organization name" in bad_org.stderr
    unknown = longops_cli(env, "keys", "revoke", "key_doesnotexist")
    assert unknown.returncode == 1 and "no such key: key_doesnotexist" in unknown.stderr


# --- secrets in logs ------------------------------------------------------------------------------------


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback endpoint that answers 200 and records the headers of every POST."""
    received: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            received.append(dict(self.headers))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_no_secret_appears_in_the_logs(database_url: str, tmp_path: Path) -> None:
    anthropic_key = "sk-ant-test-SECRET-" + secrets.token_hex(16)
    webhook_key = base64.b64encode(secrets.token_bytes(32)).decode()
    wrong_key = api_keys.generate_key()
    env = {
        "LONGOPS_DATABASE_URL": database_url,
        "LONGOPS_LOG_LEVEL": "DEBUG",
        "ANTHROPIC_API_KEY": anthropic_key,
        "LONGOPS_WEBHOOK_SECRET": f"whsec_{webhook_key}",
        "LONGOPS_WEBHOOK_ALLOW_PRIVATE": "true",
        "LONGOPS_POLL_INTERVAL_SECONDS": "0.2",
        "LONGOPS_POLL_JITTER_SECONDS": "0.05",
        "LONGOPS_SUBMIT_INTERVAL_SECONDS": "0.1",
        "LONGOPS_SIMULATOR_PROCESSING_SECONDS": "0",
    }
    with cluster(tmp_path, **env) as group, webhook_receiver() as (callback_url, received):
        # "anthropic" reaches a separate simulator through the Anthropic SDK, with the real key in its
        # headers; "simulator" is the one the engine starts itself.
        group.env["ANTHROPIC_BASE_URL"] = group.start_simulator()
        del group.env["LONGOPS_SIMULATOR_URL"]
        created = longops_cli(group.env, "keys", "create", "--org", "acme")
        api_key = created.stdout.splitlines()[-1]
        url = group.start_server("server")
        with httpx.Client(base_url=url, headers=bearer(api_key), timeout=30) as client:
            ids = []
            for provider in ("simulator", "anthropic"):
                response = client.post(
                    "/v1/batches",
                    json={
                        "provider": provider,
                        "requests": requests_for("hi", "there"),
                        "callback_url": callback_url,
                    },
                )
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
            for batch_id in ids:
                wait_for(
                    lambda batch_id=batch_id: (
                        client.get(f"/v1/batches/{batch_id}").json()["status"] == "completed"
                    ),
                    60,
                    f"batch {batch_id} to complete",
                )
            wait_for(lambda: len(received) >= 2, 60, "both webhooks")
            assert all(headers.get("webhook-signature", "").startswith("v1,") for headers in received)
            assert httpx.get(url + "/v1/batches", headers=bearer(wrong_key)).status_code == 401
        server = group.processes[-1]
        server.terminate()  # flushes everything it had to say
    log = server.log()
    assert " DEBUG " in log and "POST /v1/batches" in log  # the log really is verbose
    for name, secret in {
        "ANTHROPIC_API_KEY": anthropic_key,
        "LONGOPS_WEBHOOK_SECRET": webhook_key,
        "the API key": api_key,
        "a rejected API key": wrong_key,
    }.items():
        assert secret not in log, f"{name} appears in the server's log"
        assert secret[8:24] not in log, f"part of {name} appears in the server's log"
