"""Errors the catalogue raises; the API maps each to one problem+json status."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from circat.service.types import ModelShape


class CatalogueError(Exception):
    """Base class of every catalogue error."""


class CircuitInvalid(CatalogueError, ValueError):
    """A circuit was refused; ``problems`` names every offending item."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = "\n  - ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"circuit refused ({len(problems)} problem(s)):\n  - {shown}{more}")


class NotFound(CatalogueError, LookupError):
    """An id or name that the catalogue does not hold."""


class StoreUnavailable(CatalogueError, ConnectionError):
    """The configured store cannot be reached."""


class LimitExceeded(CatalogueError, ValueError):
    """A request or import asks for more than a configured limit allows; nothing was done."""

    def __init__(self, limit: str, value: int, maximum: int, what: str):
        self.limit, self.value, self.maximum = limit, value, maximum
        super().__init__(f"{value:,} {what} is over the limit of {maximum:,} ({limit})")


def shape_conflict(model: str, registered: ModelShape | None, shape: ModelShape) -> str | None:
    """The problem of a circuit of ``model`` whose shape differs from the one it is registered with."""
    if registered is None or registered == shape:
        return None
    return f"model {model!r} is registered with shape {registered}, the circuit says {shape}"


class SchemaMismatch(CatalogueError, RuntimeError):
    """A store or archive was written by a newer version of the schema than this code knows; nothing was written."""

    def __init__(self, what: str, found: object, known: object):
        self.what, self.found, self.known = what, found, known
        super().__init__(f"{what} has schema version {found}, newer than this circat knows ({known}): "
                         f"upgrade circat to open it; nothing was written")
