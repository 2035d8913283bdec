"""Capturing a workflow defined interactively (`fleetflow.interactive`): what the generated
module holds, that it runs as the session's workflow does, and what is refused with which
message. Sessions are real: IPython's shell (what a Jupyter kernel runs) and the plain `python`
console, each in a child process of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fleetflow import Client
from fleetflow.bundle import BundleError, build_bundle_from_files, extract_bundle
from fleetflow.errors import FleetflowError

pytest.importorskip("IPython")

SESSION = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance(colors="nocolor")
for cell in json.load(sys.stdin):
    if not shell.run_cell(cell, store_history=True).success:
        sys.exit(3)
"""

REPORT = """
import json
from fleetflow.interactive import InteractiveCaptureError, capture_workflow
try:
    captured = capture_workflow(pipeline)
except InteractiveCaptureError as exc:
    print("REPORT " + json.dumps({"error": str(exc)}))
else:
    print("REPORT " + json.dumps({
        "module": captured.module,
        "source": captured.source,
        "files": sorted(captured.files),
        "name": captured.workflow.spec.name,
        "task_modules": sorted({t.module for t in captured.workflow.spec.tasks.values()}),
        "local": repr(pipeline(**INPUTS)),
        "captured": repr(captured.workflow(**INPUTS)),
        "again": capture_workflow(pipeline).module,
        "same_policies": [
            t.model_dump(exclude={"name", "module", "interface"})
            for t in sorted(pipeline.spec.tasks.values(), key=lambda t: t.function)
        ] == [
            t.model_dump(exclude={"name", "module", "interface"})
            for t in sorted(captured.workflow.spec.tasks.values(), key=lambda t: t.function)
        ],
    }))
"""

IMPORTS = """
import math
from dataclasses import dataclass
from fleetflow import Resources, task, workflow
"""


def ipython(cells: list[str], cwd: Path, *, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run `cells` in an IPython shell, then capture `pipeline`: the report."""
    cells = [*(textwrap.dedent(c).strip() for c in cells), f"INPUTS = {inputs or {}!r}", REPORT]
    done = subprocess.run(
        [sys.executable, "-c", SESSION],
        input=json.dumps(cells),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, f"{done.stdout}\n{done.stderr}"
    report: dict[str, Any] = json.loads(lines[-1].removeprefix("REPORT "))
    return report


COMMON = [
    IMPORTS,
    """
    SCALE = 3
    RETRIES = 2
    NAMES = ("a", "b")
    unused = object()

    @dataclass
    class Stats:
        total: int
        root: float
    """,
    """
    def helper(n):
        return n * SCALE

    def not_used():
        return unused
    """,
    """
    @task(resources=Resources(cpu=1), retries=RETRIES)
    def square(n: int) -> int:
        return helper(n) ** 2

    @task
    def summarize(a: int, b: int) -> Stats:
        return Stats(total=a + b, root=math.sqrt(a + b))
    """,
    """
    @workflow
    def pipeline(x: int = 2, y: int = 3) -> Stats:
        return summarize(a=square(n=x), b=square(n=y))
    """,
]


def test_a_notebook_workflow_is_captured_with_what_it_uses_and_nothing_else(
    tmp_path: Path,
) -> None:
    report = ipython(COMMON, tmp_path, inputs={"x": 1, "y": 2})
    source = report["source"]
    module = report["module"]
    assert module.startswith("fleetflow_interactive_") and len(module) == 22 + 16
    assert report["again"] == module  # the same code, the same module (and bundle)
    assert report["files"] == [f"{module}.py"]
    assert report["name"] == f"{module}.pipeline"
    assert report["task_modules"] == [module]
    assert report["same_policies"] is True  # resources, retries... as the session's
    for expected in (
        "import math\n",
        "from dataclasses import dataclass\n",
        "from fleetflow.task import task\n",
        "SCALE = 3\n",
        "@dataclass\nclass Stats:\n",
        "def helper(n):\n",
        "from fleetflow.resources import Resources\n",
        "RETRIES = 2\n",
        "@task(resources=Resources(cpu=1), retries=RETRIES)\ndef square(n: int) -> int:\n",
        "@workflow\ndef pipeline(x: int = 2, y: int = 3) -> Stats:\n",
    ):
        assert expected in source
    for left_out in ("NAMES", "unused", "not_used"):
        assert left_out not in source
    # The helper is defined before the task that calls it, the dataclass before its user.
    assert source.index("class Stats") < source.index("def summarize")
    assert report["local"] == report["captured"] == "Stats(total=45, root=6.708203932499369)"


def test_aliases_postponed_annotations_and_renamed_imports_are_captured(tmp_path: Path) -> None:
    cells = [
        "from __future__ import annotations",
        "import enum\nimport functools\nimport posixpath as pp\nfrom math import sqrt as root",
        "from fleetflow import task, workflow",
        """
        from dataclasses import dataclass

        @dataclass
        class Point:
            x: float
            y: float

        Points = list[Point]
        MaybeName = str | None

        class Unit(enum.Enum):
            M = "m"
            KM = "km"

        DEFAULT_UNIT = Unit.KM

        @functools.cache
        def suffix(unit: Unit) -> str:
            return unit.value
        """,
        """
        @task
        def norms(points: Points, name: MaybeName = None) -> list[float]:
            return [root(p.x**2 + p.y**2) for p in points]

        @task
        def label(values: list[float], name: MaybeName = None) -> str:
            return pp.join(name or "unnamed", str(sum(values)) + suffix(DEFAULT_UNIT))

        @workflow
        def pipeline(points: Points, name: MaybeName = None) -> str:
            return label(values=norms(points=points), name=name)
        """,
    ]
    report = ipython(cells, tmp_path, inputs={"points": [], "name": "a"})
    source = report["source"]
    assert "error" not in report, report
    assert source.count("from __future__ import annotations\n") == 1
    assert "import posixpath as pp\n" in source
    assert "from math import sqrt as root\n" in source
    assert "Points = list[Point]\n" in source
    assert "MaybeName = str | None\n" in source
    assert source.index("class Point") < source.index("Points = ")
    assert "DEFAULT_UNIT = Unit.KM\n" in source
    assert "import functools\n" in source
    assert "@functools.cache\ndef suffix(unit: Unit) -> str:\n" in source
    assert source.index("class Unit") < source.index("DEFAULT_UNIT = ")
    assert report["captured"] == report["local"] == repr("a/0km")


def test_the_engineers_own_modules_are_packed_and_installed_ones_imported(tmp_path: Path) -> None:
    (tmp_path / "mylib").mkdir()
    (tmp_path / "mylib" / "__init__.py").write_text("from mylib.maths import triple\n")
    (tmp_path / "mylib" / "maths.py").write_text(
        "from myfactor import FACTOR\n\ndef triple(n: int) -> int:\n    return FACTOR * n\n"
    )
    (tmp_path / "myfactor.py").write_text("FACTOR = 3\n")
    (tmp_path / "mytasks.py").write_text(
        "from fleetflow import task\n\n@task\ndef negate(n: int) -> int:\n    return -n\n"
    )
    (tmp_path / "unused_local.py").write_text("X = 1\n")
    cells = [
        "import json\nfrom fleetflow import task, workflow\nfrom mylib import triple",
        "import unused_local\nfrom mytasks import negate",
        """
        @task
        def encode(n: int) -> str:
            return json.dumps({"n": triple(n)})

        @workflow
        def pipeline(n: int) -> str:
            return encode(n=negate(n=n))
        """,
    ]
    report = ipython(cells, tmp_path, inputs={"n": 2})
    assert "from mylib.maths import triple\n" in report["source"]
    assert "from mytasks import negate\n" in report["source"]
    assert "import json\n" in report["source"]
    assert report["files"] == [
        f"{report['module']}.py",
        "myfactor.py",  # imported by mylib
        "mylib/__init__.py",
        "mylib/maths.py",
        "mytasks.py",
    ]
    assert report["task_modules"] == sorted([report["module"], "mytasks"])
    assert report["captured"] == report["local"] == repr('{"n": -6}')


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        pytest.param(
            [
                "class Model:\n    pass\n\nMODEL = Model()",
                "@task\ndef predict(n: int) -> int:\n    return MODEL.predict(n)",
                "@workflow\ndef pipeline(n: int) -> int:\n    return predict(n=n)",
            ],
            "task 'predict' uses 'MODEL', a Model object, which cannot be captured by value "
            "(only modules, functions, classes and constants",
            id="object",
        ),
        pytest.param(
            [
                "double = lambda n: 2 * n",
                "@task\ndef twice(n: int) -> int:\n    return double(n)",
                "@workflow\ndef pipeline(n: int) -> int:\n    return twice(n=n)",
            ],
            "task 'twice' uses 'double', a lambda, whose source cannot be captured on its "
            "own; define it with `def double(...)`",
            id="lambda",
        ),
        pytest.param(
            [
                "@task\ndef step(n: int) -> int:\n    return n",
                "@workflow\ndef pipeline(n: int) -> int:\n    return step(n=n)",
                "@task\ndef step(n: int) -> int:\n    return n + 1",
            ],
            "task 'step' was redefined (or deleted) after the workflow was defined: run the "
            "workflow's cell again",
            id="redefined task",
        ),
        pytest.param(
            [
                "def make():\n    @task\n    def inner(n: int) -> int:\n        return n\n"
                "    return inner\n\nstep = make()",
                "@workflow\ndef pipeline(n: int) -> int:\n    return step(n=n)",
            ],
            "uses task 'inner', defined inside make.<locals>; define it at the top level of a cell",
            id="nested definition",
        ),
        pytest.param(
            [
                "LIMIT = float('nan')",
                "@task\ndef clip(n: int) -> float:\n    return min(n, LIMIT)",
                "@workflow\ndef pipeline(n: int) -> float:\n    return clip(n=n)",
            ],
            "task 'clip' uses 'LIMIT', a float object, which cannot be captured by value",
            id="nan",
        ),
        pytest.param(
            [
                "from typing import NamedTuple\nPair = NamedTuple('Pair', [('a', int)])",
                "@task\ndef pair(n: int) -> Pair:\n    return Pair(a=n)",
                "@workflow\ndef pipeline(n: int) -> Pair:\n    return pair(n=n)",
            ],
            "the `class` statement of class 'Pair' (used by workflow 'pipeline') is not in the "
            "session's cells (a class made by a call, such as NamedTuple('P', ...) or "
            "make_dataclass, has none): define it with a `class` statement in a cell",
            id="class without a statement",
        ),
    ],
)
def test_what_cannot_be_captured_is_refused_by_name(
    cells: list[str], message: str, tmp_path: Path
) -> None:
    report = ipython(["from fleetflow import task, workflow", *cells], tmp_path)
    assert report["error"].startswith("cannot capture workflow 'pipeline' for a remote run: ")
    assert message in report["error"]


def test_the_plain_python_console_keeps_no_source_and_says_so(tmp_path: Path) -> None:
    lines = [
        "from fleetflow import task, workflow",
        "from fleetflow.interactive import InteractiveCaptureError, capture_workflow",
        "@task",
        "def square(n: int) -> int:",
        "    return n * n",
        "",
        "@workflow",
        "def pipeline(n: int) -> int:",
        "    return square(n=n)",
        "",
        "print('LOCAL', pipeline(n=3))",
        "try:",
        "    capture_workflow(pipeline)",
        "except InteractiveCaptureError as exc:",
        "    print('REFUSED', exc)",
        "",
    ]
    done = subprocess.run(
        [sys.executable, "-i", "-q"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert "LOCAL 9" in done.stdout, done.stderr
    assert (
        "REFUSED cannot capture workflow 'pipeline' for a remote run: the source of workflow "
        "'pipeline' (used by the workflow) is not available: this interpreter did not keep it "
        "(the plain `python` console does not); define it in IPython or Jupyter, or in a .py file"
    ) in done.stdout, done.stderr


def test_a_bundle_of_generated_files_is_deterministic_and_safe(tmp_path: Path) -> None:
    files = {"b/m.py": b"x = 1\n", "a.py": b"y = 2\n"}
    digest, data = build_bundle_from_files(files, what="workflow 'w'")
    again, _ = build_bundle_from_files(dict(reversed(files.items())), what="workflow 'w'")
    assert again == digest
    extract_bundle(data, tmp_path / "out")
    assert (tmp_path / "out" / "b" / "m.py").read_bytes() == b"x = 1\n"
    for bad in ("../evil.py", "/abs.py", "a/./b.py", ""):
        with pytest.raises(BundleError, match="cannot bundle workflow 'w'|unsafe code bundle"):
            build_bundle_from_files({bad: b""}, what="workflow 'w'")
    with pytest.raises(BundleError, match="larger than"):
        build_bundle_from_files({"big.py": b"#" * 100}, what="workflow 'w'", max_bytes=10)


def test_registering_an_interactive_workflow_with_a_root_is_refused(tmp_path: Path) -> None:
    session: dict[str, Any] = {"__name__": "__main__"}  # `exec`'d code: __main__, no file
    exec(
        "from fleetflow import task, workflow\n"
        "@task\ndef one(n: int) -> int:\n    return n\n"
        "@workflow\ndef pipeline(n: int) -> int:\n    return one(n=n)\n",
        session,
    )
    with Client("http://127.0.0.1:9", token="unused") as client:
        with pytest.raises(FleetflowError, match="captured by value .* so it takes no root"):
            client.workflows.register(session["pipeline"], root=tmp_path)
