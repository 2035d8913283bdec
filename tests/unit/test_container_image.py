"""The image `infra/container/Containerfile` builds is the one the Helm charts name.

No container engine runs here, so the Containerfile is read, not built: its stages, the tag its
build command gives, and what the final stage runs, against the charts' default image
(`image.repository` and the chart's `appVersion`) and the package's version.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "infra" / "container" / "Containerfile"
CHARTS = [
    ROOT / "infra" / "helm" / "fleetflow-control-plane",
    ROOT / "infra" / "helm" / "fleetflow-agent",
]


def instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of each line, continuations joined, comments dropped."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    start = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[start:]


def test_the_build_command_tags_the_image_the_charts_name() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    build = r"build -f infra/container/Containerfile -t (\S+) \."
    tags = set(re.findall(build, CONTAINERFILE.read_text()))
    assert tags == {f"fleetflow/fleetflow:{version}"}
    for chart in CHARTS:
        values = yaml.safe_load((chart / "values.yaml").read_text())
        app_version = yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"]
        assert values["image"]["tag"] == ""  # the appVersion, so the two never drift
        assert f"{values['image']['repository']}:{app_version}" in tags, chart.name


def test_the_final_stage_runs_fleetflow_unprivileged_with_the_python_the_package_needs() -> None:
    steps = final_stage()
    base = steps[0][1]
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim", base)
    assert match, base
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(p) for p in requires.removeprefix(">=").split("."))
    assert (int(match[1]), int(match[2])) >= minimum
    words = dict(steps)
    assert words["USER"] == "1000:1000"  # the charts' runAsUser, runAsNonRoot
    assert words["ENTRYPOINT"] == '["fleetflow"]'  # the charts pass `control-plane serve` etc.
    assert "/opt/fleetflow/bin" in words["ENV"]  # `python -m fleetflow.runtime` in task pods
    # The build stage installs the server and agent extras into the venv the final one copies.
    build = instructions()
    assert any(w == "RUN" and '.[server,agent]"' in a for w, a in build)
    assert ("COPY", "--from=build /opt/fleetflow /opt/fleetflow") in steps


def test_the_charts_run_the_commands_the_image_has() -> None:
    for template, args in (
        ("fleetflow-control-plane/templates/api.yaml", '["control-plane", "serve"]'),
        ("fleetflow-control-plane/templates/worker.yaml", '["control-plane", "worker"]'),
        ("fleetflow-control-plane/templates/migrate-job.yaml", '["control-plane", "migrate"]'),
        (
            "fleetflow-agent/templates/deployment.yaml",
            '["fleetflow", "agent", "run", "--executor", "kubernetes"]',
        ),
    ):
        assert args in (ROOT / "infra" / "helm" / template).read_text(), template
