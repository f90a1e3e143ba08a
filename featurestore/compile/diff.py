"""Diff two plans: what `plan` prints and what every registry version records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from featurestore.plan import Plan


@dataclass(frozen=True)
class Change:
    """One object added, removed or changed, with the changed attributes."""

    kind: str  # "Entity", "KafkaSource", "FeatureView", "FeatureService"
    name: str
    action: str  # "add", "remove", "change"
    details: tuple[str, ...] = ()

    def __str__(self) -> str:
        sign = {"add": "+", "remove": "-", "change": "~"}[self.action]
        head = f"{sign} {self.kind} {self.name}"
        return head + "".join(f"\n    {d}" for d in self.details)


@dataclass(frozen=True)
class PlanDiff:
    changes: tuple[Change, ...] = field(default_factory=tuple)

    @property
    def empty(self) -> bool:
        return not self.changes

    def lines(self) -> list[str]:
        return [str(c) for c in self.changes]


def _detail_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        path = f"{prefix}{key}"
        if isinstance(a, list) and isinstance(b, list) and all(isinstance(x, dict) and "name" in x for x in a + b):
            olds = {x["name"]: x for x in a}
            news = {x["name"]: x for x in b}
            for name in sorted(set(olds) | set(news)):
                if name not in olds:
                    out.append(f"+ {path} {name}")
                elif name not in news:
                    out.append(f"- {path} {name}")
                elif olds[name] != news[name]:
                    out.extend(_detail_changes(olds[name], news[name], f"{path}[{name}]."))
        elif isinstance(a, dict) and isinstance(b, dict):
            out.extend(_detail_changes(a, b, f"{path}."))
        else:
            out.append(f"~ {path}: {a!r} -> {b!r}")
    return out


def diff_plans(old: Plan | None, new: Plan) -> PlanDiff:
    """Changes that turn `old` (None: nothing applied) into `new`."""
    changes: list[Change] = []
    for kind, attr in (("Entity", "entities"), ("KafkaSource", "sources"), ("FeatureView", "views"), ("FeatureService", "services")):
        before = {o.name: o.model_dump(mode="json") for o in getattr(old, attr, [])} if old else {}
        after = {o.name: o.model_dump(mode="json") for o in getattr(new, attr)}
        for name in sorted(set(before) | set(after)):
            if name not in before:
                changes.append(Change(kind, name, "add"))
            elif name not in after:
                changes.append(Change(kind, name, "remove"))
            elif before[name] != after[name]:
                changes.append(Change(kind, name, "change", tuple(_detail_changes(before[name], after[name]))))
    return PlanDiff(tuple(changes))
