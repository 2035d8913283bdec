"""Browser sessions of the server-rendered pages (`/dashboard`, the `/ui` console): the API
token kept in an HttpOnly, SameSite=Strict cookie, and protection of every state-changing
POST against cross-site request forgery.

A browser cannot send a bearer header by itself, so a page accepts the API token from a cookie
that its sign-in form sets. Every POST of such a page must come from the server's own origin
(`Origin`, else `Referer`) and carry the anti-forgery token of its form, a random value that the
page also keeps in a `fleetflow_csrf` cookie (double submit). One `WebSession` per site section
(its cookie path, and the page a refusal sends the user back to).
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from control_plane.api.auth import authenticate_token, client_address, get_request_guard
from control_plane.db.repositories import principals as principals_repo

COOKIE = "fleetflow_token"
CSRF_COOKIE = "fleetflow_csrf"
CSRF_FIELD = "csrf"
SESSION_SECONDS = 12 * 3600
_CSRF_SHAPE = re.compile(r"[A-Za-z0-9_-]{32,128}")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an http(s) URL, without the scheme's default port; None when
    `url` has no such origin (`null`, another scheme, garbage)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname  # lower-cased, IPv6 without brackets
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    shown_host = f"[{host}]" if ":" in host else host
    shown_port = "" if port is None or port == _DEFAULT_PORTS[scheme] else f":{port}"
    return f"{scheme}://{shown_host}{shown_port}"


def own_origin(request: Request) -> str:
    """This server's origin as the browser addressed it (the `Host` header; behind a TLS
    proxy the scheme is right only with uvicorn's `--proxy-headers`)."""
    origin = origin_of(str(request.base_url))
    assert origin is not None  # Starlette's base URL is always http(s)://host
    return origin


@dataclass(frozen=True)
class WebSession:
    """The session cookies of the pages below `path`; `name` and `home` say, in refusals,
    what refused and where to start again."""

    path: str
    home: str
    name: str

    def cross_site_refusal(self, request: Request) -> str | None:
        """Why a state-changing POST is refused as cross-site, or None when its origin is this
        server's own.

        The browser's `Origin` header decides; when a browser leaves it out, the origin of the
        `Referer`. `Origin: null` (a sandboxed frame, a `no-referrer` page, a redirect from
        another site) is refused: its origin cannot be checked. A request with neither header
        passes this check: every current browser sends `Origin` on a cross-site POST, so only
        a non-browser client (curl, a script, a test) sends neither, and it acts with its own
        credentials only. It still needs the form's anti-forgery token (`csrf_refusal`)."""
        header = request.headers.get("origin")
        if header is None:
            referer = request.headers.get("referer")
            if referer is None:
                return None
            header, what = referer, "Referer"
        else:
            what = "Origin"
        own = own_origin(request)
        origin = origin_of(header)
        if origin == own:
            return None
        if origin is None:
            return (
                f"Refused: the browser sent {what} {header[:200]!r}, so this form's origin "
                "cannot be checked (a sandboxed frame, a privacy setting or a redirect from "
                f"another site do that). Open {own}{self.home} and use the form there."
            )
        return (
            f"Refused: this form was posted from {origin}, not from this site ({own}). The "
            f"{self.name} accepts forms only from its own pages, so that another site cannot "
            f"act in your name (cross-site request forgery). Open {own}{self.home} and use "
            "the form there."
        )

    def csrf_refusal(self, request: Request, submitted: str) -> str | None:
        """Why the form's anti-forgery token is refused, or None when it matches the
        `fleetflow_csrf` cookie that came with it. Another site cannot read that cookie; a
        sibling subdomain that could plant one is stopped by `cross_site_refusal` first."""
        expected = request.cookies.get(CSRF_COOKIE, "")
        if _CSRF_SHAPE.fullmatch(expected) and hmac.compare_digest(
            expected.encode(), submitted.encode()
        ):
            return None
        return (
            "Refused: the form's anti-forgery token is missing or does not match this "
            f"browser's {CSRF_COOKIE} cookie (the page may be old, or cookies are blocked). "
            f"Reload {own_origin(request)}{self.home} and submit the form again."
        )

    def refusal(self, request: Request, submitted: str) -> str | None:
        """Why a state-changing POST is refused (cross-site, or without the right
        anti-forgery token), or None."""
        return self.cross_site_refusal(request) or self.csrf_refusal(request, submitted)

    def csrf_token(self, request: Request) -> str:
        """The browser's anti-forgery token, or a new one (set it with `keep_csrf`)."""
        current = request.cookies.get(CSRF_COOKIE, "")
        return current if _CSRF_SHAPE.fullmatch(current) else secrets.token_urlsafe(32)

    def keep_csrf(self, response: Response, request: Request, csrf: str) -> None:
        if request.cookies.get(CSRF_COOKIE) != csrf:
            response.set_cookie(CSRF_COOKIE, csrf, **self.cookie_attributes(request))

    def cookie_attributes(self, request: Request) -> dict[str, Any]:
        """How the session's cookies are kept (the token, the anti-forgery token): for these
        pages only, never sent cross-site, over HTTPS only when served over HTTPS, and out of
        scripts' reach (the server writes the anti-forgery token into its forms itself)."""
        return {
            "path": self.path,
            "httponly": True,
            "samesite": "strict",
            "secure": request.url.scheme == "https",
        }

    def sign_in(self, response: Response, request: Request, token: str) -> None:
        """Keep `token` in the session cookie, with a new anti-forgery token: one seen before
        sign-in is spent."""
        response.set_cookie(
            COOKIE, token.strip(), max_age=SESSION_SECONDS, **self.cookie_attributes(request)
        )
        self.keep_csrf(response, request, secrets.token_urlsafe(32))

    def sign_out(self, response: Response, request: Request) -> None:
        response.delete_cookie(COOKIE, **self.cookie_attributes(request))

    def token(self, request: Request) -> str | None:
        """The API token of the request: its bearer header, else the session cookie."""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:]
        return request.cookies.get(COOKIE) or None

    def principal(
        self, request: Request, session: Session
    ) -> tuple[principals_repo.Authenticated | None, str | None]:
        """Who the request's token belongs to (None without a valid one), and the token."""
        token = self.token(request)
        if not token:
            return None, None
        who = authenticate_token(
            session, get_request_guard(request), client_address(request), token
        )
        if who is not None:
            session.commit()  # last_used_at
        return who, token
