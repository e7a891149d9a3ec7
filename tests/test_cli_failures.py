"""Every ``longops`` command, run as a real process, fails in one readable line when what it needs is
wrong: a database that cannot be used, a server that is not there, a port in use, a missing handler
module. The commands are read from the CLI itself, so a new command is covered (or the test says
which argument it needs)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import typer.main
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from longops.cli import app
from tests.support.cli import run_cli
from tests.support.processes import free_port

# A value for each required parameter of any command, by parameter name.
REQUIRED_VALUES = {
    "file": "requests.jsonl",
    "provider": "simulator",
    "org": "acme",
    "id": "batch_0001",
    "key_id": "key_0001",
    "job_type": "echo",
}
# Commands that serve for ever unless what they need is wrong, and the extra arguments they get here.
SERVING = {"serve", "engine", "simulator"}


def every_command() -> Iterator[tuple[str, ...]]:
    """The path of every runnable command, e.g. ``("keys", "create")``."""

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        subcommands = getattr(command, "commands", None)  # a group (Typer bundles its own Click)
        if subcommands is None:
            yield path
            return
        for name, sub in subcommands.items():
            yield from walk(sub, (*path, name))

    yield from walk(typer.main.get_command(app), ())


def arguments(path: tuple[str, ...]) -> list[str]:
    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    args = list(path)
    for param in command.params:
        if not param.required:
            continue
        assert param.name in REQUIRED_VALUES, f"add a value for {param.name!r} of `longops {' '.join(path)}`"
        value = REQUIRED_VALUES[param.name]
        args += [value] if param.param_type_name == "argument" else [param.opts[0], value]
    return args


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "requests.jsonl").write_text(
        '{"custom_id": "a", "params": {"model": "m", "max_tokens": 8, '
        '"messages": [{"role": "user", "content": "hi"}]}}\n'
    )
    (tmp_path / "a-file").write_text("not a directory\n")
    return tmp_path


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def bad_database(kind: str, workdir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'a-file' / 'longops.db'}"  # its "directory" is a file
    return f"postgresql://longops:secret@127.0.0.1:{free_port()}/longops"  # nothing listens there


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_every_command_fails_in_one_line_on_a_bad_database(kind: str, workdir: Path, busy_port: int) -> None:
    url = bad_database(kind, workdir)
    server = f"http://127.0.0.1:{free_port()}"
    commands = list(every_command())
    assert {("serve",), ("keys", "create"), ("submit",)} <= set(commands)  # subcommands included
    invocations = []
    for path in commands:
        args = arguments(path)
        if path == ("simulator",):
            args += ["--port", str(busy_port)]  # the simulator has no database; its port is taken
        if path == ("serve",):
            args += ["--port", str(free_port())]
        invocations.append(args)
    with ThreadPoolExecutor(max_workers=4) as pool:  # bounded: 4 processes at a time
        done = list(
            pool.map(
                lambda args: run_cli(args, workdir, LONGOPS_DATABASE_URL=url, LONGOPS_SERVER_URL=server),
                invocations,
            )
        )
    for args, result in zip(invocations, done, strict=True):
        shown = f"`longops {' '.join(args)}`: {result.stderr!r}"
        assert result.returncode != 0, shown
        lines = result.stderr.splitlines()
        assert len(lines) == 1, shown
        assert lines[0].startswith("error: "), shown
        assert "secret" not in result.stderr, shown  # the password is never printed
        if args[0] in {"keys", "migrate", "serve", "engine"}:
            assert "LONGOPS_DATABASE_URL=" in lines[0], shown
        elif args[0] == "simulator":
            assert f"127.0.0.1:{busy_port}" in lines[0] and "--port" in lines[0], shown
        else:
            assert server in lines[0] and "--server-url" in lines[0], shown
    assert not (workdir / "longops.db").exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://root@127.0.0.1/longops", "unsupported database URL scheme 'mysql'"),
        ("not a url", "set LONGOPS_DATABASE_URL to sqlite:///PATH or postgresql://"),
    ],
)
def test_a_malformed_database_url_names_the_setting(url: str, expected: str, workdir: Path) -> None:
    result = run_cli(["migrate"], workdir, LONGOPS_DATABASE_URL=url)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: cannot use the database LONGOPS_DATABASE_URL=")
    assert expected in result.stderr


def test_a_missing_postgres_database_is_named(postgres_server_url: str, workdir: Path) -> None:
    url = make_url(postgres_server_url).set(database="longops_no_such_database").render_as_string(False)
    result = run_cli(["keys", "list"], workdir, LONGOPS_DATABASE_URL=url)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert 'database "longops_no_such_database" does not exist' in result.stderr


def test_serve_checks_handlers_before_creating_the_database(workdir: Path) -> None:
    for command in (["serve", "--port", str(free_port())], ["engine"]):
        result = run_cli(command, workdir, LONGOPS_HANDLERS="no_such_handlers_module")
        assert result.returncode == 1, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("error: LONGOPS_HANDLERS: cannot import handler module")
        assert str(workdir) in result.stderr  # where it looked
    assert not (workdir / "longops.db").exists()


def test_serve_on_a_port_in_use_is_one_line(database_url: str, workdir: Path, busy_port: int) -> None:
    args = ["serve", "--port", str(busy_port), "--no-engine"]
    result = run_cli(args, workdir, LONGOPS_DATABASE_URL=database_url)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(f"error: cannot listen on 127.0.0.1:{busy_port}: ")
    assert "--port" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_bundled_simulator_port_in_use_names_the_setting(
    database_url: str, workdir: Path, busy_port: int
) -> None:
    result = run_cli(
        ["engine"], workdir, LONGOPS_DATABASE_URL=database_url, LONGOPS_SIMULATOR_PORT=str(busy_port)
    )
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"error: LONGOPS_SIMULATOR_PORT={busy_port}: ")
    assert "Traceback" not in result.stderr


def test_handlers_are_found_in_the_current_directory(workdir: Path) -> None:
    """The installed ``longops`` script imports LONGOPS_HANDLERS modules from where it is run."""
    (workdir / "my_handlers.py").write_text(
        "from longops import handler\n\n@handler('mine')\nasync def mine(ctx, input):\n    return input\n"
    )
    url = f"sqlite:///{workdir / 'a-file' / 'x.db'}"
    result = run_cli(["engine"], workdir, LONGOPS_HANDLERS="my_handlers", LONGOPS_DATABASE_URL=url)
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot use the database"), result.stderr  # past the handlers


def test_a_json_error_in_an_input_file_names_its_line_and_column(workdir: Path) -> None:
    good = (workdir / "requests.jsonl").read_text()
    bad = '{"custom_id": "ünï", "params": {"model": "m" "max_tokens": 8}}\n'
    (workdir / "bad.jsonl").write_text("\ufeff" + good + bad, encoding="utf-8")  # with a BOM, as editors save
    column = bad.index('"max_tokens"') + 1
    result = run_cli(["submit", "bad.jsonl", "--provider", "simulator"], workdir)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: bad.jsonl line 2: not valid JSON: Expecting ',' delimiter (column {column})\n"
    )


def test_help_shows_flags_as_flags_and_defaults_with_values() -> None:
    runner = CliRunner()
    for path in [(), *every_command()]:
        result = runner.invoke(app, [*path, "--help"], terminal_width=100)
        assert result.exit_code == 0, path
        assert "<bool>" not in result.output, path  # a flag takes no value
        assert "[default: (LONGOPS_" not in result.output or ", else " in result.output, path
    serve_help = runner.invoke(app, ["serve", "--help"], terminal_width=100).output
    assert "--no-engine " in serve_help and "else 8000" in serve_help


@pytest.mark.parametrize("setting", ["LONGOPS_FILES_DIR", "LONGOPS_SIMULATOR_STATE_DIR"])
def test_a_directory_that_cannot_be_written_is_one_line(setting: str, workdir: Path) -> None:
    value = str(workdir / "a-file" / "sub")  # inside a regular file: never a directory
    for command in (["serve", "--port", str(free_port())], ["engine"]):
        result = run_cli(command, workdir, **{setting: value})
        assert result.returncode == 1, result.stderr
        assert result.stderr.splitlines()[-1] == (
            f"error: {setting}={value}: {workdir / 'a-file'} is not a writable directory; "
            f"set {setting} to a directory this process may write"
        )
        assert "Traceback" not in result.stderr
    assert not (workdir / "longops.db").exists()
