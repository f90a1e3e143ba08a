"""Exceptions raised by the feature store.

Every error the library raises on purpose derives from one root::

    FeatureStoreError
    ├── ValidationFailed         compiling a repo found problems (all of them, in .problems)
    ├── RegistryError            nothing applied yet, unknown version, corrupt registry
    ├── ConfigError              invalid settings (file, environment or arguments)
    ├── FeatureRequestError      bad feature reference, missing join key, bad entity frame
    ├── ServiceError             an embedded service (broker, Redis) failed to start
    ├── StoreUnavailable         Kafka, Redis, the offline folder or the feature server cannot be reached
    ├── OnlineLayoutError        Redis holds online state of another storage layout (rebuild it)
    └── AuthError                the feature server refused the token (401) or the permission (403)

Definitions themselves never raise: `compile` reports every problem of a repository at once
(`ValidationFailed`). Errors carry their context on attributes so callers and the CLI can print one clear
line without a traceback. Each class says which HTTP status the feature server answers it
with (`http_status`), and `error_of_status` turns a status back into the class: the one
mapping the server and the SDK's HTTP client share.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


class FeatureStoreError(Exception):
    """Root of every error raised by featurestore on purpose."""

    http_status = 503
    """The feature server's answer to it (a failure of something it depends on, by default)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a feature repository, with where it is and how to fix it."""

    file: str
    obj: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{self.file}: {self.obj}: {self.message}.{fix}"


class ValidationFailed(FeatureStoreError):
    """Compiling a feature repository found one or more problems."""

    http_status = 422

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the feature repository:\n{lines}")


class RegistryError(FeatureStoreError):
    """The registry has no applied version, or the requested version does not exist."""


class ConfigError(FeatureStoreError):
    """Settings are invalid."""


class FeatureRequestError(FeatureStoreError, ValueError):
    """A feature request is malformed: unknown reference, missing join key, bad entity rows."""

    http_status = 400


class ServiceError(FeatureStoreError):
    """An embedded service could not be started or stopped."""


class StoreUnavailable(FeatureStoreError):
    """Kafka, Redis or the offline store could not be reached."""

    def __init__(self, message: str, *, service: str | None = None, address: str | None = None) -> None:
        super().__init__(message)
        self.service = service
        """"Kafka" or "Redis" when the error is that one of them does not answer."""
        self.address = address
        """Where it was looked for (credentials hidden)."""


_SETTING_OF = {"Kafka": "FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS", "Redis": "FEATURESTORE_REDIS_URL"}


def unreachable(service: str, address: str, reason: object) -> StoreUnavailable:
    """The error for Kafka or Redis not answering at `address`: where, why, and what changes it."""
    return StoreUnavailable(
        f"{service} at {address} is unreachable: {str(reason).rstrip('.')}. Set {_SETTING_OF[service]} (or featurestore.yaml) to "
        f"where it runs, or start local services with `eval \"$(featurestore dev --detach)\"`",
        service=service, address=address,
    )


class OnlineLayoutError(FeatureStoreError):
    """An entity's online state was written in another storage layout than this version
    reads and writes: `featurestore rebuild-online` rewrites it from the history."""


class AuthError(FeatureStoreError):
    """The feature server refused a request: no valid token (401) or no permission (403)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.http_status = status


def error_of_status(status: int, message: str) -> FeatureStoreError:
    """The exception for an HTTP error status of the feature server (the inverse of
    `http_status`): 401/403 AuthError, other 4xx FeatureRequestError, else StoreUnavailable."""
    if status in (401, 403):
        return AuthError(message, status)
    if 400 <= status < 500:
        return FeatureRequestError(message)
    return StoreUnavailable(message)


def one_of(given: str, choices: Iterable[str], lead: str = "") -> str:
    """`lead` + "one of: a, b, c", as "did you mean 'x'? (...)" when a choice is close to `given`."""
    options = list(choices)
    close = difflib.get_close_matches(given, options, n=1, cutoff=0.6)
    listed = f"{lead}one of: {', '.join(options)}" if options else "none is defined"
    return f"did you mean '{close[0]}'? ({listed})" if close else listed
