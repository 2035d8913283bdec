"""`/docs` (Swagger UI) and `/redoc` (ReDoc): the REST API's documentation pages, offline.

FastAPI's own pages load their JavaScript, CSS, favicon and fonts from public CDNs, so on an
air-gapped cluster they are blank. These are the same pages (FastAPI's `get_swagger_ui_html`
and `get_redoc_html`) loading their files from `/docs-assets/` on the control plane itself:
the Swagger UI and ReDoc bundles that the PyPI package `fastapi-offline` installs. Only its
files are used, not its `FastAPIOffline` factory, so the app stays built by `create_app`.

The pages and their assets are public, like `/openapi.json`: no route dependency, hence no
authentication and no rate limit. A Content-Security-Policy confines both pages to their own
origin, so a browser refuses, rather than silently fetches, anything from elsewhere.

One file is served changed: ReDoc's side menu always shows Redocly's logo from Redocly's CDN
(`REDOC_REMOTE_LOGO`), so the bundle is served with an empty `data:` URL in its place; the
image then fails to load and ReDoc hides it. The "API docs by Redocly" link stays.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.routing import Match, Mount
from starlette.types import Scope

ASSETS_URL = "/docs-assets"
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"
ASSET_FILES = (SWAGGER_JS, SWAGGER_CSS, REDOC_JS, FAVICON)
REDOC_REMOTE_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"

# What the policy is for is `'self'`: nothing from another origin. FastAPI's pages start Swagger UI
# and ReDoc from an inline script ('unsafe-inline'); ReDoc bundles ajv, which compiles JSON-schema
# validators with `new Function` ('unsafe-eval'); blob: and data: URLs are made in the page.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class DocsAssetsMissingError(RuntimeError):
    """The installed `fastapi-offline` lacks a file the documentation pages load."""


def assets_directory() -> Path:
    """The directory of the installed Swagger UI and ReDoc bundles.

    Raises:
        DocsAssetsMissingError: `fastapi-offline` no longer ships one of `ASSET_FILES` there
            (a release that moved them): better a failed start than blank pages.
    """
    directory = Path(str(files("fastapi_offline") / "static"))
    missing = [name for name in ASSET_FILES if not (directory / name).is_file()]
    if missing:
        raise DocsAssetsMissingError(
            f"the API documentation assets {missing} are not in {directory}: the installed "
            "fastapi-offline does not ship them (check the version pyproject.toml pins)"
        )
    return directory


class _AssetsMount(Mount):
    """A mount that records itself as the request's route, as FastAPI's routes do and
    Starlette's mounts do not, so request metrics label asset requests `/docs-assets/{path}`
    rather than `unmatched`."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is Match.FULL:
            child_scope["route"] = self
        return match, child_scope


def _redoc_bundle(directory: Path) -> bytes:
    """ReDoc's bundle, without the one URL it loads from elsewhere (the module docstring)."""
    return (directory / REDOC_JS).read_bytes().replace(REDOC_REMOTE_LOGO, b"data:,")


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def install_docs_pages(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve Swagger UI at `docs_url` and ReDoc at `redoc_url` from local assets.

    Build the app with `docs_url=None, redoc_url=None` so that FastAPI's CDN pages are not
    registered too.
    """
    assert app.openapi_url is not None, "the documentation pages render the OpenAPI document"
    openapi_url = app.openapi_url
    directory = assets_directory()
    redoc_bundle = _redoc_bundle(directory)
    redoc_etag = f'"{hashlib.sha256(redoc_bundle).hexdigest()[:32]}"'

    # Before the mount, which would otherwise serve the file unchanged.
    @app.get(f"{ASSETS_URL}/{REDOC_JS}", include_in_schema=False)
    def redoc_js(request: Request) -> Response:
        headers = {"ETag": redoc_etag, "Cache-Control": "no-cache"}  # revalidate: a 304
        if request.headers.get("if-none-match") == redoc_etag:
            return Response(status_code=304, headers=headers)
        return Response(redoc_bundle, media_type="text/javascript", headers=headers)

    assets = StaticFiles(directory=directory)
    app.router.routes.append(_AssetsMount(ASSETS_URL, app=assets, name="docs-assets"))

    @app.get(docs_url, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _page(
            get_swagger_ui_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{root}{ASSETS_URL}/{SWAGGER_JS}",
                swagger_css_url=f"{root}{ASSETS_URL}/{SWAGGER_CSS}",
                swagger_favicon_url=f"{root}{ASSETS_URL}/{FAVICON}",
                oauth2_redirect_url=None,  # bearer tokens only: no OAuth2 flow to return from
                # No badge from the public validator, should a layout ever show one.
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get(redoc_url, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _page(
            get_redoc_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{ASSETS_URL}/{REDOC_JS}",
                redoc_favicon_url=f"{root}{ASSETS_URL}/{FAVICON}",
                with_google_fonts=False,
            )
        )
