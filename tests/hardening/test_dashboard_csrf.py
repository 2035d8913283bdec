"""Cross-site request forgery on the dashboard (issue 13, finding 9).

Signing in and out are POSTs that must come from the dashboard's own origin with the form's
anti-forgery token; a refused one is a 403 that changes no cookie. A link (GET) signs nobody
out. The session cookie is HttpOnly and SameSite=Strict, and Secure over https.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.app import create_app
from control_plane.api.routes.dashboard import COOKIE, CSRF_COOKIE, origin_of
from control_plane.settings import DatabaseSettings, Settings
from fleetflow.storage import LocalBlobStore
from tests.hardening.world import unlimited
from tests.integration.auth import admin_token
from tests.integration.test_api import FakeLauncher

SITE = "http://testserver"  # TestClient's origin
EVIL = "https://evil.example"


@pytest.fixture
def app(session_factory: sessionmaker[Session], tmp_path: Path) -> FastAPI:
    return create_app(
        Settings(database=DatabaseSettings(url="sqlite://"), api=unlimited()),
        session_factory=session_factory,
        launcher=FakeLauncher(),
        blob_store=LocalBlobStore(tmp_path / "blobs"),
    )


@pytest.fixture
def token(app: FastAPI) -> str:
    return admin_token(app)


@pytest.fixture
def browser(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def form_csrf(page: httpx.Response) -> str:
    """The anti-forgery token in the page's form (what a browser submits with it)."""
    match = re.search(r'name=csrf value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


def sign_in(browser: TestClient, token: str) -> str:
    """Sign in from the dashboard's own form; the anti-forgery token of the signed-in page."""
    csrf = form_csrf(browser.get("/dashboard"))
    page = browser.post(
        "/dashboard/login", data={"token": token, "csrf": csrf}, headers={"Origin": SITE}
    )
    assert page.status_code == 200 and "Signed in as admin" in page.text, page.text
    return form_csrf(page)


def signed_in(browser: TestClient) -> bool:
    page = browser.get("/dashboard")
    return page.status_code == 200 and "Signed in as admin" in page.text


# --- sign in --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},
        {"Origin": EVIL, "Referer": f"{SITE}/dashboard"},  # Origin decides
        {"Referer": f"{EVIL}/phish.html"},  # a browser that left Origin out
        {"Origin": "null"},  # a sandboxed frame or a no-referrer page
        {"Origin": "https://testserver"},  # another scheme is another origin
        {"Origin": "http://testserver:8080"},  # and so is another port
    ],
)
def test_a_cross_site_sign_in_is_refused_and_sets_no_cookie(
    browser: TestClient, token: str, headers: dict[str, str]
) -> None:
    csrf = form_csrf(browser.get("/dashboard"))  # even with a valid anti-forgery token
    refused = browser.post(
        "/dashboard/login",
        data={"token": token, "csrf": csrf},
        headers=headers,
        follow_redirects=False,
    )
    assert refused.status_code == 403, refused.text
    assert "Refused" in refused.text
    assert "cross-site" in refused.text or "origin cannot be checked" in refused.text
    assert "Open http://testserver/dashboard" in refused.text
    assert not any(c.startswith(f"{COOKIE}=") for c in set_cookies(refused))
    assert COOKIE not in browser.cookies
    assert not signed_in(browser)


def test_the_refusal_names_the_foreign_origin(browser: TestClient, token: str) -> None:
    csrf = form_csrf(browser.get("/dashboard"))
    refused = browser.post(
        "/dashboard/login", data={"token": token, "csrf": csrf}, headers={"Origin": EVIL}
    )
    assert refused.status_code == 403
    assert f"posted from {EVIL}, not from this site ({SITE})" in refused.text
    assert token not in refused.text


def test_a_same_origin_sign_in_works(browser: TestClient, token: str) -> None:
    csrf = form_csrf(browser.get("/dashboard"))
    answer = browser.post(
        "/dashboard/login",
        data={"token": token, "csrf": csrf},
        headers={"Origin": SITE},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard"
    session = next(c for c in set_cookies(answer) if c.startswith(f"{COOKIE}="))
    attributes = [a.strip().lower() for a in session.split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes
    assert "path=/dashboard" in attributes and "secure" not in attributes  # plain http here
    renewed = next(c for c in set_cookies(answer) if c.startswith(f"{CSRF_COOKIE}="))
    assert f"{CSRF_COOKIE}={csrf};" not in renewed  # a new anti-forgery token with the session
    assert signed_in(browser)


def test_a_same_origin_referer_or_the_default_port_is_accepted(
    browser: TestClient, token: str
) -> None:
    csrf = form_csrf(browser.get("/dashboard"))
    page = browser.post(
        "/dashboard/login",
        data={"token": token, "csrf": csrf},
        headers={"Referer": f"{SITE}/dashboard?x=1"},
    )
    assert page.status_code == 200 and "Signed in as admin" in page.text
    csrf = form_csrf(page)
    page = browser.post(
        "/dashboard/login",
        data={"token": token, "csrf": csrf},
        headers={"Origin": "HTTP://TestServer:80"},
    )
    assert page.status_code == 200 and "Signed in as admin" in page.text


def test_a_client_without_origin_or_referer_still_needs_the_form_token(
    browser: TestClient, token: str
) -> None:
    # Not a browser (curl, a script): allowed, but only with the form's token and cookie.
    missing = browser.post("/dashboard/login", data={"token": token}, follow_redirects=False)
    assert missing.status_code == 403 and "anti-forgery token" in missing.text
    assert not any(c.startswith(f"{COOKIE}=") for c in set_cookies(missing))
    csrf = form_csrf(browser.get("/dashboard"))
    wrong = browser.post("/dashboard/login", data={"token": token, "csrf": csrf[::-1]})
    assert wrong.status_code == 403 and not signed_in(browser)
    page = browser.post("/dashboard/login", data={"token": token, "csrf": csrf})
    assert page.status_code == 200 and "Signed in as admin" in page.text


def test_a_token_without_its_cookie_is_refused(app: FastAPI, token: str) -> None:
    # An attacker can fetch a form (and its token) for itself, but not plant the cookie.
    with TestClient(app) as attacker:
        csrf = form_csrf(attacker.get("/dashboard"))
    with TestClient(app) as victim:
        refused = victim.post("/dashboard/login", data={"token": token, "csrf": csrf})
        assert refused.status_code == 403 and "anti-forgery token" in refused.text
        assert COOKIE not in victim.cookies


def test_the_session_cookie_is_secure_over_https(app: FastAPI, token: str) -> None:
    with TestClient(app, base_url="https://testserver") as browser:
        page = browser.get("/dashboard")
        assert "secure" in page.headers["set-cookie"].lower()  # the anti-forgery cookie
        answer = browser.post(
            "/dashboard/login",
            data={"token": token, "csrf": form_csrf(page)},
            headers={"Origin": "https://testserver"},
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
        session = next(c for c in set_cookies(answer) if c.startswith(f"{COOKIE}="))
        attributes = [a.strip().lower() for a in session.split(";")]
        assert {"secure", "httponly", "samesite=strict"} <= set(attributes)


# --- sign out -------------------------------------------------------------------------------


def test_a_link_does_not_sign_out(browser: TestClient, token: str) -> None:
    sign_in(browser, token)
    page = browser.get("/dashboard/logout", follow_redirects=False)
    assert page.status_code == 405 and page.headers["allow"] == "POST"
    assert "<form class=inline method=post action=/dashboard/logout>" in page.text
    assert not any(c.startswith(f"{COOKIE}=") for c in set_cookies(page))
    assert signed_in(browser)


def test_the_dashboard_signs_out_with_a_form_not_a_link(browser: TestClient, token: str) -> None:
    sign_in(browser, token)
    page = browser.get("/dashboard")
    assert "href=/dashboard/logout" not in page.text
    assert "method=post action=/dashboard/logout" in page.text


@pytest.mark.parametrize("headers", [{"Origin": EVIL}, {"Referer": f"{EVIL}/"}])
def test_a_cross_site_sign_out_is_refused(
    browser: TestClient, token: str, headers: dict[str, str]
) -> None:
    csrf = sign_in(browser, token)
    refused = browser.post(
        "/dashboard/logout", data={"csrf": csrf}, headers=headers, follow_redirects=False
    )
    assert refused.status_code == 403 and "cross-site" in refused.text
    assert not any(c.startswith(f"{COOKIE}=") for c in set_cookies(refused))
    assert signed_in(browser)


def test_a_sign_out_without_the_form_token_is_refused(browser: TestClient, token: str) -> None:
    sign_in(browser, token)
    refused = browser.post("/dashboard/logout", headers={"Origin": SITE})
    assert refused.status_code == 403 and "anti-forgery token" in refused.text
    assert signed_in(browser)


def test_a_same_origin_sign_out_clears_the_session(browser: TestClient, token: str) -> None:
    csrf = sign_in(browser, token)
    answer = browser.post(
        "/dashboard/logout", data={"csrf": csrf}, headers={"Origin": SITE}, follow_redirects=False
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard"
    cleared = next(c for c in set_cookies(answer) if c.startswith(f"{COOKIE}="))
    assert "max-age=0" in cleared.lower()
    assert COOKIE not in browser.cookies
    page = browser.get("/dashboard")
    assert page.status_code == 401 and "API token" in page.text


# --- origins --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://testserver", "http://testserver"),
        ("http://testserver:80/dashboard?x=1", "http://testserver"),
        ("HTTPS://Example.COM:443", "https://example.com"),
        ("https://example.com:8443/", "https://example.com:8443"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("null", None),
        ("file:///etc/passwd", None),
        ("http://host:notaport", None),
        ("", None),
    ],
)
def test_origins_are_compared_in_one_form(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin
