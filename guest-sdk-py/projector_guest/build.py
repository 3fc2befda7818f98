"""python -m projector_guest.build: turns a Python projection into a
WebAssembly component the Projector host deploys.

    python -m projector_guest.build signup_stats:SignupStats -o dist/signup_stats.wasm [-p src]

`MODULE:CLASS` names the projection class. componentize-py compiles the
module, this SDK and CPython into a component that imports nothing but the
projection contract (`--stub-wasi` answers WASI calls with stubs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SDK = Path(__file__).resolve().parent.parent


def wit_file() -> Path:
    for candidate in (SDK / "wit" / "projection.wit", SDK.parent / "wit" / "projection.wit"):
        if candidate.is_file():
            return candidate
    sys.exit("projector_guest.build: cannot find projection.wit; pass --wit PATH")


def componentize_py() -> str:
    """The componentize-py installed beside this Python (its venv), else on PATH."""
    beside = Path(sys.executable).parent / "componentize-py"
    found = str(beside) if beside.is_file() else shutil.which("componentize-py")
    if not found:
        sys.exit("projector_guest.build: componentize-py is not installed (pip install -e PATH/TO/guest-sdk-py[build])")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m projector_guest.build", description=__doc__.splitlines()[0])
    parser.add_argument("projection", help="MODULE:CLASS, e.g. signup_stats:SignupStats")
    parser.add_argument("-o", "--out", type=Path, help="the component to write (default dist/MODULE.wasm)")
    parser.add_argument("-p", "--path", action="append", default=[], help="where MODULE is (repeatable; default .)")
    parser.add_argument("--wit", type=Path, help="the contract (default: the SDK's)")
    args = parser.parse_args()
    module, _, cls = args.projection.partition(":")
    if not module or not cls:
        parser.error("name the projection as MODULE:CLASS")
    out = (args.out or Path("dist") / f"{module.replace('.', '_')}.wasm").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [str(Path(p).resolve()) for p in (args.path or ["."])]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="projector-build-") as work:
        Path(work, "projector_app.py").write_text(
            f"from projector_guest.component import world_for\nfrom {module} import {cls}\n\nWitWorld = world_for({cls})\n"
        )
        command = [
            componentize_py(),
            "-d", str(args.wit or wit_file()), "-w", "projection",
            "componentize", "projector_app", "--stub-wasi",
            "-p", work, "-p", str(SDK), *(flag for p in paths for flag in ("-p", p)),
            "-o", str(out),
        ]
        result = subprocess.run(command, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        if result.returncode != 0:
            sys.exit(result.returncode)
    size = out.stat().st_size / 1048576
    print(f"built {out} ({size:.1f} MiB, {time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
