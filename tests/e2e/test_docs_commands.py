"""Every shell command the README and the docs show is run here, or marked in the doc as not
run (with the reason) or as covered by a named test: a command added to a doc without either
fails this module, so no documented command goes stale unnoticed.

Commands come from the ```bash, ```sh, ```shell and ```console blocks of README.md, docs/*.md and
bench/README.md: every line of a bash block (a trailing `\\` continues it), and the `$ ` lines of
a console block, whose other lines are the output the doc promises. Each document's commands
run in document order against a `fleetflow dev up` of its own, with a HOME of its own, from a
view of the repository's root, as a user who followed the doc would run them: exit code 0, or
the one the doc shows (a console block whose output starts with `error:` exits 1; a trailing
`# exits N` says so). Earlier `export`/`source` lines of the document stay in effect, as in one
shell. A `make` command is never run here (it may reinstall the venv the tests run in, or build
servers for minutes): it must be marked.

Markers, in the doc itself:

- a trailing comment on the command: `# not run by tests: <reason>` or
  `# covered by tests/<path>[::<test>]` (also after other comment text, after a `;`);
- an HTML comment just before the block (only blank lines between), one clause a line:
  `not run by tests: <reason>` or `covered by <path>` for the whole block, or
  `` `<command prefix>`: not run by tests: <reason> `` for the commands starting so.

Placeholders of the docs (`ex-…`, `tok-…`, `ffa_…`, the example URL) are filled from what the
commands before them printed or from the stack, as a reader would fill them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.test_dev_up import DevUp, start_dev_up

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench/README.md"]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
COMMAND_SECONDS = 300
VENV_BIN = Path(sys.executable).parent

NOT_RUN = re.compile(r"not run by tests: *(?P<reason>\S.*)")
COVERED = re.compile(r"covered by (?P<path>[\w./-]+)(?:::(?P<name>[\w\[\]-]+))?")
EXITS = re.compile(r"(?:^|;)\s*exits (?P<code>\d+)\s*(?:;|$)")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>[\w-]*)\s*$")
# Lines of an untagged block that a reader would take for commands to type.
COMMAND_WORDS = re.compile(r"^\s*(\$ |fleetflow |make |python |pytest |kubectl |docker |export )")
# ... unless they are a usage synopsis: `[--option]`, `list|get`, `FILE`, `--token T`.
SYNOPSIS = re.compile(r"\[-|\w\|\w|(?<![\w=$/.-])[A-Z]+(?![\w=/.-])")


@dataclass(frozen=True)
class Marker:
    """Why a command is not run here: a reason, or the test that runs it instead."""

    reason: str = ""
    covered_by: str = ""  # path[::name], relative to the repository root

    def problem(self, command: str) -> str | None:
        """What is wrong with the marker of `command`, if anything: a test it names must
        exist; another file (a CI script) must run the command itself."""
        if self.reason:
            return None
        path, _, name = self.covered_by.partition("::")
        if not (ROOT / path).is_file():
            return f"covered by {path}: no such file"
        text = (ROOT / path).read_text()
        if name and not re.search(rf"\bdef {re.escape(name.split('[')[0])}\b", text):
            return f"covered by {self.covered_by}: {path} has no test {name}"
        if not name and not Path(path).name.startswith("test_") and command not in text:
            return f"covered by {path}, which does not run `{command}`"
        return None


@dataclass
class DocCommand:
    document: Path
    line: int  # of its first line, 1-based
    text: str  # continuation lines joined, trailing comment removed
    comment: str = ""
    output: list[str] = field(default_factory=list)  # what a console block shows it print
    marker: Marker | None = None

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"

    def expected_exit(self) -> int:
        if match := EXITS.search(self.comment):
            return int(match["code"])
        return 1 if self.output and self.output[0].startswith("error:") else 0


@dataclass
class Block:
    document: Path
    line: int  # of the opening fence
    language: str
    lines: list[str]
    html_comment: str | None  # the HTML comment just before it


# Parsing ------------------------------------------------------------------------------------


def split_comment(line: str) -> tuple[str, str]:
    """(command, trailing comment) of a shell line: a `#` starting a word, outside quotes."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
            elif char == "\\" and quote == '"':
                continue
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def blocks_of(document: Path) -> Iterator[Block]:
    lines = document.read_text().splitlines()
    i = 0
    comment: tuple[int, str] | None = None  # (line after it, text) of the last HTML comment
    while i < len(lines):
        if lines[i].lstrip().startswith("<!--"):
            start = i
            while "-->" not in lines[i]:
                i += 1
            text = "\n".join(lines[start : i + 1]).strip().removeprefix("<!--").removesuffix("-->")
            comment = (i + 1, text)
            i += 1
            continue
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        opening = i
        indent = len(fence["indent"])
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            line = lines[i]
            body.append(line[indent:] if not line[:indent].strip() else line.lstrip())
            i += 1
        just_before = (
            comment is not None
            and comment[0] <= opening
            and all(not line.strip() for line in lines[comment[0] : opening])
        )
        yield Block(
            document,
            opening + 1,
            fence["language"],
            body,
            comment[1] if just_before and comment is not None else None,
        )
        i += 1


def block_markers(block: Block) -> list[tuple[str, Marker]]:
    """(command prefix, marker) clauses of the HTML comment before a block ('' for all)."""
    clauses: list[tuple[str, Marker]] = []
    for raw in (block.html_comment or "").splitlines():
        line = raw.strip()
        prefix = ""
        if match := re.match(r"`(?P<prefix>[^`]+)`:?\s*(?P<rest>.*)", line):
            prefix, line = match["prefix"], match["rest"]
        if match := NOT_RUN.match(line):
            clauses.append((prefix, Marker(reason=match["reason"])))
        elif match := COVERED.match(line):
            name = f"::{match['name']}" if match["name"] else ""
            clauses.append((prefix, Marker(covered_by=match["path"] + name)))
    return clauses


def marker_in_comment(comment: str) -> Marker | None:
    if match := NOT_RUN.search(comment):
        return Marker(reason=match["reason"])
    if match := COVERED.search(comment):
        return Marker(covered_by=match["path"] + (f"::{match['name']}" if match["name"] else ""))
    return None


def commands_of(block: Block) -> list[DocCommand]:
    console = block.language == "console"
    commands: list[DocCommand] = []
    continued: DocCommand | None = None  # a command whose line ended with `\\`
    commented: DocCommand | None = None  # the last command, while its comment may go on
    for offset, raw in enumerate(block.lines):
        if continued is not None:
            text, comment = split_comment(raw)
            continued.text += " " + text.strip().removesuffix("\\").strip()
            continued.comment = "; ".join(c for c in (continued.comment, comment) if c)
            if not text.endswith("\\"):
                continued = None
            continue
        if console and not raw.startswith("$ "):
            if commands and raw.strip():
                commands[-1].output.append(raw.strip())
            continue
        text, comment = split_comment(raw.removeprefix("$ ") if console else raw)
        if not text.strip():
            # A comment-only line right below a commented command goes on with its comment.
            if commented is not None and comment:
                commented.comment += " " + comment
            else:
                commented = None
            continue
        command = DocCommand(block.document, block.line + 1 + offset, text.strip())
        command.text = command.text.removesuffix("\\").strip()
        command.comment = comment
        commands.append(command)
        continued = command if text.endswith("\\") else None
        commented = command if comment else None
    for command in commands:
        command.marker = marker_in_comment(command.comment)
    for prefix, marker in block_markers(block):
        for command in commands:
            if command.marker is None and command.text.startswith(prefix):
                command.marker = marker
    return commands


def document_commands(document: Path) -> list[DocCommand]:
    return [
        command
        for block in blocks_of(document)
        if block.language in SHELL_LANGUAGES
        for command in commands_of(block)
    ]


def is_make(command: DocCommand) -> bool:
    return re.match(r"(\S+=\S+ )*make\b", command.text) is not None


def runnable(document: Path) -> list[DocCommand]:
    return [c for c in document_commands(document) if c.marker is None]


# Placeholders -------------------------------------------------------------------------------


@dataclass
class Ran:
    command: DocCommand
    script: str
    result: subprocess.CompletedProcess[str]

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr


@dataclass
class DocumentRun:
    """One document's commands, run in order against its own stack."""

    stack: DevUp
    env: dict[str, str]
    cwd: Path
    ran: list[Ran] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)  # export/source lines run so far

    def shell(self, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", "set -o pipefail\n" + "\n".join([*self.setup, script])],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
        )


def repository_view(where: Path) -> Path:
    """A directory that looks like the repository's root, for commands the docs run "from the
    repository's root": what they write (`--download results`, caches) lands here, not in the
    checkout. `examples/` is a copy, since commands bundle and import it; the rest are links."""
    where.mkdir()
    for entry in ROOT.iterdir():
        if entry.name == "examples":
            shutil.copytree(entry, where / entry.name, ignore=shutil.ignore_patterns("__pycache__"))
        elif entry.name not in {".fleetflow", ".git"}:
            (where / entry.name).symlink_to(entry)
    return where


def latest_execution_id(run: DocumentRun) -> str:
    """The newest execution, as `fleetflow executions list` shows it (JSON when it can)."""
    listed = run.shell("fleetflow executions list --limit 1 --json")
    if listed.returncode != 0:  # a CLI without --json on this command: read the table
        listed = run.shell("fleetflow executions list --limit 1")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    match = re.search(r"\bex-[0-9a-f]+", listed.stdout)
    assert match, f"no execution to fill in ex-…: {listed.stdout}"
    return match.group(0)


def listed_token_id(run: DocumentRun) -> str:
    """The first token the document's last `admin tokens list` printed: the old one."""
    for ran in reversed(run.ran):
        if "admin tokens list" in ran.command.text:
            match = re.search(r"\btok-[0-9a-f]+", ran.output)
            assert match, f"{ran.command.where} listed no token:\n{ran.output}"
            return match.group(0)
    raise AssertionError("tok-… without an `admin tokens list` before it to take the id from")


def last_printed(pattern: str) -> Callable[[DocumentRun], str]:
    def find(run: DocumentRun) -> str:
        for ran in reversed(run.ran):
            if found := re.findall(pattern, ran.output):
                return str(found[-1])
        raise AssertionError(f"nothing printed before matches {pattern}")

    return find


PLACEHOLDERS: dict[str, Callable[[DocumentRun], str]] = {
    "ex-…": latest_execution_id,
    "tok-…": listed_token_id,
    "ffa_…": last_printed(r"\bffa_[A-Za-z0-9_-]{20,}"),
    "ffu_…": last_printed(r"\bffu_[A-Za-z0-9_-]{20,}"),
    "https://fleetflow.example.com": lambda run: run.stack.api_url,
}


def fill_placeholders(text: str, run: DocumentRun) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        if placeholder in text:
            text = text.replace(placeholder, value(run))
    return text


def matches_output(expected: list[str], output: str) -> str | None:
    """The first documented output line the command did not print (in order), if any;
    `…` in the doc stands for anything."""
    printed = [line.strip() for line in output.splitlines()]
    position = 0
    for line in expected:
        pattern = re.compile(".*".join(re.escape(part) for part in line.split("…")))
        while position < len(printed) and not pattern.fullmatch(printed[position]):
            position += 1
        if position == len(printed):
            return line
        position += 1
    return None


# Tests --------------------------------------------------------------------------------------


def test_every_command_block_is_tagged_as_shell() -> None:
    """An untagged block of commands would escape this module: tag it ```bash or ```console
    (or ```text for output)."""
    untagged = [
        f"{block.document.relative_to(ROOT)}:{block.line}: {line.strip()}"
        for document in DOCUMENTS
        for block in blocks_of(document)
        if block.language == ""
        for line in block.lines
        if COMMAND_WORDS.match(line) and not SYNOPSIS.search(split_comment(line)[0])
    ]
    assert not untagged, "commands in untagged blocks:\n" + "\n".join(untagged)


def test_every_marker_names_a_reason_or_an_existing_test() -> None:
    problems = []
    for document in DOCUMENTS:
        for block in blocks_of(document):
            if block.language not in SHELL_LANGUAGES:
                continue
            commands = commands_of(block)
            for prefix, _ in block_markers(block):
                if not any(c.text.startswith(prefix) for c in commands):
                    problems.append(f"{document.name}:{block.line}: no command `{prefix}`")
            for command in commands:
                if command.marker and (problem := command.marker.problem(command.text)):
                    problems.append(f"{command.where}: {problem}")
    assert not problems, "\n".join(problems)


def test_every_make_command_is_marked() -> None:
    """A make target may reinstall the very venv the tests run in, or build servers for
    minutes: the doc says how it is covered instead of this module running it."""
    unmarked = [f"{c.where}: {c.text}" for d in DOCUMENTS for c in runnable(d) if is_make(c)]
    assert not unmarked, (
        "make commands need `# not run by tests: <reason>` or `# covered by <test>`:\n"
        + "\n".join(unmarked)
    )


def test_commands_are_found_in_every_kind_of_block() -> None:
    """The parser itself: continuation lines, trailing comments, console output, markers."""
    block = Block(
        ROOT / "README.md",
        1,
        "console",
        [
            "$ fleetflow admin quotas set vision --gpu 16 \\",
            "    --cpu 8   # after '#' a comment",
            "quota of tenant vision is now:",
            "$ fleetflow executions get ex-…  # not run by tests: an example",
            "error: execution ex-… not found",
        ],
        None,
    )
    first, second = commands_of(block)
    assert first.text == "fleetflow admin quotas set vision --gpu 16 --cpu 8"
    assert first.comment == "after '#' a comment" and first.marker is None
    assert first.output == ["quota of tenant vision is now:"] and first.expected_exit() == 0
    assert second.marker == Marker(reason="an example") and second.expected_exit() == 1
    assert split_comment("echo '# not a comment' \"#\" # one") == (
        "echo '# not a comment' \"#\"",
        "one",
    )
    bash = Block(
        ROOT / "README.md",
        1,
        "bash",
        ["make test   # the suite", "make lint", "make bench  # on demand"],
        "\n`make test`: not run by tests: it is the suite\n`make lint`: covered by .ci/run\n",
    )
    test, lint, bench = commands_of(bash)
    assert test.marker == Marker(reason="it is the suite")
    assert lint.marker == Marker(covered_by=".ci/run") and lint.marker.problem("make lint") is None
    assert lint.marker.problem("make nothing") is not None
    assert bench.marker is None
    assert (
        matches_output(["token id: tok-… (revoke …)"], "x\ntoken id: tok-1 (revoke it)\n") is None
    )
    assert matches_output(["created"], "nothing") == "created"


@pytest.mark.timeout(900)  # a stack, then each command in turn, on a busy machine
@pytest.mark.parametrize(
    "document",
    [d for d in DOCUMENTS if runnable(d)],
    ids=lambda d: str(d.relative_to(ROOT)),
)
def test_the_commands_of_a_document_run_in_order(document: Path, tmp_path: Path) -> None:
    user_home = tmp_path / "user"
    user_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETFLOW_")}
    env["HOME"] = str(user_home)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VIRTUAL_ENV", None)
    # The stack keeps its state in ~/.fleetflow, so its admin token is where a control plane's
    # first start writes it (FLEETFLOW_API_BOOTSTRAP_TOKEN_FILE) and the CLI config is the
    # default one: the docs' `~/.fleetflow/…` paths are the stack's.
    with start_dev_up(
        tmp_path, env={"HOME": str(user_home)}, home=user_home / ".fleetflow"
    ) as stack:
        run = DocumentRun(stack, env, repository_view(tmp_path / "repository"))
        for command in runnable(document):
            assert not is_make(command), f"{command.where}: a make command, unmarked"
            script = fill_placeholders(command.text, run)
            assert "…" not in script, f"{command.where}: a placeholder nothing fills: {script}"
            result = run.shell(script)
            run.ran.append(Ran(command, script, result))
            shown = (
                f"{command.where}: `{script}` exited {result.returncode}, expected "
                f"{command.expected_exit()}\n--- stdout ---\n{result.stdout[-3000:]}\n"
                f"--- stderr ---\n{result.stderr[-3000:]}"
            )
            assert result.returncode == command.expected_exit(), shown + "\n" + stack.output()
            missing = matches_output(command.output, result.stdout + result.stderr)
            assert missing is None, f"{command.where}: the doc shows {missing!r}; {shown}"
            if re.match(r"(export|source|\.) ", script):
                run.setup.append(script)
