"""Run the ``longops`` command as a real process, with no ``LONGOPS_*`` variable but those given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The installed console script (not ``python -m``): the current directory is not on its sys.path.
LONGOPS = str(Path(sys.executable).parent / "longops")


def run_cli(args: list[str], cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LONGOPS_")}
    return subprocess.run(
        [LONGOPS, *args], env={**clean, **env}, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
