"""A registry kept as one JSON file per version in a folder (safe to share read-only)."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict

from featurestore.compile.diff import diff_plans, unversioned_changes
from featurestore.errors import RegistryError, ValidationFailed
from featurestore.plan import PLAN_FORMAT_VERSION, Plan


class RegistryVersion(BaseModel):
    """One applied plan: its number, content hash, time and diff against the previous version."""

    model_config = ConfigDict(frozen=True)

    version: int
    content_hash: str
    applied_at: dt.datetime
    diff: list[str]
    note: str = ""
    plan: Plan


class FileRegistry:
    """Versions stored as `v000001.json`, `v000002.json`, ... Files are written atomically."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def _files(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.glob("v*.json") if p.stem[1:].isdigit())

    def versions(self) -> list[RegistryVersion]:
        return [self._read(p) for p in self._files()]

    def _read(self, path: Path) -> RegistryVersion:
        data = path.read_bytes()
        try:
            found = orjson.loads(data).get("plan", {}).get("format_version")
        except Exception:
            found = None
        if isinstance(found, int) and found != PLAN_FORMAT_VERSION:
            raise RegistryError(f"{path} holds a plan of format {found}; this featurestore reads format "
                                f"{PLAN_FORMAT_VERSION}: " + ("upgrade featurestore" if found > PLAN_FORMAT_VERSION
                                                              else "re-apply the repository with this version"))
        try:
            return RegistryVersion.model_validate_json(data)
        except Exception as exc:
            raise RegistryError(f"corrupt registry file {path}: {exc}") from None

    def latest(self) -> RegistryVersion | None:
        files = self._files()
        return self._read(files[-1]) if files else None

    def get(self, version: int) -> RegistryVersion:
        path = self.path / f"v{version:06d}.json"
        if not path.exists():
            known = ", ".join(str(int(p.stem[1:])) for p in self._files()) or "none"
            raise RegistryError(f"registry {self.path} has no version {version} (versions: {known})")
        return self._read(path)

    def current_plan(self) -> Plan:
        latest = self.latest()
        if latest is None:
            raise RegistryError(f"nothing applied yet in {self.path}: run `featurestore apply` first")
        return latest.plan

    def apply(self, plan: Plan, note: str = "", in_place: bool = False) -> RegistryVersion | None:
        """Record `plan` as a new version; None if it equals the latest version (nothing to do).

        A view version whose values `plan` computes differently is refused (ValidationFailed)
        unless `in_place`: a change of values needs a new version."""
        latest = self.latest()
        if latest is not None and latest.content_hash == plan.content_hash:
            return None
        problems = [] if in_place else unversioned_changes(latest.plan if latest else None, plan)
        if problems:
            raise ValidationFailed(problems)
        number = (latest.version + 1) if latest else 1
        version = RegistryVersion(
            version=number,
            content_hash=plan.content_hash,
            applied_at=dt.datetime.now(dt.timezone.utc),
            diff=diff_plans(latest.plan if latest else None, plan).lines(),
            note=note,
            plan=plan,
        )
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / f"v{number:06d}.json"
        tmp = self.path / f".v{number:06d}.json.{os.getpid()}.tmp"
        tmp.write_bytes(orjson.dumps(version.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
        try:
            os.link(tmp, target)  # fails if another apply took this number meanwhile
        except FileExistsError:
            raise RegistryError(f"another apply wrote version {number} concurrently; run apply again") from None
        finally:
            tmp.unlink(missing_ok=True)
        return version

    def restore(self, version: int) -> RegistryVersion | None:
        """Apply an earlier version's plan again, as a new version."""
        old = self.get(version)
        return self.apply(old.plan, note=f"restored from version {version}", in_place=True)


class PlanWatch:
    """The registry's current plan, read again when a version is applied or restored: a
    running server, SDK or processor follows `apply` and `registry restore` within
    `every_s` seconds (the folder's modification time is checked at most that often)."""

    def __init__(self, registry: FileRegistry, every_s: float = 2.0) -> None:
        self.registry = registry
        self.every_s = every_s
        self._plan: Plan | None = None
        self._stamp: int | None = None
        self._checked = 0.0
        self.version: int | None = None
        """The registry version of the plan held."""

    def _stamp_now(self) -> int | None:
        try:
            return self.registry.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def check_now(self) -> None:
        """Look at the registry on the next `plan()` whatever the time since the last look."""
        self._stamp = None
        self._checked = float("-inf")

    def plan(self) -> Plan:
        """The current plan (raises RegistryError when nothing is applied)."""
        now = time.monotonic()
        if self._plan is None or (self.every_s >= 0 and now - self._checked >= self.every_s):
            self._checked = now
            stamp = self._stamp_now()
            if self._plan is None or stamp != self._stamp:
                latest = self.registry.latest()
                if latest is None:
                    raise RegistryError(f"nothing applied yet in {self.registry.path}: run `featurestore apply` first")
                self._stamp, self.version = stamp, latest.version
                if self._plan is None or latest.plan.content_hash != self._plan.content_hash:
                    self._plan = latest.plan
        assert self._plan is not None
        return self._plan
