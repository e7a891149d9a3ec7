"""Property-based fuzzing of every operation in the app's own OpenAPI description (schemathesis).

Each operation gets schemathesis' valid (positive) and invalid (negative) cases, plus cases aimed
past the first checks: path parameters filled with real ids of the caller's objects, and create
bodies whose provider or job type exists, so the generated metadata, params and input reach the
deeper validation and the database. Every answer must be below 500, and every error must be
exactly the documented envelope ``{"error": {"type", "message"}}``.

The example count is bounded (:data:`MAX_EXAMPLES` per strategy) so the run stays well under a
minute per backend; shrinking is off, and every problem found is reported at the end, each with a
curl command that reproduces it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode

from tests.support.keys import bearer, create_key_now
from tests.support.noop_handlers import NOOP_JOB_TYPE
from tests.support.servers import app_in_thread

MAX_EXAMPLES = 25

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
JSON_OBJECTS = st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=5)
CREATE_BODIES = {
    "/v1/batches": st.fixed_dictionaries(
        {
            "provider": st.just("simulator"),
            "requests": st.lists(
                st.fixed_dictionaries(
                    {
                        "custom_id": st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
                        "params": JSON_OBJECTS,
                    }
                ),
                min_size=1,
                max_size=3,
                unique_by=lambda request: request["custom_id"],
            ),
        },
        optional={"metadata": JSON_OBJECTS},
    ),
    "/v1/jobs": st.fixed_dictionaries(
        {"job_type": st.just(NOOP_JOB_TYPE)}, optional={"input": JSON_VALUES, "metadata": JSON_OBJECTS}
    ),
}
ID_PARAMS = {"batch_id": "batch", "job_id": "job", "file_id": "file"}


def envelope_problem(response: requests.Response) -> str | None:
    if response.status_code >= 500:
        return "a server error"
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return "an error that is not JSON"
    error = body.get("error") if isinstance(body, dict) else None
    if (
        set(body) != {"error"}
        or not isinstance(error, dict)
        or set(error) != {"type", "message"}
        or not all(isinstance(value, str) and value for value in error.values())
    ):
        return "an error outside the envelope"
    return None


# How a request is framed on the wire is the HTTP server's to judge, before the app sees it: uvicorn
# answers a malformed `Content-Length` (say) with its own plain-text 400. The fuzzer is here to
# find what the app does with what it is given, so generated values of these headers are dropped.
FRAMING_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade"}
)


def drop_framing_headers(case: Case) -> None:
    for name in [name for name in case.headers if name.lower() in FRAMING_HEADERS]:
        del case.headers[name]


def strategies_for(operation: Any, ids: dict[str, str]) -> list[st.SearchStrategy[Case]]:
    found = [operation.as_strategy(GenerationMode.POSITIVE)]
    if operation.query or operation.headers or operation.body:  # else there is nothing to make invalid
        found.append(operation.as_strategy(GenerationMode.NEGATIVE))
    names = [param.name for param in operation.path_parameters]
    if names and all(name in ID_PARAMS for name in names):
        real = {name: ids[ID_PARAMS[name]] for name in names}
        found.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=real))
    bodies = CREATE_BODIES.get(operation.path) if operation.method.upper() == "POST" else None
    if bodies is not None:
        found.append(
            st.tuples(operation.as_strategy(GenerationMode.POSITIVE), bodies).map(
                lambda pair: _with_body(*pair)
            )
        )
    return found


def _with_body(case: Case, body: dict[str, Any]) -> Case:
    case.body = body
    return case


def seed(url: str, key: str) -> dict[str, str]:
    with httpx.Client(base_url=url, headers=bearer(key), timeout=30) as client:
        batch = client.post(
            "/v1/batches",
            json={"provider": "simulator", "requests": [{"custom_id": "a", "params": {"max_tokens": 1}}]},
        )
        job = client.post("/v1/jobs", json={"job_type": NOOP_JOB_TYPE, "input": {"n": 1}})
        file = client.post("/v1/files", content=b'{"custom_id": "a", "params": {}}\n')
    for response in (batch, job, file):
        assert response.status_code == 201, response.text
    return {"batch": batch.json()["id"], "job": job.json()["id"], "file": file.json()["id"]}


def test_fuzz_every_operation(make_settings: Any, database_url: str, tmp_path: Path) -> None:
    config = make_settings(files_dir=str(tmp_path / "files"), handlers="tests.support.noop_handlers")
    problems: list[str] = []
    with app_in_thread(config, run_engine=False) as app, requests.Session() as session:
        key = create_key_now(database_url, "fuzz")
        session.headers.update(bearer(key))
        ids = seed(app.url, key)
        schema = schemathesis.openapi.from_dict(app.app.openapi())
        operations = [result.ok() for result in schema.get_all_operations()]
        assert any(operation.path.startswith("/v1/") for operation in operations)
        for operation in operations:
            for strategy in strategies_for(operation, ids):

                @settings(
                    max_examples=MAX_EXAMPLES,
                    deadline=None,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def check(case: Case) -> None:
                    drop_framing_headers(case)
                    response = case.call(base_url=app.url, session=session, headers=bearer(key), timeout=30)
                    problem = envelope_problem(response)
                    if problem is not None:
                        problems.append(
                            f"{case.operation.label}: {problem} ({response.status_code} "
                            f"{response.text[:300]!r})\n    {case.as_curl_command(headers=bearer('<key>'))}"
                        )

                check()
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:20])
