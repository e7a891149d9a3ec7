"""The ``longops`` command (DESIGN §5 "CLI").

Server-side commands import their implementation inside the command, so the client commands start fast
and need nothing but the SDK. Expected failures (the service's errors, an unreachable server, a bad input
file) print one ``error: ...`` line on stderr and exit 1; a traceback means a bug.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

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
from longops.domain.requests import BatchValidationError, parse_requests
from longops.domain.schemas import Batch, ErrorDetail, Job
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
    pretty_exceptions_show_locals=False,  # locals would include the API key
)


@dataclass(frozen=True, slots=True)
class _Globals:
    server_url: str | None
    api_key: str | None


@app.callback()
def _global_options(
    ctx: typer.Context,
    server_url: Annotated[
        str | None,
        typer.Option(
            envvar="LONGOPS_SERVER_URL", show_default="http://127.0.0.1:8000", help="Server to talk to."
        ),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="LONGOPS_API_KEY", help="API key (sent as a Bearer token).")
    ] = None,
) -> None:
    ctx.obj = _Globals(server_url, api_key)


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = 160  # a pipe has no width; Rich's default 80 would cut ids
    return console


@contextmanager
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
        _fail(exc.message)
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
        str | None, typer.Option(show_default="LONGOPS_HOST", help="Interface to listen on.")
    ] = None,
    port: Annotated[int | None, typer.Option(show_default="LONGOPS_PORT", help="Port to listen on.")] = None,
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
    from longops.store.migrate import upgrade

    upgrade(_settings().database_url)


@app.command()
def simulator(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    processing_seconds: Annotated[
        float | None,
        typer.Option(
            show_default="LONGOPS_SIMULATOR_PROCESSING_SECONDS", help="Seconds a batch stays in progress."
        ),
    ] = None,
    error_rate: Annotated[
        float | None,
        typer.Option(show_default="LONGOPS_SIMULATOR_ERROR_RATE", help="Share of requests that error, 0-1."),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(show_default="LONGOPS_SIMULATOR_STATE_DIR", help="Where the simulator keeps its state."),
    ] = None,
) -> None:
    """Run the offline provider simulator (speaks the providers' batch APIs)."""
    from longops.providers.simulator.server import run

    settings = _settings()
    run(
        host,
        port,
        processing_seconds=(
            processing_seconds if processing_seconds is not None else settings.simulator_processing_seconds
        ),
        error_rate=error_rate if error_rate is not None else settings.simulator_error_rate,
        state_dir=str(state_dir) if state_dir is not None else settings.simulator_state_dir,
    )


keys_app = typer.Typer(
    name="keys",
    help="Create, list and revoke API keys (in the database of LONGOPS_DATABASE_URL, directly).",
    no_args_is_help=True,
)
app.add_typer(keys_app)


def _on_database(operation: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``operation`` on the configured database, brought up to date first (as the server does)."""
    from longops.store.db import open_database
    from longops.store.migrate import upgrade_database

    async def run() -> T:
        db = open_database(_settings().database_url)
        try:
            await upgrade_database(db)
            return await operation(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


@keys_app.command("create")
def keys_create(
    org: Annotated[str, typer.Option("--org", help="The organization the key belongs to (its data).")],
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
    key_id: Annotated[str, typer.Argument(help="The key's id (key_…), as `keys list` shows it.")],
) -> None:
    """Revoke an API key: requests with it get 401 from the next one on."""
    from longops.store import api_keys

    try:
        key = _on_database(lambda db: api_keys.revoke_key(db, key_id))
    except api_keys.KeyNotFound:
        _fail(f"no such key: {key_id}")
    typer.echo(f"{key.id} ({key.org_id}) revoked at {_when(key.revoked_at)}")


# --- client side -------------------------------------------------------------------------------------


@app.command()
def submit(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help='JSONL file, one {"custom_id", "params"} request a line.')],
    provider: Annotated[str, typer.Option(help="Provider to run the batch on, e.g. anthropic.")],
    metadata: Annotated[str | None, typer.Option(help="A JSON object stored with the batch.")] = None,
    callback_url: Annotated[str | None, typer.Option(help="Webhook URL called when the batch ends.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the batch ends.")] = False,
    output: Annotated[
        Path | None, typer.Option(help="With --wait: write the results (NDJSON) to this file.")
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds to wait for an uploaded file's ingestion, and with --wait for the batch."),
    ] = 172_800,
    upload_threshold: Annotated[
        float,
        typer.Option(
            min=0,
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
        if requests is None:
            batch = _ingest_with_progress(client, file, size, provider, extra, callback_url, timeout)
        else:
            batch = client.batches.create(
                provider=provider, requests=requests, metadata=extra, callback_url=callback_url
            )
        typer.echo(batch.id)
        if not wait:
            return
        final = _wait_with_progress(client, batch, timeout)
        if output is not None:
            count = _write_results(client, final.id, output)
            _console(stderr=True).print(f"wrote {count} results to {output}", markup=False)
        _print_batch(final, _console(stderr=True))
        if final.status != JobStatus.COMPLETED:
            _fail(f"batch {final.id} ended {final.status}")


@app.command()
def status(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(help="A batch or job id.")],
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


_LIST_COLUMNS = ("id", "status", "provider", "done/total", "errored", "created")


@app.command("list")
def list_batches(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only batches in this status.")] = None,
    limit: Annotated[int | None, typer.Option(show_default="20", help="Page size, 1-1000.")] = None,
    after: Annotated[
        str | None, typer.Option(help="Continue after this id (a previous page's last).")
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


@app.command()
def results(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(help="A batch id.")],
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """Stream a batch's results as NDJSON (one line per finished item)."""
    with _client(ctx) as client:
        if output is None:
            for line in client.batches.results(id):
                typer.echo(line.model_dump_json())
        else:
            count = _write_results(client, id, output)
            _console(stderr=True).print(f"wrote {count} results to {output}", markup=False)


@app.command()
def estimate(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help='JSONL file, one {"custom_id", "params"} request a line.')],
    provider: Annotated[str, typer.Option(help="Provider the batch would run on, e.g. anthropic.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON estimate.")] = False,
) -> None:
    """Estimate what submitting FILE would cost (a dry run: the server stores nothing)."""
    requests = _read_requests(file)
    with _client(ctx) as client:
        found = client.batches.estimate(provider=provider, requests=requests)
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


@app.command()
def usage(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="First day (YYYY-MM-DD or an ISO time, UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Last day, included (YYYY-MM-DD or an ISO time).")] = None,
    group_by: Annotated[
        str, typer.Option(help="Comma-separated keys: provider, model, day (empty: one total).")
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


@app.command()
def cancel(ctx: typer.Context, id: Annotated[str, typer.Argument(help="A batch or job id.")]) -> None:
    """Request cancellation of a batch or job."""
    with _client(ctx) as client:
        job = client.jobs.cancel(id)  # /v1/jobs/{id}/cancel serves batches too
    if job.status == JobStatus.CANCELLED:
        typer.echo(f"{job.id} cancelled")
    else:
        typer.echo(f"{job.id} cancel requested; still {job.status} until the provider or handler stops")


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
        with path.open(encoding="utf-8") as lines:
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
        # The server's own rules; OpenAI batch lines are let through here, the server knows the provider.
        parse_requests([entry], accepts_openai_lines=True, max_requests=1)
    except BatchValidationError as exc:
        field = re.search(r"\.(\w+)$", exc.field)  # "requests[0] (custom_id ...).params" -> "params"
        _fail(f"{where}: {field.group(1) + ': ' if field else ''}{exc.message}")
    custom_id: str = entry["custom_id"]
    if custom_id in line_of:
        _fail(f"{where}: custom_id {custom_id!r} is already used on line {line_of[custom_id]}")
    return dict(entry)


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{option} is not valid JSON: {exc.msg}")
    if not isinstance(value, dict):
        _fail(f"{option} must be a JSON object")
    return value


def _wait_with_progress(client: Client, batch: Batch, timeout: float) -> Batch:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=_console(stderr=True)) as progress:
        task = progress.add_task(f"{batch.id} {batch.status}", total=batch.request_counts.total)

        def show(current: Batch) -> None:
            counts = current.request_counts
            progress.update(
                task,
                description=f"{current.id} {current.status}",
                total=counts.total,
                completed=counts.total - counts.processing,
            )

        try:
            return client.batches.wait(batch.id, timeout=timeout, on_progress=show)
        except WaitTimeout as exc:
            _fail(f"{exc}; check later with `longops status {batch.id}`")
        except KeyboardInterrupt:
            _fail(f"stopped waiting; batch {batch.id} keeps running (`longops status {batch.id}`)", 130)


def _write_results(client: Client, id: str, output: Path) -> int:
    count = 0
    with output.open("w", encoding="utf-8") as sink:
        for line in client.batches.results(id):
            sink.write(line.model_dump_json() + "\n")
            count += 1
    return count


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
    if batch.provider_batches:
        names = ("provider batch", "status", "provider status", "provider id", "requests", "error")
        table = Table(*(Column(name, no_wrap=True) for name in names), box=box.SIMPLE_HEAD)
        for pb in batch.provider_batches:
            table.add_row(
                Text(pb.id),
                Text(pb.status),
                Text(pb.processing_status or "-"),
                Text(pb.provider_batch_id or "-"),
                str(pb.request_count),
                Text(f"{pb.error.type}: {pb.error.message}" if pb.error else "-"),
            )
        console.print(table)


def _print_job(job: Job, console: Console) -> None:
    console.print(Text(f"{job.id}  {job.status}  type {job.job_type}", style="bold"))
    if job.progress is not None:
        total = f"/{job.progress.total:g}" if job.progress.total is not None else ""
        message = f"  {job.progress.message}" if job.progress.message else ""
        console.print(Text(f"progress   {job.progress.completed:g}{total}{message}"))
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
        console.print(Text(f"error      {error.type}: {error.message}"))


def main() -> None:
    app()
