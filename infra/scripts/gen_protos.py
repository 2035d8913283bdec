"""Generate the agent protocol stubs into sdk/ (``make protos``).

Run with an output directory to generate elsewhere (the staleness test compares the two).
"""

from __future__ import annotations

import os
import sys
from importlib.resources import files
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"


def generate(out_dir: Path) -> list[Path]:
    """Generate *_pb2.py, *_pb2_grpc.py and *_pb2.pyi for every proto under protos/."""
    sources = sorted(PROTOS.rglob("*.proto"))
    include = str(files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *[str(s) for s in sources],
    ]
    # protoc finds the mypy plugin on PATH; it lives beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated = []
    for source in sources:
        stem = source.relative_to(PROTOS).with_suffix("")
        for suffix in ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi", "_pb2_grpc.pyi"):
            generated.append(out_dir / f"{stem}{suffix}")
    return generated


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "sdk"
    for path in generate(target):
        print(path.relative_to(target))  # noqa: T201
