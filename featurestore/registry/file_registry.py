"""A registry kept as one JSON file per version in a folder (safe to share read-only)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict

from featurestore.compile.diff import diff_plans
from featurestore.errors import RegistryError
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

    def apply(self, plan: Plan, note: str = "") -> RegistryVersion | None:
        """Record `plan` as a new version; None if it equals the latest version (nothing to do)."""
        latest = self.latest()
        if latest is not None and latest.content_hash == plan.content_hash:
            return None
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
        return self.apply(old.plan, note=f"restored from version {version}")
