"""The README's configuration table is the one generated from ``Settings``: every setting appears,
with its default, so the table cannot drift from the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from longops.settings import Settings
from longops.settings_table import current_table, render

README = Path(__file__).parent.parent / "README.md"


def test_every_setting_is_in_the_readme_table() -> None:
    table = current_table(README.read_text(encoding="utf-8"))
    variables = {line.split("|")[1].strip().strip("`") for line in table.splitlines()[2:]}
    missing = {name.upper() for name in Settings.model_fields} - variables
    assert not missing, (
        f"not in README.md: {sorted(missing)}; run `python -m longops.settings_table --write README.md`"
    )
    assert table == render(), (
        "README.md's table is stale: run `python -m longops.settings_table --write README.md`"
    )


def test_the_generator_rewrites_only_the_table(tmp_path: Path) -> None:
    target = tmp_path / "README.md"
    text = README.read_text(encoding="utf-8")
    stale = text.replace("| `PORT` | 8000 |", "| `PORT` | 9999 |")
    assert stale != text
    target.write_text(stale, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "longops.settings_table", "--write", str(target)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert target.read_text(encoding="utf-8") == text


def test_a_file_without_markers_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "notes.md"
    target.write_text("# notes\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "longops.settings_table", "--write", str(target)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: the file has no ") and done.stderr.count("\n") == 1
    assert target.read_text(encoding="utf-8") == "# notes\n"
