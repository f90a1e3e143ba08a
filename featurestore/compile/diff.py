"""Diff two plans: what `plan` prints and what every registry version records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from featurestore.aggregations import FUNCTIONS
from featurestore.errors import Problem
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


def _values_basis(plan: Plan, view: ViewPlan) -> dict[str, Any]:
    """Everything that decides a view version's values: its definition but owner, description
    and tags, its source's decoding, and the code behind its event model and transforms."""
    source = plan.source(view.source).model_dump(mode="json", exclude={"description"})
    refs = [source["schema_ref"]] + [f.udf_ref for f in view.row_features if f.udf_ref is not None]
    return {"view": view.values_fingerprint(), "source": source, "code": {r: plan.code.get(r) for r in refs}}


def unversioned_changes(old: Plan | None, new: Plan) -> list[Problem]:
    """Views kept at the same version whose values `new` computes differently: each needs a
    new version (or an in-place apply)."""
    problems: list[Problem] = []
    if old is None:
        return problems
    before = {v.name: v for v in old.views}
    for view in new.views:
        was = before.get(view.name)
        if was is None:
            continue
        a, b = _values_basis(old, was), _values_basis(new, view)
        for ref, h in a["code"].items():  # a hash of an older format cannot be compared: not a change
            if h is not None and b["code"].get(ref) is not None and h.partition(":")[0] != b["code"][ref].partition(":")[0]:
                a["code"][ref] = b["code"][ref]
        if a == b:
            continue
        details = _detail_changes(a["view"], b["view"]) + _detail_changes(a["source"], b["source"], "source.")
        details += [f"code of {r} changed" for r in sorted(b["code"]) if a["code"].get(r) != b["code"][r]]
        shown = "; ".join(details[:3]) + (f"; and {len(details) - 3} more" if len(details) > 3 else "")
        nxt = max(v.version for v in new.versions(view.base_name)) + 1
        problems.append(Problem(
            "plan", f"FeatureView '{view.base_name}' version {view.version}",
            f"computes its values differently ({shown}) but keeps version {view.version}",
            f"give the new definition version={nxt} to run it beside version {view.version} (docs/changing-features.md), "
            f"or apply with --in-place to change version {view.version} where it stands (its online state and "
            "history stay as they were: run `featurestore rebuild-online` after)"))
    return problems


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
