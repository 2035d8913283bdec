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

import html
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
from tests.e2e.test_api_docs_browser import (  # noqa: F401
    OTHER_SITE_HOST,
    SITE_HOST,
    OfflinePage,
    browser,
)
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

from fleetflow import dynamic, map_task, task, workflow


def _until(marker: str) -> bool:
    deadline = time.monotonic() + 600
    while not Path(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return Path(marker).exists()


@task
def wait_for(marker: str) -> str:
    return Path(marker).read_text() if _until(marker) else "timed out"


@task
def held(value: int, marker: str) -> int:
    if not _until(marker):
        raise TimeoutError(f"{marker} was never created")
    return value


@task(retries=0)
def explode(x: int) -> int:
    raise ValueError(f"console test failure for x={x}")


@workflow
def gated(marker: str) -> str:
    return wait_for(marker=marker)


@workflow
def failing(x: int = 7) -> int:
    return explode(x=x)


@task
def numbers(n: int) -> list[int]:
    return list(range(1, n + 1))


@task
def double(x: int) -> int:
    return 2 * x


@task
def plus(a: int, b: int) -> int:
    return a + b


@task
def total(values: list[int]) -> int:
    return sum(values)


@dynamic
def grow(xs: list[int]) -> int:
    result = 0
    for x in xs:
        result = plus(a=result, b=double(x=x))
    return result


@workflow
def fan_and_grow(marker: str, n: int = 3) -> int:
    xs = numbers(n=n)
    return held(value=plus(a=total(values=map_task(double)(x=xs)), b=grow(xs=xs)), marker=marker)
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
    page.click("#audit-link")  # a platform admin
    page.wait_for_selector("tr[data-action]")
    shot(page, "17-audit")
    console.assert_stayed_local()
    assert not console.errors, console.errors


def listed(page: Page) -> int:
    """How many executions the list shows the page's principal (up to 1,000)."""
    html = page.evaluate("fetch('/ui/executions?size=1000').then(r => r.text())")
    return str(html).count("<tr data-execution=")


def test_launch_from_the_form_and_watch_its_node_turn_green(
    console: OfflinePage, stack: DevUp, exchange_dir: Path
) -> None:
    for name in ("gated", "failing"):
        registered = stack.cli("register", "console_flows.py", name)
        assert registered.returncode == 0, registered.stdout + registered.stderr
    page = console.page
    sign_in(console, stack)
    page.goto(f"{console.origin}/ui/workflows", wait_until="load")
    page.click("a:text('console_flows.gated')")
    page.wait_for_selector("form#launch")
    marker = exchange_dir / "released-from-the-form"
    page.fill("form#launch input[name='in.marker']", str(marker))
    shot(page, "13-launch-form")
    page.click("form#launch button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/executions/ex-[0-9a-f]+\?tenant=.*"))
    page.wait_for_selector("#execution")
    page.evaluate("window.__sameDocument = true")
    assert "launched by admin" in page.locator("#execution").inner_text()
    page.wait_for_selector('svg.dag g.node[data-state="RUNNING"]', timeout=LIVE_MS)
    marker.write_text("from the form")
    page.wait_for_selector('svg.dag g.node[data-state="SUCCEEDED"]', timeout=LIVE_MS)
    page.wait_for_selector('#execution[data-final="1"]', state="attached", timeout=LIVE_MS)
    assert page.evaluate("window.__sameDocument") is True  # turned green live, no reload
    assert "from the form" in page.locator("#execution").inner_text()
    page.wait_for_selector("svg.gantt g.span")  # the attempt on the timeline
    shot(page, "14-launched-from-the-form")
    # A bad value: the API's message next to the field, nothing launched.
    page.goto(f"{console.origin}/ui/workflows/console_flows.failing", wait_until="load")
    page.evaluate("document.querySelector(\"form#launch input[name='in.x']\").type = 'text'")
    page.fill("form#launch input[name='in.x']", "seven")
    before = listed(page)
    page.click("form#launch button[type=submit]")
    error = page.locator("span.error[data-error-for='in.x']")
    error.wait_for()
    assert "int" in error.inner_text(), error.inner_text()
    shot(page, "15-launch-refused")
    assert listed(page) == before  # nothing launched
    console.errors.clear()  # the refusal's 422 answer, expected
    console.assert_stayed_local()
    assert not console.errors, console.errors


def test_a_viewer_of_another_tenant_sees_not_found_and_forged_cancels_are_refused(
    console: OfflinePage, stack: DevUp, exchange_dir: Path
) -> None:
    running = launch(stack, "gated", "--marker", str(exchange_dir / "never-released"))
    made = stack.cli("admin", "tenants", "create", "console-b")
    assert made.returncode == 0, made.stdout + made.stderr
    user = stack.cli("admin", "users", "create", "vic", "--tenant", "console-b", "--role", "viewer")
    assert user.returncode == 0, user.stdout + user.stderr
    token = re.search(r"^\s+(ff\S+)$", user.stdout, re.M)
    assert token, user.stdout
    page = console.page
    page.goto(f"{console.origin}/ui/signin", wait_until="load")
    page.fill("input[name=token]", token.group(1))
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/executions.*"))
    assert running not in page.locator("main").inner_text()  # not in the list
    for url in (
        f"{console.origin}/ui/executions/{running}",
        f"{console.origin}/ui/executions/{running}?tenant=default",
    ):
        answer = page.goto(url, wait_until="load")
        assert answer is not None and answer.status == 404, url
        assert "not found" in page.locator("main").inner_text()
    shot(page, "16-other-tenant-not-found")
    console.errors.clear()  # the two 404 answers, expected
    # The admin's own session: forged cancels (no token, a wrong one) are refused.
    page.context.clear_cookies()
    sign_in(console, stack)
    page.goto(f"{console.origin}/ui/executions/{running}", wait_until="load")
    page.wait_for_selector("button:text('Cancel')")
    for csrf in ("", "forged-" + "x" * 30):
        status = page.evaluate(
            """async ([url, csrf]) => {
                const body = new URLSearchParams({csrf: csrf, tenant: "default"});
                const r = await fetch(url, {method: "POST", body: body, redirect: "manual"});
                return r.status;
            }""",
            [f"/ui/executions/{running}/cancel", csrf],
        )
        assert status == 403, (csrf, status)
    console.errors.clear()  # the two 403 answers, expected
    with stack.client() as client:
        assert client.executions.get(running).status in ("QUEUED", "RUNNING")
        client.executions.cancel(running)
    console.assert_stayed_local()


class _AttackSite:
    """Another site on a loopback port of its own: it serves `pages` (path -> HTML) to anyone,
    as a page a signed-in user is lured to would be."""

    def __init__(self, pages: dict[str, str]) -> None:
        served = pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = served.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def _auto_submitting_form(action: str, csrf: str) -> str:
    """A page that, once loaded, POSTs the console's cancel form to `action` by itself."""
    return (
        "<!doctype html><title>You won a GPU</title>"
        f'<form id=f method=post action="{html.escape(action)}">'
        f'<input type=hidden name=csrf value="{html.escape(csrf)}">'
        "<input type=hidden name=tenant value=default></form>"
        "<script>document.getElementById('f').submit()</script>"
    )


def test_a_form_on_another_site_cannot_cancel_with_the_users_session(
    console: OfflinePage, stack: DevUp, exchange_dir: Path
) -> None:
    """Cross-site request forgery in a real browser: a signed-in admin opens a page of another
    site (another host name, on another loopback port) and of another origin of the same
    site (the console's host on another port); each auto-submits the
    console's cancel form. SameSite=Strict keeps the session cookie off the cross-site post,
    the same-site one carries it but comes from another origin, and both are refused (403)
    even with the form's real anti-forgery token in them. The execution goes on, and the
    user's session too."""
    running = launch(stack, "gated", "--marker", str(exchange_dir / "never-forged"))
    page = console.page
    sign_in(console, stack)
    page.goto(f"{console.origin}/ui/executions/{running}", wait_until="load")
    page.wait_for_selector("button:text('Cancel')")
    real_csrf = page.locator("form:has(button:text('Cancel')) input[name=csrf]").input_value()
    assert real_csrf
    target = f"{console.origin}/ui/executions/{running}/cancel"
    pages = {
        f"/{name}-{i}.html": _auto_submitting_form(target, csrf)
        for name in ("cross-site", "same-site")
        for i, csrf in enumerate(("", real_csrf))
    }
    site = _AttackSite(pages)
    attackers = {
        "cross-site": f"http://{OTHER_SITE_HOST}:{site.port}",
        "same-site": f"http://{SITE_HOST}:{site.port}",
    }
    # The attacking pages are other origins: let the page go there (and only there).
    for origin in attackers.values():
        console.page.context.route(f"{origin}/**", lambda route: route.continue_())
    try:
        for path in pages:
            kind = path[1:].rsplit("-", 1)[0]
            attacker = attackers[kind]
            with page.expect_response(
                lambda r: r.url == target and r.request.method == "POST", timeout=RENDER_MS
            ) as answered:
                page.goto(f"{attacker}{path}", wait_until="commit")
            answer = answered.value
            sent = answer.request.all_headers()
            cookies = sent.get("cookie", "")
            assert sent.get("origin") == attacker, (path, sent)
            if kind == "cross-site":
                assert "fleetflow_token=" not in cookies, (path, cookies)  # SameSite=Strict
                assert "fleetflow_csrf=" not in cookies, (path, cookies)
            else:  # same site: the cookie goes along; the origin check refuses the post
                assert "fleetflow_token=" in cookies, (path, cookies)
            assert answer.status == 403, (path, answer.status, answer.text())
            assert f"posted from {attacker}, not from this site" in answer.text(), path
            page.wait_for_load_state("load")
            shot(page, f"20-forged-cancel-{path[1:-5]}")
    finally:
        site.close()
    console.errors.clear()  # the 403 answers, expected
    # Nothing was cancelled, and the session still works.
    page.goto(f"{console.origin}/ui/executions/{running}", wait_until="load")
    page.wait_for_selector("button:text('Cancel')")
    assert page.locator("nav").inner_text().count("Sign out") == 1
    with stack.client() as client:
        assert client.executions.get(running).status in ("QUEUED", "RUNNING")
        client.executions.cancel(running)
    console.assert_stayed_local()


def test_a_map_nodes_bar_and_a_dynamic_sub_dag_appear_live(
    console: OfflinePage, stack: DevUp, exchange_dir: Path
) -> None:
    page = console.page
    sign_in(console, stack)
    marker = exchange_dir / "seen-live"
    running = launch(stack, "fan_and_grow", "--marker", str(marker), "--n", "3")
    page.goto(f"{console.origin}/ui/executions/{running}", wait_until="load")
    page.evaluate("window.__sameDocument = true")
    # Both while the execution still runs (its last task waits for `marker`, so a page that
    # loads late still sees it run): the map node's bar gets a segment, and the dynamic task's
    # nodes join the graph.
    page.wait_for_function(
        """() => !document.querySelector('#execution[data-final]') &&
                 document.querySelector('svg.dag g.node.dynamic') !== null""",
        timeout=LIVE_MS,
    )
    page.wait_for_function(
        "() => document.querySelector('svg.dag g.bar rect.seg') !== null", timeout=LIVE_MS
    )
    shot(page, "18-map-and-dynamic-running")
    assert page.locator("#execution[data-final]").count() == 0
    marker.write_text("seen")
    page.wait_for_selector('#execution[data-status="SUCCEEDED"]', timeout=LIVE_MS)
    page.wait_for_selector('#execution[data-final="1"]', state="attached", timeout=LIVE_MS)
    assert page.evaluate("window.__sameDocument") is True
    mapped = page.locator("svg.dag g.node:has(g.bar)")
    assert mapped.count() == 1 and mapped.locator("text.count").text_content() == "3/3"
    segment = mapped.locator("g.bar rect.seg")
    assert segment.count() == 1 and segment.get_attribute("data-state") == "SUCCEEDED"
    grown = page.locator("svg.dag g.node.dynamic")
    assert grown.count() == 6  # a double and a plus per element
    assert all(grown.nth(i).get_attribute("data-state") == "SUCCEEDED" for i in range(6))
    assert "24" in page.locator("#execution").inner_text()  # (2+4+6) twice
    shot(page, "19-map-and-dynamic-done")
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
    # Paging through them, 50 a page: the last page is reached by its own link.
    wall, browser_s = timed_open(page, f"{console.origin}/ui/executions", "tr[data-execution]")
    assert page.locator("tr[data-execution]").count() == 50
    print(f"executions list, 50 rows of {total}: {wall:.2f} s, navigation {browser_s:.2f} s")
    last = (total + 49) // 50
    page.goto(f"{console.origin}/ui/executions?page={last}", wait_until="load")
    assert page.locator("tr[data-execution]").count() == total - (last - 1) * 50
    assert page.locator("a[rel=next]").count() == 0 and page.locator("a[rel=prev]").count() == 1

    wall, browser_s = timed_open(
        page, f"{console.origin}/ui/executions/{tree}", "svg.dag g.node[data-node='n499']"
    )
    drawn = page.locator("svg.dag g.node").count()
    assert drawn == 500
    print(f"execution page, {drawn} nodes: {wall:.2f} s to rendered, navigation {browser_s:.2f} s")
    shot(page, "09-execution-500-nodes")
    console.assert_stayed_local()
