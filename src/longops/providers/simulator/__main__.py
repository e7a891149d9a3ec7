"""``python -m longops.providers.simulator --port 8765`` (what ``longops simulator`` runs)."""

from __future__ import annotations

import argparse

from longops.providers.simulator.server import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m longops.providers.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--processing-seconds", type=float, default=5.0)
    parser.add_argument("--cancel-seconds", type=float, default=1.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--state-dir", default=None, help="persist batches here (survive restarts)")
    args = parser.parse_args()
    run(
        args.host,
        args.port,
        processing_seconds=args.processing_seconds,
        error_rate=args.error_rate,
        state_dir=args.state_dir,
        cancel_seconds=args.cancel_seconds,
    )


if __name__ == "__main__":
    main()
