"""Diff two plans: what `plan` prints and what every registry version records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from featurestore.aggregations import FUNCTIONS
from featurestore.plan import Plan, RequestViewPlan, ViewPlan


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
    kinds = (("Entity", "entities"), ("KafkaSource", "sources"), ("RequestSource", "request_sources"),
             ("FeatureView", "views"), ("RequestFeatureView", "request_views"), ("FeatureService", "services"))
    for kind, attr in kinds:
        before = {o.name: o.model_dump(mode="json") for o in getattr(old, attr, [])} if old else {}
        after = {o.name: o.model_dump(mode="json") for o in getattr(new, attr)}
        for name in sorted(set(before) | set(after)):
            if name not in before:
                lines = (_features(new.view(name)) if kind == "FeatureView"
                         else _request_features(new.request_view(name)) if kind == "RequestFeatureView" else [])
                changes.append(Change(kind, name, "add", tuple(lines)))
            elif name not in after:
                changes.append(Change(kind, name, "remove"))
            elif before[name] != after[name]:
                changes.append(Change(kind, name, "change", tuple(_detail_changes(before[name], after[name]))))
    before_code = old.code if old else {}
    for ref in sorted(set(before_code) & set(new.code)):
        if before_code[ref] != new.code[ref]:
            changes.append(Change("Code", ref, "change", (f"source changed ({before_code[ref][:12]} -> {new.code[ref][:12]})",)))
    return PlanDiff(tuple(changes))


def _features(view: ViewPlan) -> list[str]:
    """One line per feature a new view generates: name, type, what it computes."""
    lines: list[tuple[str, str, str]] = []
    for f in view.row_features:
        what = f"field {f.column}" if f.kind == "field" else f"transform {f.udf_ref}"
        lines.append((f.name, f.dtype, what))
    for a in view.aggregations:
        result = FUNCTIONS[a.function].result_dtype(a.dtype)
        where = f" where {a.where}" if a.where else ""
        k = f" (k={a.k})" if a.k else ""
        lines.append((a.name, f"list[{a.dtype}]" if result == "list" else result,
                      f"{a.function}{k} of {a.column}{where} over {_window(a.window_ms)}"))
    width = max((len(n) for n, _, _ in lines), default=0)
    return [f"{n.ljust(width)}  {t.ljust(9)}  {w}" for n, t, w in lines]


def _request_features(view: RequestViewPlan) -> list[str]:
    """One line per request-time feature: name, type, the function and what it reads."""
    lines = [(f.name, f.dtype, f"{f.udf_ref}({', '.join(i.feature or f'request.{i.field}' for i in f.inputs)})")
             for f in view.features]
    width = max((len(n) for n, _, _ in lines), default=0)
    return [f"{n.ljust(width)}  {t.ljust(9)}  {w}" for n, t, w in lines]


def _window(ms: int | None) -> str:
    if ms is None:
        return "all time"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms} ms"
