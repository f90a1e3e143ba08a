"""The one mapping from a failure to the feature server's HTTP answer (status, code, message).

The SDK's HTTP client reads the same statuses back into the library's exceptions
(`featurestore.client.http`); `status_of` is the server's side of that contract.
"""

from __future__ import annotations

import orjson
import redis
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from featurestore.errors import FeatureStoreError


class Refused(FeatureStoreError):
    """A request ends with this HTTP status and message (audited like every other)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.http_status = status


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               413: "too_large", 415: "unsupported_media_type", 422: "invalid"}


def answer_of(exc: BaseException, redis_display: str) -> tuple[int, str, str] | None:
    """(status, code, message) of an expected failure; None for a bug (a 500)."""
    if isinstance(exc, Refused):
        return exc.status, exc.code, exc.message
    if isinstance(exc, (RequestValidationError, ValidationError)):
        errs = exc.errors()
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errs[:3])
        return 422, "invalid_body", message[:2000]
    if isinstance(exc, HTTPException):
        return exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail)
    if isinstance(exc, redis.RedisError):
        return 503, "unavailable", f"online store {redis_display}: {exc}"
    if isinstance(exc, FeatureStoreError):
        return exc.http_status, _HTTP_CODES.get(exc.http_status, "unavailable"), str(exc)
    return None


def error_body(code: str, message: str) -> bytes:
    """The JSON body of every error answer."""
    return orjson.dumps({"error": {"code": code, "message": message}})
