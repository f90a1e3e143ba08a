"""API tokens and permissions: only token hashes are stored; deny by default.

A token looks like `fst_<id>_<secret>`. The store keeps its id, name, SHA-256 hash,
permissions and revocation time in a JSON file (written atomically, mode 0600; every
read-modify-write holds an exclusive lock on `<file>.lock`, so concurrent creates and
revocations from any number of processes lose nothing). A
permission grants one action on the views it covers: by name, by tag, or all (`*`).
`admin` grants every action on every view, plus metrics.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from featurestore.errors import ConfigError
from featurestore.files import write_private_file
from featurestore.plan import RequestViewPlan, ViewPlan

Action = Literal["read_online", "read_offline", "apply", "admin"]
ACTIONS: tuple[str, ...] = ("read_online", "read_offline", "apply", "admin")
TOKEN_PREFIX = "fst_"


class Permission(BaseModel):
    """`action` on views named in `views` ("*": every view) or carrying every tag in `tags`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action
    views: list[str] = []
    tags: dict[str, str] = {}

    def covers(self, action: str, view_name: str, view_tags: dict[str, str] | None) -> bool:
        if self.action != "admin" and self.action != action:
            return False
        if self.action == "admin" or "*" in self.views or view_name.partition("@")[0] in self.views:
            return True
        return bool(self.tags) and view_tags is not None and all(view_tags.get(k) == v for k, v in self.tags.items())

    def __str__(self) -> str:
        scope = ["view=" + v if v != "*" else "*" for v in self.views] + [f"tag={k}={v}" for k, v in self.tags.items()]
        return self.action + (":" + ",".join(scope) if scope else "")

    @classmethod
    def parse(cls, text: str) -> Permission:
        """`ACTION[:SCOPE]`, SCOPE one of `*`, `view=NAME`, `tag=KEY=VALUE`; `admin` takes no scope."""
        action, _, scope = text.partition(":")
        if action not in ACTIONS:
            raise ConfigError(f"grant {text!r}: action must be one of {', '.join(ACTIONS)}")
        if action == "admin":
            if scope:
                raise ConfigError(f"grant {text!r}: admin covers everything and takes no scope")
            return cls(action="admin")
        act = cast(Action, action)  # one of ACTIONS, checked above
        if scope == "*":
            return cls(action=act, views=["*"])
        kind, _, rest = scope.partition("=")
        if kind == "view" and rest:
            return cls(action=act, views=[rest])
        key, eq, value = rest.partition("=")
        if kind == "tag" and key and eq:
            return cls(action=act, tags={key: value})
        raise ConfigError(f"grant {text!r}: expected {action}:*, {action}:view=NAME or {action}:tag=KEY=VALUE")


class TokenRecord(BaseModel):
    """What is stored of a token: never the token itself."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    sha256: str
    permissions: list[Permission]
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class _TokenFile(BaseModel):
    tokens: list[TokenRecord] = Field(default_factory=list)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Tokens of one deployment in a JSON file; re-read when the file changes (revocations apply at once)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._records: dict[str, TokenRecord] = {}
        self._stamp: tuple[int, int] | None = None

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the token file's lock (fcntl, shared by every process) for a read-modify-write."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _load(self, fresh: bool = False) -> dict[str, TokenRecord]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._records, self._stamp = {}, None
            return self._records
        stamp = (st.st_mtime_ns, st.st_size)
        if fresh or stamp != self._stamp:
            try:
                data = _TokenFile.model_validate_json(self.path.read_bytes())
            except (ValidationError, ValueError) as exc:
                raise ConfigError(f"corrupt token file {self.path}: {exc}") from None
            self._records, self._stamp = {r.id: r for r in data.tokens}, stamp
        return self._records

    def _save(self, records: dict[str, TokenRecord]) -> None:
        write_private_file(self.path, _TokenFile(tokens=list(records.values())).model_dump_json(indent=2).encode())

    def records(self) -> list[TokenRecord]:
        return list(self._load().values())

    def create(self, name: str, permissions: list[Permission]) -> tuple[str, TokenRecord]:
        """A new token (returned once, in clear) and its stored record."""
        with self._exclusive():
            records = dict(self._load(fresh=True))
            token_id = secrets.token_hex(4)
            while token_id in records:
                token_id = secrets.token_hex(4)
            token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
            record = TokenRecord(
                id=token_id, name=name, sha256=_digest(token), permissions=permissions,
                created_at=dt.datetime.now(dt.timezone.utc),
            )
            records[token_id] = record
            self._save(records)
        return token, record

    def revoke(self, token_id: str) -> TokenRecord:
        """Revoke a token (at once for every server that reads this file)."""
        with self._exclusive():
            records = dict(self._load(fresh=True))
            record = records.get(token_id)
            if record is None:
                raise ConfigError(f"no token with id {token_id!r} in {self.path}")
            if record.active:
                record = record.model_copy(update={"revoked_at": dt.datetime.now(dt.timezone.utc)})
                records[token_id] = record
                self._save(records)
        return record

    def authenticate(self, token: str | None) -> TokenRecord | None:
        """The active record of a presented token, or None (missing, malformed, unknown, wrong or revoked)."""
        if not token or not token.startswith(TOKEN_PREFIX):
            return None
        token_id, sep, _ = token[len(TOKEN_PREFIX):].partition("_")
        record = self._load().get(token_id) if sep else None
        if record is None or not hmac.compare_digest(record.sha256, _digest(token)):
            return None
        return record if record.active else None


def allowed(record: TokenRecord, action: str, view: ViewPlan | RequestViewPlan | None, view_name: str) -> bool:
    """Whether a token may do `action` on a view (an undeclared view: only admins and `*` grants)."""
    tags = view.tags if view is not None else None
    return any(p.covers(action, view_name, tags) for p in record.permissions)


#: The identity of every request when the server runs without authentication.
ANONYMOUS = TokenRecord(
    id="-", name="anonymous (auth disabled)", sha256="", permissions=[Permission(action="admin")],
    created_at=dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc),
)
