"""Errors raised by the engine: one base class, domain subclasses.

Every error carries a message that names the problem and, where it helps, the valid
choices. The service maps these classes to HTTP status codes in one table
(``service/errors.py``); the UI maps them to notifications in one place.
"""

from __future__ import annotations

from collections.abc import Iterable


class EOXError(Exception):
    """Base class of every error the engine raises on purpose."""

    def __init__(self, message: str, *, choices: Iterable[str] | None = None) -> None:
        self.choices = sorted({str(c) for c in choices}) if choices is not None else None
        if self.choices:
            shown = ", ".join(self.choices[:40])
            more = f" (and {len(self.choices) - 40} more)" if len(self.choices) > 40 else ""
            message = f"{message}. Valid choices: {shown}{more}"
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(EOXError):
    """A value given by the user is malformed or out of range."""


class NotFound(EOXError):
    """Something named by the user does not exist."""


class CatalogError(EOXError):
    """The catalog could not be read or written."""


class UnknownCollection(NotFound):
    """The named collection is not in the catalog."""


class UnknownProperty(InvalidInput):
    """A query names a property the collection does not have."""


class InvalidQuery(InvalidInput):
    """A query is malformed: bad operator, inverted dates, bbox out of range..."""


class IngestError(EOXError):
    """One or more input files could not be ingested."""


class PlaceNotFound(NotFound):
    """The gazetteer does not know the place."""


class ChainError(InvalidInput):
    """A processing chain is invalid (unknown step, band, colormap...)."""


class DataUnavailable(EOXError):
    """A source file is missing, unreadable or corrupt."""


class StorageUnavailable(DataUnavailable):
    """Remote storage (HTTP, S3) holding a band file failed or refused; names the host."""


class StorageTimeout(StorageUnavailable):
    """Remote storage holding a band file did not answer within the request timeout."""


class BatchStalled(EOXError):
    """A distributed batch run made no progress for its stall timeout; says what the
    workers were doing (paused for memory, executing a block, sandbox unavailable...)."""


class SandboxError(EOXError):
    """A user function was refused or failed in the sandbox.

    ``lineno`` is the line of the user's source at fault when known; ``reason`` the
    message without that location.
    """

    def __init__(self, message: str, *, lineno: int | None = None, reason: str | None = None,
                 choices: Iterable[str] | None = None) -> None:
        super().__init__(message, choices=choices)
        self.lineno = lineno
        self.reason = reason if reason is not None else message


class FunctionRejected(SandboxError):
    """The sandbox's static check refused a user function (before running it)."""


class FunctionFailed(SandboxError):
    """A user function raised an exception or returned an invalid value."""


class SandboxLimitExceeded(SandboxError):
    """A user function hit the time, CPU or memory limit, or crashed its worker."""
