"""HTTP semantics every answer shares: HEAD wherever GET is, and the security headers of every response.

``HeadAsGet`` serves HEAD as GET without the body (RFC 9110: same status and headers). ``SecurityHeaders``
adds ``X-Content-Type-Options: nosniff`` to every answer and a restrictive Content-Security-Policy to
HTML and SVG ones: the report and browse pages run no script and load nothing from elsewhere; the API
documentation pages run only their own scripts, served by this server.
"""

from __future__ import annotations

from circat.service.api.access import is_doc_path
from circat.service.api.guards import ASGIApp, Message, Receive, Scope, Send

PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
               "frame-ancestors 'none'; base-uri 'none'")
DOCS_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
               "font-src 'self' data:; connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'")
POLICED = (b"text/html", b"image/svg+xml")


class HeadAsGet:
    """Answer HEAD as the route's GET would, headers only."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class SecurityHeaders:
    """``nosniff`` on every answer; a Content-Security-Policy on HTML and SVG answers."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = (DOCS_POLICY if is_doc_path(scope["path"]) else PAGE_POLICY).encode()

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                media = next((v for k, v in headers if k == b"content-type"), b"")
                if media.startswith(POLICED):
                    headers.append((b"content-security-policy", policy))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
