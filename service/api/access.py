"""Who may do what: the bearer key checked from the headers before a request's body is read.

Reads are GET and HEAD; every other method is a write. With ``CIRCAT_API_KEY`` set, writes need it;
with only ``CIRCAT_READ_KEY`` set, writes need the read key (a private catalogue is never writable
without a key); with ``CIRCAT_READ_KEY`` set, reads need it or the API key, the documentation pages
included unless ``CIRCAT_PUBLIC_DOCS=1``. A request without the key its method needs is answered 401
at once, its body never read: an unauthenticated request costs the server nothing.
"""

from __future__ import annotations

import hmac

from circat.service.api.guards import ASGIApp, Receive, Scope, Send
from circat.service.api.problems import problem
from circat.service.config import Settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DOC_PATHS = ("/docs", "/redoc", "/openapi.json")


def bearer_token(scope: Scope) -> bytes | None:
    """The token of the first ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            return token if scheme.lower() == b"bearer" and token else None
    return None


def key_matches(given: bytes | None, keys: tuple[str, ...]) -> bool:
    """Constant-time comparison of ``given`` with each configured key."""
    return given is not None and any(hmac.compare_digest(given, k.encode()) for k in keys)


def is_doc_path(path: str) -> bool:
    """The documentation pages, their assets and the OpenAPI document."""
    return path in DOC_PATHS or path.startswith("/docs/")


class KeyGuard:
    """Answer 401 to a request without the key its method needs, before anything reads its body."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.write_keys, self.read_keys = settings.write_keys, settings.read_keys
        self.public_docs = settings.public_docs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            write = scope["method"] not in READ_METHODS
            keys = self.write_keys if write else self.read_keys
            if keys and not (not write and self.public_docs and is_doc_path(scope["path"])) \
                    and not key_matches(bearer_token(scope), keys):
                detail = f"{'writes' if write else 'reads'} need 'Authorization: Bearer <key>'"
                await problem(401, "Unauthorized", detail)(scope, receive, send)
                return
        await self.app(scope, receive, send)
