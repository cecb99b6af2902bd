"""The API's documentation pages, Swagger UI at ``/docs`` and ReDoc at ``/redoc``, with no third-party host.

Their scripts and styles are the files the ``fastapi-offline`` package ships, served from ``/docs/assets/``;
the pages run no inline script (Swagger UI starts from ``/docs/assets/swagger-init.js``), so the docs work
offline and under the docs' Content-Security-Policy (``service.api.headers``). Like every read, they need
the read key when one is set, unless ``CIRCAT_PUBLIC_DOCS=1``.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse, HTMLResponse, Response

from circat.service.errors import NotFound

ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}
SWAGGER_INIT = ('window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, '
                'presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset], '
                'layout: "BaseLayout"});\n')


def _page(title: str, head: str, body: str) -> HTMLResponse:
    return HTMLResponse(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
                        f'<link rel="icon" href="/docs/assets/favicon.png">{head}</head><body>{body}</body></html>')


def docs_router(title: str) -> APIRouter:
    """Routes of the two documentation pages and their assets (not in the OpenAPI document)."""
    router = APIRouter(include_in_schema=False)
    static = files("fastapi_offline") / "static"

    @router.get("/docs")
    def swagger() -> HTMLResponse:
        return _page(f"{title} - Swagger UI", '<link rel="stylesheet" href="/docs/assets/swagger-ui.css">',
                     '<div id="swagger-ui"></div><script src="/docs/assets/swagger-ui-bundle.js"></script>'
                     '<script src="/docs/assets/swagger-init.js"></script>')

    @router.get("/redoc")
    def redoc() -> HTMLResponse:
        return _page(f"{title} - ReDoc", "", '<redoc spec-url="/openapi.json"></redoc>'
                                              '<script src="/docs/assets/redoc.standalone.js"></script>')

    @router.get("/docs/assets/swagger-init.js")
    def swagger_init() -> Response:
        return Response(SWAGGER_INIT, media_type="text/javascript")

    @router.get("/docs/assets/{name}")
    def asset(name: Annotated[str, Path(max_length=64)]) -> FileResponse:
        if name not in ASSETS:
            raise NotFound(f"no documentation asset {name!r}")
        return FileResponse(str(static / name), media_type=ASSETS[name],
                            headers={"Cache-Control": "public, max-age=86400"})

    return router
