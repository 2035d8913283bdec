"""The web console (`/ui`) in a real headless Chromium against a real `fleetflow dev up`.

A person signs in with the admin token dev up printed, opens the executions list and watches
an execution whose task waits on a file the test creates: its graph node turns from running to
succeeded without a reload (server-sent events). They cancel a running execution from its
page, read a failed task's traceback and relaunch it. The browser may reach only the control
plane (the same guard as tests/e2e/test_api_docs_browser.py): a page that tried to load
anything from elsewhere, or broke its Content-Security-Policy, fails the test.

Each page is saved as a 1400x900 screenshot into tests/e2e/screenshots/ (ignored by git). The
last test times a list of 1,000 executions and a 500-node graph (created directly in dev up's
database, never run) and prints the numbers; it asserts only that every row and node rendered.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from control_plane.db.repositories.executions import create_execution, list_executions
from control_plane.db.repositories.tenants import get_tenant_by_name
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import make_engine, make_session_factory
from control_plane.settings import ApiSettings
from fleetflow.ir import (
    InputBinding,
    LiteralType,
    Node,
    NodeOutputBinding,
    TaskSpec,
    TypedInterface,
    TypeKind,
    Variable,
    WorkflowSpec,
)
from tests.e2e.test_api_docs_browser import SITE_HOST, OfflinePage, browser  # noqa: F401
from tests.e2e.test_dev_up import DevUp, start_dev_up
from tests.polling import wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Route

pytestmark = [pytest.mark.integration, pytest.mark.browser]

SCREENSHOTS = Path(__file__).parent / "screenshots"
VIEWPORT = {"width": 1400, "height": 900}
LIVE_MS = 180_000  # a task start on two shared cores
RENDER_MS = 120_000

# The workflows the console shows: a task that waits until the test creates a file, and one
# that fails with a traceback of the user's code.
CONSOLE_WORKFLOWS = """
import time
from pathlib import Path

from fleetflow import task, workflow


@task
def wait_for(marker: str) -> str:
    deadline = time.monotonic() + 600
    while not Path(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return Path(marker).read_text() if Path(marker).exists() else "timed out"


@task(retries=0)
def explode(x: int) -> int:
    raise ValueError(f"console test failure for x={x}")


@workflow
def gated(marker: str) -> str:
    return wait_for(marker=marker)


@workflow
def failing(x: int = 7) -> int:
    return explode(x=x)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevUp]:
    with start_dev_up(tmp_path_factory.mktemp("console")) as up:
        (up.workdir / "console_flows.py").write_text(CONSOLE_WORKFLOWS)
        yield up


@pytest.fixture
def console(browser: Browser, stack: DevUp) -> Iterator[OfflinePage]:  # noqa: F811
    context = browser.new_context(service_workers="block", viewport=VIEWPORT)
    page = context.new_page()
    offline = OfflinePage(page, f"http://{SITE_HOST}:{stack.ports['api']}", stack.api_url)

    def guard(route: Route) -> None:
        if offline.local(route.request.url):
            route.continue_()
        else:
            offline.refuse(route.request.url)
            route.abort("blockedbyclient")

    context.route("**/*", guard)

    def note_console(message: ConsoleMessage) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            offline.errors.append(f"console {message.type}: {message.text}")

    page.on("console", note_console)
    page.on("pageerror", lambda error: offline.errors.append(f"exception: {error}"))
    try:
        yield offline
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def launch(stack: DevUp, workflow: str, *args: str) -> str:
    ran = stack.cli("run", "--remote", "--no-wait", "console_flows.py", workflow, *args)
    assert ran.returncode == 0, ran.stdout + ran.stderr + stack.output()
    match = re.search(r"execution (ex-[0-9a-f]+)", ran.stdout)
    assert match, ran.stdout
    return match.group(1)


def sign_in(console: OfflinePage, stack: DevUp) -> None:
    page = console.page
    page.goto(f"{console.origin}/ui", wait_until="load")
    assert page.url.startswith(f"{console.origin}/ui/signin"), page.url
    shot(page, "01-sign-in")
    page.fill("input[name=token]", (stack.home / "admin-token").read_text().strip())
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/executions.*"))
    assert page.locator("nav").inner_text().count("Sign out") == 1


def node_state(page: Page) -> str:
    return page.locator("svg.dag g.node").first.get_attribute("data-state") or ""


def test_watch_cancel_read_a_traceback_and_relaunch(
    console: OfflinePage, stack: DevUp, exchange_dir: Path
) -> None:
    page = console.page
    sign_in(console, stack)
    marker = exchange_dir / "release-me"  # tasks run as users of their own
    watched = launch(stack, "gated", "--marker", str(marker))
    doomed = launch(stack, "gated", "--marker", str(exchange_dir / "never"))

    # The list refreshes itself while executions run: one launched now appears without a
    # reload. (It waits for a CPU of the local agent, which the two waiting tasks hold.)
    page.goto(f"{console.origin}/ui/executions", wait_until="load")
    page.wait_for_selector(f'tr[data-execution="{watched}"]')
    page.evaluate("window.__sameDocument = true")
    failed = launch(stack, "failing")
    page.wait_for_selector(f'tr[data-execution="{failed}"]', timeout=LIVE_MS)
    assert page.evaluate("window.__sameDocument") is True
    shot(page, "02-executions")

    # Live: the node runs, then succeeds when the file appears, with no reload in between.
    page.click(f'a:text("{watched}")')
    page.wait_for_selector("#execution")
    page.evaluate("window.__sameDocument = true")
    page.wait_for_selector('svg.dag g.node[data-state="RUNNING"]', timeout=LIVE_MS)
    shot(page, "03-execution-running")
    marker.write_text("released")
    page.wait_for_selector('svg.dag g.node[data-state="SUCCEEDED"]', timeout=LIVE_MS)
    page.wait_for_selector('#execution[data-status="SUCCEEDED"]', timeout=LIVE_MS)
    page.wait_for_selector('#execution[data-final="1"]', state="attached", timeout=LIVE_MS)
    assert page.evaluate("window.__sameDocument") is True  # recoloured, not reloaded
    shown = page.locator("#execution").inner_text()
    assert "released" in shown and "Cancel" not in shown  # its outputs; no more cancelling
    page.locator("details.log summary").first.click()
    page.wait_for_function("() => document.querySelector('pre[data-log]').textContent.length > 0")
    shot(page, "04-execution-succeeded")

    # Cancel a running one from its page.
    page.goto(f"{console.origin}/ui/executions/{doomed}", wait_until="load")
    page.wait_for_selector('svg.dag g.node[data-state="RUNNING"]', timeout=LIVE_MS)
    page.click("button:text('Cancel')")
    page.wait_for_selector('#execution[data-status="CANCELLED"]', timeout=LIVE_MS)
    assert f"/ui/executions/{doomed}" in page.url
    shot(page, "05-execution-cancelled")

    # A failed task's traceback, then relaunch it.
    with stack.client() as client:
        wait_until(
            lambda: client.executions.get(failed).status == "FAILED",
            timeout=LIVE_MS / 1000,
            message="the failing execution fails",
        )
    page.goto(f"{console.origin}/ui/executions/{failed}", wait_until="load")
    assert node_state(page) == "FAILED"
    page.locator("details:has(pre.traceback) summary").first.click()
    traceback = page.locator("pre.traceback").first.inner_text()
    assert "Traceback" in traceback and "console test failure for x=7" in traceback, traceback
    shot(page, "06-execution-failed")
    page.click("button:text('Relaunch')")
    page.wait_for_url(re.compile(r".*/ui/executions/ex-[0-9a-f]+\?tenant=.*"))
    assert failed not in page.url.split("?")[0]
    assert f"relaunched from {failed}" in page.locator("#execution").inner_text()
    shot(page, "07-execution-relaunched")

    # What can run, and where.
    page.click("nav a:text('Workflows')")
    page.wait_for_selector('tr[data-workflow="console_flows.gated"]')
    page.click("a:text('console_flows.gated')")
    page.wait_for_selector("svg.dag g.node")
    assert "(marker: str)" not in page.locator("main").inner_text()  # a table, not a signature
    shot(page, "10-workflow")
    page.click("nav a:text('Clusters')")
    row = page.locator('tr[data-cluster="local"]')
    assert row.locator(".badge").inner_text() == "online"
    shot(page, "11-clusters")
    page.click("nav a:text('Usage')")
    page.wait_for_selector("section h2")
    shot(page, "12-usage")
    console.assert_stayed_local()
    assert not console.errors, console.errors


def _int() -> LiteralType:
    return LiteralType(kind=TypeKind.INTEGER)


def wide_spec(nodes: int) -> WorkflowSpec:
    """A binary tree of `nodes` nodes of one int -> int task (never run)."""
    step = TaskSpec(
        name="console.step",
        module="console",
        function="step",
        interface=TypedInterface(
            inputs=[Variable(name="x", type=_int())], outputs=[Variable(name="o0", type=_int())]
        ),
    )
    made = [Node(id="n0", task=step.name, inputs={"x": InputBinding(input="x")})]
    for i in range(1, nodes):
        source = NodeOutputBinding(node_id=f"n{(i - 1) // 2}", output="o0")
        made.append(Node(id=f"n{i}", task=step.name, inputs={"x": source}))
    return WorkflowSpec(
        name=f"console.tree{nodes}",
        module="console",
        function=f"tree{nodes}",
        interface=TypedInterface(
            inputs=[Variable(name="x", type=_int())], outputs=[Variable(name="o0", type=_int())]
        ),
        tasks={step.name: step},
        nodes=made,
        outputs={"o0": NodeOutputBinding(node_id=f"n{nodes - 1}", output="o0")},
    )


def seed(stack: DevUp, executions: int, nodes: int) -> tuple[str, int]:
    """`executions` executions of a small workflow and one of a `nodes`-node one, written into
    dev up's database as the API would store them (never launched); the big one's id and how
    many executions the tenant has."""
    engine = make_engine(f"sqlite:///{stack.home / 'fleetflow.db'}")
    try:
        with make_session_factory(engine)() as session:
            tenant = get_tenant_by_name(session, ApiSettings().default_tenant)
            assert tenant is not None
            small = register_workflow_version(session, tenant.id, wide_spec(3), "e" * 64, "v1")
            for i in range(executions):
                create_execution(session, tenant.id, small, {"x": i})
            big = register_workflow_version(session, tenant.id, wide_spec(nodes), "e" * 64, "v1")
            tree = create_execution(session, tenant.id, big, {"x": 1})
            session.commit()
            total = len(list_executions(session, tenant.id, limit=100_000))
            return tree.id, total
    finally:
        engine.dispose()


def timed_open(page: Page, url: str, ready: str) -> tuple[float, float]:
    """Seconds from navigation to `ready` being in the page (measured here), and the
    browser's own navigation duration (`performance` timing: request to load event)."""
    start = time.perf_counter()
    page.goto(url, wait_until="load", timeout=RENDER_MS)
    page.wait_for_selector(ready, state="attached", timeout=RENDER_MS)
    wall = time.perf_counter() - start
    duration = page.evaluate("performance.getEntriesByType('navigation')[0].duration")
    return wall, float(duration) / 1000


def test_a_thousand_executions_and_a_500_node_graph_render(
    console: OfflinePage, stack: DevUp
) -> None:
    tree, total = seed(stack, executions=1000, nodes=500)
    page = console.page
    sign_in(console, stack)

    wall, browser_s = timed_open(
        page, f"{console.origin}/ui/executions?size=1000", "tr[data-execution]"
    )
    rows = page.locator("tr[data-execution]").count()
    assert rows == min(total, 1000), (rows, total)
    print(f"\nexecutions list, {rows} rows: {wall:.2f} s to rendered, navigation {browser_s:.2f} s")
    shot(page, "08-executions-1000")

    wall, browser_s = timed_open(
        page, f"{console.origin}/ui/executions/{tree}", "svg.dag g.node[data-node='n499']"
    )
    drawn = page.locator("svg.dag g.node").count()
    assert drawn == 500
    print(f"execution page, {drawn} nodes: {wall:.2f} s to rendered, navigation {browser_s:.2f} s")
    shot(page, "09-execution-500-nodes")
    console.assert_stayed_local()
