"""The package's import structure: the root's exports are lazy, so each layer imports alone.

Checked in fresh interpreters (real processes): what a process has imported is global state that an
in-process test would share with every other test. The layer rules themselves are import-linter's
contracts in pyproject.toml (``lint-imports`` in .ci/run).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import longops
import longops.client
import longops.handlers


def imported_after(statement: str) -> list[str]:
    """Our modules a fresh interpreter has loaded after running ``statement``."""
    program = (
        f"{statement}\nimport json, sys\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'longops')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    modules: list[str] = json.loads(out.stdout)
    return modules


def test_the_domain_imports_alone() -> None:
    modules = imported_after("import longops.domain.statuses, longops.domain.clock")
    assert modules == [
        "longops",
        "longops._version",
        "longops.domain",
        "longops.domain.clock",
        "longops.domain.statuses",
    ]


def test_the_sdk_client_imports_no_server_module() -> None:
    modules = imported_after("from longops import Client")
    assert "longops.client" in modules
    server_side = [
        m for m in modules if m != "longops" and m.split(".")[1] not in ("_version", "client", "domain")
    ]
    assert server_side == []


@pytest.mark.parametrize("name", longops.__all__)
def test_every_export_of_the_root_is_the_object_of_its_module(name: str) -> None:
    value = getattr(longops, name)
    sources = [m for m in (longops.client, longops.handlers) if getattr(m, name, None) is value]
    assert sources or name == "__version__", f"longops.{name} is not the object its module defines"
    assert name in dir(longops)


def test_an_unknown_name_of_the_root_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Clinet'"):
        longops.Clinet  # noqa: B018
