"""The ``longops`` command (DESIGN §5 "CLI").

Server-side commands import their implementation inside the command, so the client commands start fast
and need nothing but the SDK. Expected failures (the service's errors, an unreachable server, a bad input
file) print one ``error: ...`` line on stderr and exit 1; a traceback means a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import inspect
import itertools
import json
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar, get_type_hints

import pydantic
import typer
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Column, Table
from rich.text import Text

from longops.client import APIConnectionError, APIError, Client, IngestError, NotFoundError, WaitTimeout
from longops.domain.answers import answer_text, answer_usage
from longops.domain.requests import BatchValidationError, parse_requests
from longops.domain.schemas import Batch, ErrorDetail, Job, ResultLine
from longops.domain.statuses import JobStatus
from longops.settings import Settings, load_settings

if TYPE_CHECKING:
    from longops.store.db import Database

T = TypeVar("T")

app = typer.Typer(
    name="longops",
    help="Long-running operations for LLM batch workloads: run the server, submit and track batches.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,  # locals would include the API key
)


@dataclass(frozen=True, slots=True)
class _Globals:
    server_url: str | None
    api_key: str | None


_SERVER_URL_HELP = "Server to talk to."
_API_KEY_HELP = "API key (sent as a Bearer token)."
_SERVER_DEFAULT = "LONGOPS_SERVER_URL, else http://127.0.0.1:8000"


@app.callback()
def _global_options(
    ctx: typer.Context,
    server_url: Annotated[
        str | None,
        typer.Option(
            envvar="LONGOPS_SERVER_URL", metavar="URL", show_default=_SERVER_DEFAULT, help=_SERVER_URL_HELP
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="LONGOPS_API_KEY", metavar="KEY", show_default="LONGOPS_API_KEY", help=_API_KEY_HELP
        ),
    ] = None,
) -> None:
    ctx.obj = _Globals(server_url, api_key)


# The same two options after a client command's name (`longops status ID --server-url URL`). They read
# no environment variable here: only a value given on this side overrides the one before the command.
_ServerURL = Annotated[str | None, typer.Option("--server-url", metavar="URL", help=_SERVER_URL_HELP)]
_APIKey = Annotated[str | None, typer.Option("--api-key", metavar="KEY", help=_API_KEY_HELP)]


def _client_command(
    typer_app: typer.Typer, name: str | None = None
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a command that talks to a server; it also takes ``--server-url`` / ``--api-key``.

    Typer reads a command's options from its signature, so the two are added to the signature here
    once instead of to every command by hand.
    """

    def register(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        extra = [
            inspect.Parameter(
                "server_url", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_ServerURL
            ),
            inspect.Parameter("api_key", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_APIKey),
        ]

        @functools.wraps(command)
        def with_globals(
            *args: Any, server_url: str | None = None, api_key: str | None = None, **kwargs: Any
        ) -> None:
            ctx: typer.Context = kwargs["ctx"]
            options: _Globals = ctx.obj
            ctx.obj = _Globals(server_url or options.server_url, api_key or options.api_key)
            command(*args, **kwargs)

        with_globals.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*signature.parameters.values(), *extra]
        )
        with_globals.__annotations__ = {
            **get_type_hints(command, include_extras=True),
            "server_url": _ServerURL,
            "api_key": _APIKey,
        }
        typer_app.command(name)(with_globals)
        return command

    return register


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = 160  # a pipe has no width; Rich's default 80 would cut ids
    return console


@contextlib.contextmanager
def _client(ctx: typer.Context) -> Iterator[Client]:
    """A client for the global options; the service's errors inside the block become one line."""
    options: _Globals = ctx.obj
    try:
        client = Client(base_url=options.server_url, api_key=options.api_key)
    except ValueError as exc:
        _fail(str(exc))
    try:
        with client:
            yield client
    except APIConnectionError as exc:
        _fail(
            f"{exc.message}; start it with `longops serve`, or point the CLI at another server with "
            "--server-url URL (or LONGOPS_SERVER_URL)"
        )
    except APIError as exc:
        _fail(str(exc))
    except BrokenPipeError:
        raise  # stdout's reader left (`| head`): Click exits quietly
    except OSError as exc:
        _fail(f"{exc.filename or 'output'}: {exc.strerror or exc}")


def _settings() -> Settings:
    try:
        return load_settings()
    except pydantic.ValidationError as exc:
        problem = exc.errors()[0]
        _fail(f"invalid configuration: LONGOPS_{str(problem['loc'][0]).upper()}: {problem['msg']}")


# --- server side -------------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            metavar="HOST", show_default="LONGOPS_HOST, else 127.0.0.1", help="Interface to listen on."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(metavar="PORT", show_default="LONGOPS_PORT, else 8000", help="Port to listen on."),
    ] = None,
    no_engine: Annotated[bool, typer.Option("--no-engine", help="Serve the API only.")] = False,
) -> None:
    """Run the REST API, and the engine unless --no-engine."""
    from longops.server import StartupError
    from longops.server import serve as run_server

    try:
        run_server(_settings(), host=host, port=port, run_engine=not no_engine)
    except StartupError as exc:
        _fail(str(exc))


@app.command()
def engine() -> None:
    """Run the engine only (leader election, submitter, poller, workers, webhooks); no API."""
    from longops.server import StartupError, run_engine

    try:
        run_engine(_settings())
    except StartupError as exc:
        _fail(str(exc))


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (the server also does this on start)."""

    async def nothing(_db: Database) -> None:
        return None

    _on_database(nothing)
    typer.echo("the database schema is up to date")


@app.command()
def simulator(
    host: Annotated[str, typer.Option(metavar="HOST", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on.")] = 8765,
    processing_seconds: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            show_default="LONGOPS_SIMULATOR_PROCESSING_SECONDS, else 5",
            help="Seconds a batch stays in progress.",
        ),
    ] = None,
    error_rate: Annotated[
        float | None,
        typer.Option(
            metavar="RATE",
            show_default="LONGOPS_SIMULATOR_ERROR_RATE, else 0",
            help="Share of requests that error, 0-1.",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            show_default="LONGOPS_SIMULATOR_STATE_DIR, else ./.longops-simulator",
            help="Where the simulator keeps its state.",
        ),
    ] = None,
) -> None:
    """Run the offline provider simulator (speaks the providers' batch APIs)."""
    from longops.providers.simulator.server import run

    settings = _settings()
    try:
        run(
            host,
            port,
            processing_seconds=(
                processing_seconds
                if processing_seconds is not None
                else settings.simulator_processing_seconds
            ),
            error_rate=error_rate if error_rate is not None else settings.simulator_error_rate,
            state_dir=str(state_dir) if state_dir is not None else settings.simulator_state_dir,
        )
    except OSError as exc:
        if exc.filename is not None:  # its state directory
            _fail(f"the simulator cannot use {exc.filename}: {exc.strerror}; choose another --state-dir")
        _fail(f"the simulator cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port")


keys_app = typer.Typer(
    name="keys",
    help="Create, list and revoke API keys (in the database of LONGOPS_DATABASE_URL, directly).",
    no_args_is_help=True,
)
app.add_typer(keys_app)


def _on_database(operation: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``operation`` on the configured database, brought up to date first (as the server does);
    a database that cannot be opened, or fails midway, is one line naming LONGOPS_DATABASE_URL."""
    from longops.store.connect import OPEN_ERRORS, DatabaseUnavailable, open_upgraded, unavailable

    url = _settings().database_url

    async def run() -> T:
        db = await open_upgraded(url)
        try:
            return await operation(db)
        except OPEN_ERRORS as exc:
            raise unavailable(exc, url) from exc
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except DatabaseUnavailable as exc:
        _fail(str(exc))


@keys_app.command("create")
def keys_create(
    org: Annotated[
        str, typer.Option("--org", metavar="NAME", help="The organization the key belongs to (its data).")
    ],
) -> None:
    """Create an API key. The key is printed once, alone on the last line, and stored only as a hash."""
    from longops.store import api_keys

    try:
        api_keys.check_org_name(org)
    except api_keys.InvalidOrgName as exc:
        _fail(str(exc))
    created = _on_database(lambda db: api_keys.create_key(db, org))
    typer.echo(f"created {created.record.id} for organization {org}; the key is shown only this once:")
    typer.echo(created.secret)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys: id, organization, prefix, created, revoked (never the keys themselves)."""
    from longops.store import api_keys

    keys = _on_database(api_keys.list_keys)
    names = ("id", "organization", "prefix", "created", "revoked")
    table = Table(*(Column(name, no_wrap=True) for name in names), box=box.SIMPLE_HEAD)
    for key in keys:
        table.add_row(
            Text(key.id),
            Text(key.org_id),
            Text(key.prefix + "…"),
            _when(key.created_at),
            _when(key.revoked_at),
        )
    _console().print(table)
    if not keys:
        _console(stderr=True).print(
            "no API keys yet: create one with `longops keys create --org NAME`", markup=False
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[
        str, typer.Argument(metavar="KEY_ID", help="The key's id (key_…), as `keys list` shows it.")
    ],
) -> None:
    """Revoke an API key: requests with it get 401 from the next one on."""
    from longops.store import api_keys

    try:
        key = _on_database(lambda db: api_keys.revoke_key(db, key_id))
    except api_keys.KeyNotFound:
        _fail(f"no such key: {key_id}")
    typer.echo(f"{key.id} ({key.org_id}) revoked at {_when(key.revoked_at)}")


# --- client side -------------------------------------------------------------------------------------

RequestsFile = Annotated[
    Path, typer.Argument(metavar="FILE", help='JSONL file, one {"custom_id", "params"} request a line.')
]
ProviderName = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        show_default=False,
        help="Provider of the batch (required; `longops providers` lists this server's).",
    ),
]
EndpointPath = Annotated[
    str | None,
    typer.Option(
        metavar="PATH", help="The batch's endpoint, e.g. /v1/embeddings (default: the provider's first)."
    ),
]


@_client_command(app)
def submit(
    ctx: typer.Context,
    file: RequestsFile,
    provider: ProviderName = None,
    endpoint: EndpointPath = None,
    metadata: Annotated[
        str | None, typer.Option(metavar="JSON", help="A JSON object stored with the batch.")
    ] = None,
    callback_url: Annotated[
        str | None, typer.Option(metavar="URL", help="Webhook URL called when the batch ends.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the batch ends.")] = False,
    output: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="With --wait: write the results (NDJSON) to this file."),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="Seconds to wait for an uploaded file's ingestion, and with --wait for the batch.",
        ),
    ] = 172_800,
    upload_threshold: Annotated[
        float,
        typer.Option(
            min=0,
            metavar="MIB",
            help="Files larger than this many MiB are uploaded and checked by the server (0: always).",
        ),
    ] = 16,
) -> None:
    """Submit a batch and print its id. With --wait, exit 1 unless it ends completed.

    A small file is checked here, line by line, and sent in one request. A larger one is uploaded as
    is (streamed) and the server ingests it, showing progress; a bad line is reported the same way.
    """
    if output is not None and not wait:
        _fail("--output needs --wait (or use `longops results ID --output FILE` later)")
    extra = _json_object(metadata, "--metadata") if metadata is not None else None
    size = _file_size(file)
    upload = upload_threshold == 0 or size > upload_threshold * 1024 * 1024
    requests = None if upload else _read_requests(file)
    with _client(ctx) as client:
        provider = _required_provider(client, provider)
        if requests is None:
            batch = _ingest_with_progress(
                client, file, size, provider, endpoint, extra, callback_url, timeout
            )
        else:
            batch = client.batches.create(
                provider=provider,
                requests=requests,
                endpoint=endpoint,
                metadata=extra,
                callback_url=callback_url,
            )
        typer.echo(batch.id)
        if not wait:
            return
        final = _wait_with_progress(client, batch, timeout)
        if output is not None:
            count = _export(client.batches.results(final.id), output, ResultFormat.jsonl)
            _console(stderr=True).print(f"wrote {count} results to {output}", markup=False)
        _print_batch(final, _console(stderr=True))
        if final.status != JobStatus.COMPLETED:
            _fail(f"batch {final.id} ended {final.status}")


@_client_command(app)
def status(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(metavar="ID", help="A batch or job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON object.")] = False,
) -> None:
    """Show a batch's (or job's) status, counts and provider batches."""
    with _client(ctx) as client:
        found: Batch | Job
        try:
            found = client.batches.retrieve(id)
        except NotFoundError:
            found = client.jobs.retrieve(id)  # not a batch: maybe a generic job
    if as_json:
        typer.echo(found.model_dump_json(indent=2))
    elif isinstance(found, Batch):
        _print_batch(found, _console())
    else:
        _print_job(found, _console())


@_client_command(app)
def wait(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(metavar="ID", help="A batch id.")],
    timeout: Annotated[float, typer.Option(metavar="SECONDS", help="How long to wait.")] = 172_800,
) -> None:
    """Show a batch's progress, and why it waits, until it ends; exit 1 unless it ends completed."""
    with _client(ctx) as client:
        final = _wait_with_progress(client, client.batches.retrieve(id), timeout)
    _print_batch(final, _console(stderr=True))
    if final.status != JobStatus.COMPLETED:
        _fail(f"batch {final.id} ended {final.status}")


_LIST_COLUMNS = ("id", "status", "provider", "done/total", "errored", "created")


@_client_command(app, "list")
def list_batches(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(metavar="STATUS", help="Only batches in this status.")] = None,
    limit: Annotated[
        int | None, typer.Option(metavar="N", show_default="20", help="Page size, 1-1000.")
    ] = None,
    after: Annotated[
        str | None, typer.Option(metavar="ID", help="Continue after this id (a previous page's last).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON page.")] = False,
) -> None:
    """List batches, newest first."""
    with _client(ctx) as client:
        page = client.batches.list(status=status, limit=limit, after=after)
    if as_json:
        typer.echo(page.model_dump_json(indent=2))
        return
    table = Table(*(Column(name, no_wrap=True) for name in _LIST_COLUMNS), box=box.SIMPLE_HEAD)
    for batch in page.data:
        counts = batch.request_counts
        table.add_row(
            Text(batch.id),
            Text(batch.status),
            Text(batch.provider),
            f"{counts.total - counts.processing}/{counts.total}",
            str(counts.errored),
            _when(batch.created_at),
        )
    _console().print(table)
    if page.has_more:
        _console(stderr=True).print(f"more: longops list --after {page.last_id}", markup=False)


class ResultFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


CSV_COLUMNS = ("custom_id", "status", "text", "error_type", "error_message", "input_tokens", "output_tokens")


@_client_command(app)
def results(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(metavar="ID", help="A batch id (or a job id: prints its result).")],
    output: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Write to this file instead of stdout.")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            metavar="STATUS", help="Only items in this status: succeeded, errored, cancelled, expired."
        ),
    ] = None,
    format: Annotated[
        ResultFormat,
        typer.Option("--format", help="jsonl: the API's result lines; csv: " + ", ".join(CSV_COLUMNS) + "."),
    ] = ResultFormat.jsonl,
) -> None:
    """Export a batch's results, one row per finished item, in request order.

    On a generic job, print its result (JSON) instead; one that has not completed is an error that
    says what it is doing.
    """
    with _client(ctx) as client:
        lines = _result_lines(client, id, status)
        try:
            first = next(lines, None)
        except NotFoundError:
            _print_job_result(client.jobs.retrieve(id))  # not a batch: maybe a generic job
            return
        count = _export(itertools.chain([] if first is None else [first], lines), output, format)
    if output is not None:
        _console(stderr=True).print(f"wrote {count} results to {output}", markup=False)


@_client_command(app)
def providers(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON list.")] = False,
) -> None:
    """List the providers this server can run batches on, with their protocol and endpoints."""
    with _client(ctx) as client:
        found = client.providers.list()
    if as_json:
        typer.echo(found.model_dump_json(indent=2))
        return
    table = Table("name", "protocol", "batch", "endpoints", box=box.SIMPLE_HEAD)
    for info in found.data:
        table.add_row(Text(info.name), info.protocol, info.batch, Text(", ".join(info.endpoints)))
    _console().print(table)


def _required_provider(client: Client, provider: str | None) -> str:
    """``provider``, or, when it was not given, an error that lists what the server offers."""
    if provider is not None:
        return provider
    names = ", ".join(info.name for info in client.providers.list().data)
    _fail(f"--provider is required: this server offers {names} (see `longops providers`)")


@_client_command(app)
def estimate(
    ctx: typer.Context,
    file: RequestsFile,
    provider: ProviderName = None,
    endpoint: EndpointPath = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON estimate.")] = False,
) -> None:
    """Estimate what submitting FILE would cost (a dry run: the server stores nothing)."""
    requests = _read_requests(file)
    with _client(ctx) as client:
        found = client.batches.estimate(
            provider=_required_provider(client, provider), requests=requests, endpoint=endpoint
        )
    if as_json:
        typer.echo(found.model_dump_json(indent=2))
        return
    console = _console()
    console.print(f"requests                {found.requests}", markup=False)
    console.print(f"estimated input tokens  {found.estimated_input_tokens}", markup=False)
    console.print(f"max output tokens       {found.max_output_tokens}", markup=False)
    cost = found.cost
    console.print(f"cost (USD, {cost.basis})       {cost.low} – {cost.high}", markup=False)
    if found.unpriced_models:
        console.print(f"unpriced models         {', '.join(found.unpriced_models)}", markup=False)


_USAGE_COLUMNS = ("day", "provider", "model", "requests", "input", "output", "cache read", "cache write")


@_client_command(app)
def usage(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option(metavar="DATE", help="First day (YYYY-MM-DD or an ISO time, UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(metavar="DATE", help="Last day, included (YYYY-MM-DD or an ISO time).")
    ] = None,
    group_by: Annotated[
        str,
        typer.Option(metavar="KEYS", help="Comma-separated keys: provider, model, day (empty: one total)."),
    ] = "provider,model,day",
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON report.")] = False,
) -> None:
    """Tokens and cost of your organization's batches, by provider, model and UTC day."""
    with _client(ctx) as client:
        report = client.usage.list(start=since, end=until, group_by=group_by)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    table = Table(*_USAGE_COLUMNS, Column("cost (USD)", justify="right"), box=box.SIMPLE_HEAD)
    for row in report.data:
        cost = row.cost.amount + (
            f" + unpriced: {', '.join(row.cost.unpriced_models)}" if row.cost.unpriced_models else ""
        )
        table.add_row(
            row.day or "",
            row.provider or "",
            row.model or "",
            str(row.requests),
            str(row.input_tokens),
            str(row.output_tokens),
            str(row.cache_read_input_tokens),
            str(row.cache_creation_input_tokens),
            cost,
        )
    _console().print(table)


@_client_command(app)
def cancel(
    ctx: typer.Context, id: Annotated[str, typer.Argument(metavar="ID", help="A batch or job id.")]
) -> None:
    """Request cancellation of a batch or job."""
    _cancel(ctx, id)


@_client_command(app)
def deliveries(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(metavar="ID", help="A batch or job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON list.")] = False,
) -> None:
    """Show every attempt to deliver a batch's (or job's) webhook, oldest first."""
    with _client(ctx) as client:
        attempts = client.jobs.deliveries(id)  # /v1/jobs/{id}/deliveries serves batches too
    if as_json:
        typer.echo(json.dumps([a.model_dump(mode="json") for a in attempts], indent=2))
        return
    names = ("attempt", "at", "status code", "duration", "error")
    table = Table(*(Column(name, no_wrap=name != "error") for name in names), box=box.SIMPLE_HEAD)
    for attempt in attempts:
        table.add_row(
            str(attempt.attempt),
            _when(attempt.at),
            str(attempt.status_code) if attempt.status_code is not None else "-",
            f"{attempt.duration_ms} ms" if attempt.duration_ms is not None else "-",
            Text(attempt.error or "-"),
        )
    _console().print(table)
    if not attempts:
        _console(stderr=True).print(f"no delivery attempt yet for {id}", markup=False)


@_client_command(app)
def redeliver(
    ctx: typer.Context, id: Annotated[str, typer.Argument(metavar="ID", help="A batch or job id.")]
) -> None:
    """Send a finished batch's (or job's) webhook again: the same event, with a fresh attempt budget."""
    with _client(ctx) as client:
        event = client.jobs.redeliver(id)
    typer.echo(
        f"{event.id} ({event.type}) queued again for {id}: {event.state}, "
        f"next attempt {_when(event.next_attempt_at)}"
    )


jobs_app = typer.Typer(
    name="jobs",
    help="Generic background jobs run by handlers (LONGOPS_HANDLERS): create, list, status, cancel, wait.",
    no_args_is_help=True,
)
app.add_typer(jobs_app)


@_client_command(jobs_app, "create")
def jobs_create(
    ctx: typer.Context,
    job_type: Annotated[
        str, typer.Argument(metavar="JOB_TYPE", help="A job type the server's handlers define.")
    ],
    input: Annotated[
        str | None, typer.Option(metavar="JSON", help="The job's input, any JSON value.")
    ] = None,
    metadata: Annotated[
        str | None, typer.Option(metavar="JSON", help="A JSON object stored with the job.")
    ] = None,
    callback_url: Annotated[
        str | None, typer.Option(metavar="URL", help="Webhook URL called when the job ends.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the job ends.")] = False,
    timeout: Annotated[
        float, typer.Option(metavar="SECONDS", help="With --wait: how long to wait.")
    ] = 172_800,
) -> None:
    """Create a job and print its id. With --wait, exit 1 unless it ends completed."""
    value = _json_value(input, "--input") if input is not None else None
    extra = _json_object(metadata, "--metadata") if metadata is not None else None
    with _client(ctx) as client:
        job = client.jobs.create(job_type=job_type, input=value, metadata=extra, callback_url=callback_url)
        typer.echo(job.id)
        if wait:
            _finish_job_wait(_wait_job_with_progress(client, job, timeout))


@_client_command(jobs_app, "list")
def jobs_list(
    ctx: typer.Context,
    job_type: Annotated[
        str | None, typer.Option("--type", metavar="JOB_TYPE", help="Only jobs of this type.")
    ] = None,
    status: Annotated[str | None, typer.Option(metavar="STATUS", help="Only jobs in this status.")] = None,
    limit: Annotated[
        int | None, typer.Option(metavar="N", show_default="20", help="Page size, 1-1000.")
    ] = None,
    after: Annotated[
        str | None, typer.Option(metavar="ID", help="Continue after this id (a previous page's last).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON page.")] = False,
) -> None:
    """List jobs (batches too, as llm_batch), newest first."""
    with _client(ctx) as client:
        page = client.jobs.list(job_type=job_type, status=status, limit=limit, after=after)
    if as_json:
        typer.echo(page.model_dump_json(indent=2))
        return
    names = ("id", "type", "status", "progress", "attempts", "created")
    table = Table(*(Column(name, no_wrap=True) for name in names), box=box.SIMPLE_HEAD)
    for job in page.data:
        table.add_row(
            Text(job.id),
            Text(job.job_type),
            Text(job.status),
            _progress_text(job),
            str(job.attempts),
            _when(job.created_at),
        )
    _console().print(table)
    if page.has_more:
        _console(stderr=True).print(f"more: longops jobs list --after {page.last_id}", markup=False)


@_client_command(jobs_app, "status")
def jobs_status(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(metavar="ID", help="A job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON object.")] = False,
) -> None:
    """Show a job's status, progress, attempts, error and result."""
    with _client(ctx) as client:
        job = client.jobs.retrieve(id)
    if as_json:
        typer.echo(job.model_dump_json(indent=2))
    else:
        _print_job(job, _console())


@_client_command(jobs_app, "cancel")
def jobs_cancel(
    ctx: typer.Context, id: Annotated[str, typer.Argument(metavar="ID", help="A job id.")]
) -> None:
    """Request cancellation of a job (its handler sees it at its next heartbeat)."""
    _cancel(ctx, id)


@_client_command(jobs_app, "wait")
def jobs_wait(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(metavar="ID", help="A job id.")],
    timeout: Annotated[float, typer.Option(metavar="SECONDS", help="How long to wait.")] = 172_800,
) -> None:
    """Show a job's progress until it ends; exit 1 unless it ends completed."""
    with _client(ctx) as client:
        _finish_job_wait(_wait_job_with_progress(client, client.jobs.retrieve(id), timeout))


# --- helpers -----------------------------------------------------------------------------------------


def _file_size(path: Path) -> int:
    try:
        size = path.stat().st_size
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror or exc}")
    if path.is_dir():
        _fail(f"cannot read {path}: Is a directory")
    if size == 0:
        _fail(f"{path} has no requests")
    return size


def _ingest_with_progress(
    client: Client,
    path: Path,
    size: int,
    provider: str,
    endpoint: str | None,
    metadata: dict[str, Any] | None,
    callback_url: str | None,
    timeout: float,
) -> Batch:
    """Upload ``path`` and wait while the server ingests it, with one bar of bytes for both steps on
    stderr. The first bad line ends the command with the server's message, naming the line."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    seen: list[Job] = []
    failure, code = "", 1
    with Progress(*columns, console=_console(stderr=True)) as progress:
        task = progress.add_task(f"uploading {path.name}", total=size)

        def show(job: Job) -> None:
            if not seen:
                progress.reset(task)  # from the upload's bytes to the ingestion's
            seen.append(job)
            report = job.progress
            progress.update(
                task,
                description=f"ingest {job.id} {job.status}",
                total=report.total if report is not None and report.total else size,
                completed=report.completed if report is not None else 0,
            )

        try:
            return client.batches.create_from_file(
                path,
                provider=provider,
                endpoint=endpoint,
                metadata=metadata,
                callback_url=callback_url,
                timeout=timeout,
                on_progress=show,
                on_upload_progress=lambda sent: progress.update(task, completed=sent),
            )
        except IngestError as exc:  # reported below, once the bar has been drawn for the last time
            where = f"{path} {exc.message}" if exc.line is not None else f"{path}: {exc.message}"
            failure = f"{where} (batch_ingest job {exc.job.id})"
        except WaitTimeout as exc:
            failure = f"{exc}; check later with `longops status {exc.last.id}`"
        except KeyboardInterrupt:
            code = 130
            if seen:
                job_id = seen[-1].id
                failure = f"stopped waiting; ingest job {job_id} keeps running (`longops status {job_id}`)"
            else:
                failure = "stopped while uploading; no batch was created"
    _fail(failure, code)


def _read_requests(path: Path) -> list[dict[str, Any]]:
    """Every request of a JSONL file, each line checked on its own so that a mistake is reported with
    its line number and nothing is sent. Blank lines are skipped."""
    requests: list[dict[str, Any]] = []
    line_of: dict[str, int] = {}
    try:
        with path.open(encoding="utf-8-sig") as lines:  # a BOM, as the server allows it
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    entry = _check_line(path, number, line, line_of)
                    line_of[entry["custom_id"]] = number
                    requests.append(entry)
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        _fail(f"{path} is not UTF-8 text")
    if not requests:
        _fail(f"{path} has no requests")
    return requests


def _check_line(path: Path, number: int, line: str, line_of: dict[str, int]) -> dict[str, Any]:
    where = f"{path} line {number}"
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        _fail(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})")
    try:
        # The server's own rules; OpenAI batch lines are let through here (the server knows the
        # provider and the batch's endpoint, and checks each line's url against it).
        url = entry.get("url") if isinstance(entry, dict) else None
        parse_requests([entry], openai_endpoint=url if isinstance(url, str) else "", max_requests=1)
    except BatchValidationError as exc:
        field = re.search(r"\.(\w+)$", exc.field)  # "requests[0] (custom_id ...).params" -> "params"
        _fail(f"{where}: {field.group(1) + ': ' if field else ''}{exc.message}")
    custom_id: str = entry["custom_id"]
    if custom_id in line_of:
        _fail(f"{where}: custom_id {custom_id!r} is already used on line {line_of[custom_id]}")
    return dict(entry)


def _json_value(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{option} is not valid JSON: {exc.msg} (column {exc.colno})")


def _json_object(text: str, option: str) -> dict[str, Any]:
    value = _json_value(text, option)
    if not isinstance(value, dict):
        _fail(f"{option} must be a JSON object")
    return value


def _wait_with_progress(client: Client, batch: Batch, timeout: float) -> Batch:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=_console(stderr=True)) as progress:
        task = progress.add_task(f"{batch.id} {batch.status}", total=batch.request_counts.total)

        def show(current: Batch) -> None:
            counts = current.request_counts
            note = current.waiting_on()
            progress.update(
                task,
                description=f"{current.id} {current.status}" + (f" ({note})" if note else ""),
                total=counts.total,
                completed=counts.total - counts.processing,
            )

        try:
            return client.batches.wait(batch.id, timeout=timeout, on_progress=show)
        except WaitTimeout as exc:
            note = exc.last.waiting_on() if isinstance(exc.last, Batch) else None
            because = f" ({note})" if note else ""
            _fail(f"{exc}{because}; check later with `longops status {batch.id}`")
        except KeyboardInterrupt:
            _fail(f"stopped waiting; batch {batch.id} keeps running (`longops status {batch.id}`)", 130)


def _result_lines(client: Client, id: str, status: str | None) -> Iterator[ResultLine]:
    """The batch's result lines; with ``status``, its items in that status (filtered by the server)."""
    if status is None:
        yield from client.batches.results(id)
        return
    for item in client.batches.items_all(id, status=status):
        yield ResultLine(
            custom_id=item.custom_id, status=item.status, response=item.response, error=item.error
        )


def _export(lines: Iterable[ResultLine], output: Path | None, format: ResultFormat) -> int:
    """Write ``lines`` to ``output`` (stdout when None) as JSONL or CSV; the number of rows written."""
    with contextlib.ExitStack() as stack:
        sink = (
            sys.stdout
            if output is None
            else stack.enter_context(output.open("w", encoding="utf-8", newline=""))
        )
        rows = csv.writer(sink, lineterminator="\n") if format is ResultFormat.csv else None
        if rows is not None:
            rows.writerow(CSV_COLUMNS)
        count = 0
        for line in lines:
            if rows is None:
                sink.write(line.model_dump_json() + "\n")
            else:
                rows.writerow(_csv_row(line))
            count += 1
    return count


def _csv_row(line: ResultLine) -> list[object]:
    usage = answer_usage(line.response)
    return [
        line.custom_id,
        line.status,
        answer_text(line.response) or "",
        line.error.type if line.error else "",
        line.error.message if line.error else "",
        "" if usage is None or usage.input_tokens is None else usage.input_tokens,
        "" if usage is None or usage.output_tokens is None else usage.output_tokens,
    ]


def _print_job_result(job: Job) -> None:
    if job.status == JobStatus.COMPLETED:
        typer.echo(json.dumps(job.result))
        return
    if job.status.is_terminal:
        reason = f": {job.error.type}: {job.error.message}" if job.error else ""
        _fail(f"job {job.id} ended {job.status}{reason}; it has no result")
    _fail(
        f"job {job.id} is {job.status} and has no result yet; wait for it with `longops jobs wait {job.id}`"
    )


def _cancel(ctx: typer.Context, id: str) -> None:
    with _client(ctx) as client:
        job = client.jobs.cancel(id)  # /v1/jobs/{id}/cancel serves batches too
    if job.status == JobStatus.CANCELLED:
        typer.echo(f"{job.id} cancelled")
    else:
        typer.echo(f"{job.id} cancel requested; still {job.status} until the provider or handler stops")


def _wait_job_with_progress(client: Client, job: Job, timeout: float) -> Job:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[shown]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=_console(stderr=True)) as progress:
        task = progress.add_task(f"{job.id} {job.status}", total=None, shown="")

        def show(current: Job) -> None:
            report = current.progress
            progress.update(
                task,
                description=f"{current.id} {current.status}",
                total=report.total if report is not None else None,
                completed=report.completed if report is not None else 0,
                shown=_progress_text(current),
            )

        try:
            return client.jobs.wait(job.id, timeout=timeout, on_progress=show)
        except WaitTimeout as exc:
            _fail(f"{exc}; check later with `longops jobs status {job.id}`")
        except KeyboardInterrupt:
            _fail(f"stopped waiting; job {job.id} keeps running (`longops jobs status {job.id}`)", 130)


def _finish_job_wait(final: Job) -> None:
    _print_job(final, _console(stderr=True))
    if final.status != JobStatus.COMPLETED:
        _fail(f"job {final.id} ended {final.status}")


def _progress_text(job: Job) -> str:
    report = job.progress
    if report is None:
        return "-"
    total = f"/{report.total:g}" if report.total is not None else ""
    message = f" {report.message}" if report.message else ""
    return f"{report.completed:g}{total}{message}"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment is not None else "-"


def _print_batch(batch: Batch, console: Console) -> None:
    counts = batch.request_counts
    console.print(Text(f"{batch.id}  {batch.status}  provider {batch.provider}", style="bold"))
    console.print(
        f"requests   {counts.total} total, {counts.processing} processing, {counts.succeeded} succeeded, "
        f"{counts.errored} errored, {counts.cancelled} cancelled, {counts.expired} expired"
    )
    console.print(
        f"created    {_when(batch.created_at)}   started {_when(batch.started_at)}   "
        f"completed {_when(batch.completed_at)}"
    )
    _print_stop(console, batch.cancel_requested_at, batch.stop_reason, batch.error)
    note = batch.waiting_on()
    if note is not None:
        console.print(Text(f"waiting    {note}"))
    if batch.provider_batches:
        names = ("provider batch", "status", "provider status", "provider id", "requests", "attempts")
        table = Table(*(Column(name, no_wrap=True) for name in names), box=box.SIMPLE_HEAD)
        for pb in batch.provider_batches:
            table.add_row(
                Text(pb.id),
                Text(pb.status),
                Text(pb.processing_status or "-"),
                Text(pb.provider_batch_id or "-"),
                str(pb.request_count),
                str(pb.submit_attempts),
            )
        console.print(table)
        for pb in batch.provider_batches:  # whole, below the table: a cell would cut the provider's words
            if pb.error is not None:
                console.print(Text(f"{pb.id} error: {pb.error.type}: {pb.error.message}"), soft_wrap=True)


def _print_job(job: Job, console: Console) -> None:
    console.print(Text(f"{job.id}  {job.status}  type {job.job_type}", style="bold"))
    if job.progress is not None:
        console.print(Text(f"progress   {_progress_text(job)}"))
    console.print(
        f"created    {_when(job.created_at)}   started {_when(job.started_at)}   "
        f"completed {_when(job.completed_at)}   attempts {job.attempts}"
    )
    _print_stop(console, job.cancel_requested_at, job.stop_reason, job.error)
    if job.result is not None:
        console.print(Text(f"result     {json.dumps(job.result)}"))


def _print_stop(
    console: Console, cancel_requested_at: datetime | None, stop_reason: str | None, error: ErrorDetail | None
) -> None:
    if cancel_requested_at is not None:
        console.print(f"cancel     requested at {_when(cancel_requested_at)}")
    if stop_reason is not None:
        console.print(Text(f"stopped    {stop_reason}"))
    if error is not None:
        console.print(Text(f"error      {error.type}: {error.message}"), soft_wrap=True)


def main() -> None:
    app()
