"""`bench/scheduling_simulation.py` on a tiny workload (a few simulated hours, under a second
each run): at no event does a cluster hold more GPUs than it has; with borrowing off no tenant
ever holds more than its nominal quota of a type and nothing is preempted; with borrowing on
idle quota is used and taken back by preemption; the same seed gives the same figures. It
drives the product's own decision functions, so these are checks of them too."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from tests.tiers import load_script

sim = load_script("bench/scheduling_simulation.py")

TINY = sim.Model(clusters="H100:8,A100:8x2", tenants=4, hours=12, load=1.2, mean_min=45, seed=3)


def run(**change: Any) -> dict[str, Any]:
    return sim.simulate(dataclasses.replace(TINY, **change))


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, Any]]:
    return sim.compare(TINY)


def test_never_more_gpus_than_a_cluster_has(runs: dict[str, dict[str, Any]]) -> None:
    for label, results in runs.items():
        assert results["over_capacity_events"] == 0, label
        assert 0 < results["utilisation"] <= 1, label


def test_with_borrowing_off_no_tenant_exceeds_its_nominal_and_nothing_is_preempted(
    runs: dict[str, dict[str, Any]],
) -> None:
    for label in ("borrow off, reserve off", "borrow off, reserve on"):
        assert runs[label]["max_over_nominal"] <= 0, label
        assert runs[label]["preemptions"] == 0 and runs[label]["borrowed_gpu_h"] == 0, label


def test_with_borrowing_on_idle_quota_is_borrowed_and_taken_back(
    runs: dict[str, dict[str, Any]],
) -> None:
    off, on = runs["borrow off, reserve off"], runs["borrow on, reserve off"]
    assert on["borrowed_gpu_h"] > 0 and on["max_over_nominal"] > 0
    assert on["preemptions"] > 0
    assert on["utilisation"] > off["utilisation"]
    # Under hard per-type quotas some jobs can never run and are refused at submission.
    assert off["refused_at_submit"] > 0 == on["refused_at_submit"]


def test_the_same_seed_gives_the_same_figures_and_another_seed_others() -> None:
    first = run(borrowing=True, reservations=True)
    assert run(borrowing=True, reservations=True) == first
    assert run(borrowing=True, reservations=True, seed=4) != first


def test_the_workload_is_the_same_across_the_four_runs(runs: dict[str, dict[str, Any]]) -> None:
    asked = {label: r["offered_load"] for label, r in runs.items()}
    assert len(set(asked.values())) == 1, asked
    assert len({r["jobs"] for r in runs.values()}) == 1


def test_nominal_quotas_split_each_type_by_weight_to_the_last_gpu() -> None:
    nominal = sim.nominal_quotas({"a": 1.0, "b": 2.0, "c": 1.0}, {"H100": 10, "L4": 3})
    # 2.5 / 5 / 2.5: the spare GPU goes to the name that sorts first on a tie.
    assert {t: q["H100"] for t, q in nominal.items()} == {"a": 3, "b": 5, "c": 2}
    assert sum(q["L4"] for q in nominal.values()) == 3


def test_the_command_line_prints_the_runs_side_by_side_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sched.json"
    args = ["--clusters", "H100:8", "--tenants", "2", "--hours", "4", "--json", str(out)]
    assert sim.main([*args, "--seed", "5"]) == 0
    printed = capsys.readouterr().out
    for label, _, _ in sim.VARIANTS:
        assert label in printed
    document = json.loads(out.read_text())
    assert document["model"]["seed"] == 5 and len(document["runs"]) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clusters", "H100"], "--clusters: cluster 'H100': expected TYPE:GPUS"),
        (["--clusters", "H100:0"], "at least 1 GPU"),
        (["--tenants", "0"], "--tenants must be at least 1"),
        (["--load", "-1"], "must be positive"),
    ],
)
def test_bad_options_get_a_clear_error(args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        sim.main(args)
    assert message in str(exit_.value)
