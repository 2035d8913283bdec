"""The API documentation pages as a person on an air-gapped machine meets them: `fleetflow dev
up`, then `/docs` (Swagger UI) and `/redoc` (ReDoc) in a real headless Chromium that may
reach nothing but the control plane.

The browser reaches the control plane under a host name, as on a real cluster (scripts like
Swagger UI's validator badge hold back on `localhost` only), which it resolves to loopback.
Every request to another origin is refused and recorded, and so is every Content-Security-
Policy violation (the pages' policy blocks other origins before a request is even made): the
test fails if the page tried to load anything from elsewhere, a CDN above all. It then checks
that the page rendered every operation of the OpenAPI document, not just a blank frame.
A first test, in process and without a browser, checks what the pages are served with.

The browser is Debian's `chromium` (infra/scripts/chromium.py), driven by Playwright from PyPI,
which is never asked to download a browser of its own. Without Chromium the tests skip loudly,
or fail with FLEETFLOW_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi.testclient import TestClient

from control_plane.api import docs_pages
from control_plane.api.app import create_app
from control_plane.db.migrate import upgrade_database
from control_plane.db.session import make_engine, make_session_factory
from control_plane.settings import ApiSettings, DatabaseSettings, Settings
from fleetflow.storage import LocalBlobStore
from tests.e2e.test_dev_up import DevUp
from tests.integration.test_api import FakeLauncher
from tests.tiers import load_script, tier_unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Route

REQUIRE_ENV = "FLEETFLOW_REQUIRE_BROWSER"
SITE_HOST = "fleetflow-docs.test"  # a reserved top-level domain: never a real host
# Another site on loopback, for the console's cross-site forgery test
# (tests/e2e/test_console_browser.py): the pages it serves are refused by every other test.
OTHER_SITE_HOST = "another-site.test"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The control plane's host name (and the other site's) is loopback; no other name
    # resolves at all. Should a request slip past the route below all the same, it goes to a
    # proxy that does not exist.
    f"--host-resolver-rules=MAP {SITE_HOST} 127.0.0.1, MAP {OTHER_SITE_HOST} 127.0.0.1, "
    "MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
    f"--proxy-bypass-list={SITE_HOST};{OTHER_SITE_HOST}",
]
RENDER_TIMEOUT_MS = 90_000  # two shared cores parsing a 1.5 MB bundle and the whole API
KNOWN_PATH = "/api/v1/executions"


def test_pages_and_assets_are_public_local_and_not_rate_limited(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fleetflow.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    # One request a tenant, one refused token an address: the pages must not count.
    api = ApiSettings(
        rate_limit_per_second=0.001,
        rate_limit_burst=1,
        auth_failures_burst=1,
        auth_failures_per_second=0.001,
    )
    app = create_app(
        Settings(database=DatabaseSettings(url=url), api=api),
        session_factory=make_session_factory(engine),
        launcher=FakeLauncher(),
        blob_store=LocalBlobStore(tmp_path / "blobs"),
    )
    assets = {f"{docs_pages.ASSETS_URL}/{name}" for name in docs_pages.ASSET_FILES}
    loaded: set[str] = set()
    with TestClient(app, headers={"Authorization": "Bearer not-a-token"}) as client:
        for _ in range(3):
            for page in ("/docs", "/redoc"):
                response = client.get(page)
                assert response.status_code == 200, response.text
                csp = response.headers["content-security-policy"]
                assert csp.startswith("default-src 'self';"), csp
                assert "//" not in response.text, response.text  # no other origin at all
                urls = re.findall(r'(?:src|href|spec-url)="([^"]+)"', response.text)
                loaded |= set(urls)
            for asset in sorted(assets):
                response = client.get(asset)
                assert response.status_code == 200, (asset, response.text)
                if asset.endswith(docs_pages.REDOC_JS):
                    assert docs_pages.REDOC_REMOTE_LOGO not in response.content
                    etag = {"If-None-Match": response.headers["etag"]}
                    assert client.get(asset, headers=etag).status_code == 304
    engine.dispose()
    assert loaded == assets | {"/openapi.json"}  # ReDoc's; Swagger UI's is in a script


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium under Playwright; skips (or fails, FLEETFLOW_REQUIRE_BROWSER=1)
    without it."""
    chromium = load_script("infra/scripts/chromium.py")
    try:
        binary = chromium.find_chromium()
    except chromium.ChromiumUnavailableError as exc:
        tier_unavailable(f"BROWSER TESTS SKIPPED - {exc}", REQUIRE_ENV)
    if binary is None:
        tier_unavailable(
            f"BROWSER TESTS SKIPPED - Chromium is not installed: {chromium.how_to_get_it()}",
            REQUIRE_ENV,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        tier_unavailable(
            "BROWSER TESTS SKIPPED - the `playwright` package is not installed: "
            "pip install -e '.[dev]'",
            REQUIRE_ENV,
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(binary), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class OfflinePage:
    """A page that may load from `origin` only, and what it tried beyond that."""

    page: Page
    origin: str  # the control plane, as the browser reaches it
    api_url: str  # the same, as the tests reach it
    refused: list[str] = field(default_factory=list)  # URLs of other origins
    errors: list[str] = field(default_factory=list)  # CSP violations, console errors, exceptions

    def local(self, url: str) -> bool:
        return url == self.origin or url.startswith((f"{self.origin}/", "data:", "blob:"))

    def refuse(self, url: str) -> None:
        if url not in self.refused:
            self.refused.append(url)

    def open(self, path: str) -> None:
        response = self.page.goto(f"{self.origin}{path}", wait_until="load")
        assert response is not None and response.status == 200, (path, response)

    def assert_stayed_local(self) -> None:
        assert not self.refused, f"the page tried to load from other origins: {self.refused}"
        assert not self.errors, f"the page reported errors: {self.errors}"


@pytest.fixture
def offline_page(browser: Browser, dev_up: DevUp) -> Iterator[OfflinePage]:
    context = browser.new_context(service_workers="block")
    page = context.new_page()
    offline = OfflinePage(page, f"http://{SITE_HOST}:{dev_up.ports['api']}", dev_up.api_url)

    def guard(route: Route) -> None:
        if offline.local(route.request.url):
            route.continue_()
        else:
            offline.refuse(route.request.url)
            route.abort("blockedbyclient")

    def note_request(request: Request) -> None:  # also what bypasses routing, if anything
        if not offline.local(request.url):
            offline.refuse(request.url)

    def note_console(message: ConsoleMessage) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            offline.errors.append(f"console {message.type}: {message.text}")

    context.route("**/*", guard)
    page.on("request", note_request)
    page.on("console", note_console)
    page.on("pageerror", lambda error: offline.errors.append(f"exception: {error}"))
    try:
        yield offline
    finally:
        context.close()


def openapi_document(api_url: str) -> dict[str, Any]:
    response = httpx.get(f"{api_url}/openapi.json", timeout=30)
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    assert KNOWN_PATH in document["paths"], sorted(document["paths"])
    return document


@pytest.mark.integration
@pytest.mark.browser
def test_swagger_ui_renders_every_operation_offline(offline_page: OfflinePage) -> None:
    document = openapi_document(offline_page.api_url)
    offline_page.open("/docs")
    page = offline_page.page

    known = page.locator(f'.opblock-summary-path[data-path="{KNOWN_PATH}"]').first
    known.wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
    assert page.locator(".info .title").first.inner_text().startswith(document["info"]["title"])
    shown = set(
        page.locator(".opblock-summary-path").evaluate_all(
            "nodes => nodes.map(n => n.dataset.path)"
        )
    )
    assert shown == set(document["paths"]), set(document["paths"]) ^ shown
    offline_page.assert_stayed_local()


@pytest.mark.integration
@pytest.mark.browser
def test_redoc_renders_every_operation_offline(offline_page: OfflinePage) -> None:
    document = openapi_document(offline_page.api_url)
    offline_page.open("/redoc")
    page = offline_page.page

    page.get_by_text(KNOWN_PATH, exact=True).first.wait_for(
        state="attached", timeout=RENDER_TIMEOUT_MS
    )
    operation_ids = {
        f"operation/{operation['operationId']}"
        for operations in document["paths"].values()
        for operation in operations.values()
    }
    shown = set(
        page.locator('[data-section-id^="operation/"]').evaluate_all(
            "nodes => nodes.map(n => n.dataset.sectionId)"
        )
    )
    assert shown == operation_ids, operation_ids ^ shown
    offline_page.assert_stayed_local()
