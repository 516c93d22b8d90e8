"""Errors -> HTTP: ONE table from exception class to status, and the JSON error body.

Every error response is JSON ``{"detail": message, "type": class name, "choices": [...]}``
(``choices`` only when the error lists valid values). The table is looked up along the
exception's MRO, so a subclass not listed gets its closest listed base's status.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette import status
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from engine import errors as eox
from engine.security.redact import redact_text

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of the errors raised by the service layer itself."""

    def __init__(self, message: str, *, choices: Iterable[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.choices = list(choices) if choices is not None else None


class BodyTooLarge(ServiceError):
    """The request body is larger than ``max_body_bytes``."""


class Unauthorized(ServiceError):
    """A write endpoint was called without an API key (see ``service.security``)."""


class Forbidden(ServiceError):
    """The API key given is not one of the deployment's keys."""


class RateLimited(ServiceError):
    """The client used up its request budget; ``retry_after`` says when to come back."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: The one exception -> status table (cf. titiler's DEFAULT_STATUS_CODES).
STATUS_CODES: dict[type[Exception], int] = {
    eox.EOXError: status.HTTP_500_INTERNAL_SERVER_ERROR,  # only for a subclass added later
    eox.InvalidInput: status.HTTP_400_BAD_REQUEST,  # e.g. a tile outside the z/x/y grid
    eox.InvalidQuery: status.HTTP_400_BAD_REQUEST,
    eox.UnknownProperty: status.HTTP_400_BAD_REQUEST,
    eox.ChainError: status.HTTP_422_UNPROCESSABLE_CONTENT,
    eox.NotFound: status.HTTP_404_NOT_FOUND,
    eox.UnknownCollection: status.HTTP_404_NOT_FOUND,
    eox.PlaceNotFound: status.HTTP_404_NOT_FOUND,
    eox.IngestError: status.HTTP_422_UNPROCESSABLE_CONTENT,
    # User code is the cause: refused by the static check, raised, or hit a limit.
    eox.SandboxError: status.HTTP_422_UNPROCESSABLE_CONTENT,
    eox.FunctionRejected: status.HTTP_422_UNPROCESSABLE_CONTENT,
    eox.FunctionFailed: status.HTTP_422_UNPROCESSABLE_CONTENT,
    eox.SandboxLimitExceeded: status.HTTP_422_UNPROCESSABLE_CONTENT,
    # A source file registered in the catalog vanished or is corrupt: the request is fine,
    # a resource it depends on failed.
    eox.DataUnavailable: status.HTTP_424_FAILED_DEPENDENCY,
    # Object storage behind the catalog's https:// / s3:// hrefs failed: a gateway error.
    eox.StorageUnavailable: status.HTTP_502_BAD_GATEWAY,
    eox.StorageTimeout: status.HTTP_504_GATEWAY_TIMEOUT,
    eox.CatalogError: status.HTTP_503_SERVICE_UNAVAILABLE,
    eox.BatchStalled: status.HTTP_503_SERVICE_UNAVAILABLE,  # the Dask cluster, not the request
    NotImplementedError: status.HTTP_501_NOT_IMPLEMENTED,  # e.g. writing a read-only catalog
    BodyTooLarge: status.HTTP_413_CONTENT_TOO_LARGE,
    Unauthorized: status.HTTP_401_UNAUTHORIZED,
    Forbidden: status.HTTP_403_FORBIDDEN,
    RateLimited: status.HTTP_429_TOO_MANY_REQUESTS,
    RequestValidationError: status.HTTP_422_UNPROCESSABLE_CONTENT,
}


def status_for(exc: BaseException, table: Mapping[type[Exception], int] = STATUS_CODES) -> int:
    """The status of ``exc``: its own class or its nearest listed base; 500 otherwise."""
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return status.HTTP_500_INTERNAL_SERVER_ERROR


def error_body(message: str, type_: str, choices: Iterable[Any] | None = None) -> dict:
    """The JSON body shared by every error response."""
    body: dict[str, Any] = {"detail": message, "type": type_}
    if choices:
        body["choices"] = [str(c) for c in choices]
    return body


def error_response(exc: BaseException, status_code: int | None = None) -> JSONResponse:
    """A JSON response for an engine or service error."""
    code = status_code if status_code is not None else status_for(exc)
    if code >= 500:
        log.error("%s mapped to HTTP %s", type(exc).__name__, code, exc_info=exc)
    message = redact_text(getattr(exc, "message", None) or str(exc) or type(exc).__name__)
    return JSONResponse(
        error_body(message, type(exc).__name__, getattr(exc, "choices", None)),
        status_code=code,
    )


def _validation_message(exc: RequestValidationError) -> tuple[str, list[str]]:
    """One readable line per bad field ("query.tilesize: Input should be 256 or 512") and
    the valid choices when pydantic knows them (enums, literals)."""
    lines: list[str] = []
    choices: list[str] = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        lines.append(f"{where}: {err.get('msg', 'invalid value')}")
        expected = (err.get("ctx") or {}).get("expected")
        if isinstance(expected, str):
            for part in expected.replace(" or ", ", ").split(","):
                part = part.strip().strip("'\"")
                if part and part not in choices:
                    choices.append(part)
    return "; ".join(lines) or "invalid request", choices


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, choices = _validation_message(exc)
    return JSONResponse(
        error_body(message, "RequestValidationError", choices),
        status_code=STATUS_CODES[RequestValidationError],
    )


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        error_body(str(exc.detail), "HTTPException"),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _mapped_handler(request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc)


def add_exception_handlers(app: FastAPI) -> None:
    """Register the JSON handlers for every class of the table and for HTTP errors."""
    for cls in STATUS_CODES:
        if cls is not RequestValidationError:
            app.add_exception_handler(cls, _mapped_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
