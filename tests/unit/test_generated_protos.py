"""The committed gRPC stubs must be what `make protos` generates from protos/ today."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_are_not_stale(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_protos", ROOT / "infra/scripts/gen_protos.py"
    )
    assert spec and spec.loader
    gen_protos = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = gen_protos
    spec.loader.exec_module(gen_protos)

    generated = gen_protos.generate(tmp_path)
    assert generated, "no .proto files found under protos/"
    stale = []
    for path in generated:
        committed = ROOT / "sdk" / path.relative_to(tmp_path)
        if not committed.exists() or committed.read_bytes() != path.read_bytes():
            stale.append(str(committed.relative_to(ROOT)))
    assert not stale, f"stale generated stubs, run `make protos`: {stale}"
