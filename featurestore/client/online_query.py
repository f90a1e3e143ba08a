"""An online feature request, resolved against the plan: pure, shared by the SDK and the feature server."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from featurestore.client.responses import OnlineResponse
from featurestore.errors import FeatureRequestError, one_of
from featurestore.online.reader import ViewRequest, ViewResult
from featurestore.plan import Plan, ViewPlan


def resolve_features(plan: Plan, features: Sequence[str] | None, service: str | None = None) -> list[tuple[ViewPlan, str]]:
    """(view, feature) for each "view:feature" reference, or for each feature of a named service."""
    if service is not None:
        if features:
            raise FeatureRequestError("pass either features or service, not both")
        try:
            features = plan.service(service).features
        except KeyError:
            raise FeatureRequestError(f"unknown feature service {service!r}: "
                                      f"{one_of(service, [s.name for s in plan.services])}") from None
    if isinstance(features, str) or not features:
        raise FeatureRequestError('features must be a non-empty list of "view:feature" references (or pass service=)')
    out = []
    views = {v.name: v for v in plan.views}
    for ref in features:
        view_name, sep, name = ref.partition(":") if isinstance(ref, str) else ("", "", "")
        if not sep or view_name not in views:
            raise FeatureRequestError(f"unknown feature reference {ref!r}: expected 'view:feature' with view "
                                      f"{one_of(view_name, sorted(views))}")
        if name not in views[view_name].feature_names:
            raise FeatureRequestError(
                f"view '{view_name}' has no feature '{name}': {one_of(name, views[view_name].feature_names)}"
            )
        out.append((views[view_name], name))
    return out


def output_names(resolved: list[tuple[ViewPlan, str]], full: bool) -> list[str]:
    """Result column names: `feature`, or `view__feature` with full names; ambiguity is an error."""
    names = [f"{v.name}__{n}" if full else n for v, n in resolved]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise FeatureRequestError(f"feature names {sorted(dupes)} are ambiguous across views; pass full_feature_names=True")
    return names


def entity_key(view: ViewPlan, row: Mapping[str, Any], index: int) -> tuple[Any, ...]:
    """The join key tuple of one entity row for a view, type-checked."""
    key = []
    for spec in view.join_keys:
        if spec.name not in row:
            raise FeatureRequestError(f"entity row {index} lacks join key '{spec.name}' needed by view '{view.name}'")
        value = row[spec.name]
        if type(value) is (str if spec.dtype == "str" else int):  # the common case, checked first
            key.append(value)
            continue
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):
            value = value.item()  # numpy scalars
        ok = isinstance(value, str) if spec.dtype == "str" else isinstance(value, int) and not isinstance(value, bool)
        if not ok:
            raise FeatureRequestError(
                f"entity row {index}: join key '{spec.name}' must be {spec.dtype}, got {type(value).__name__} {value!r}"
            )
        key.append(value)
    return tuple(key)


_Resolution = tuple[list[tuple[ViewPlan, str]], list[str], dict[str, list[str]], dict[str, ViewPlan]]
_resolutions: dict[tuple[int, Any, str | None, bool], tuple[Plan, _Resolution]] = {}


def _resolution(plan: Plan, features: tuple[str, ...] | None, service: str | None, full: bool) -> _Resolution:
    """Resolved references, result names and per-view grouping; cached per plan and request shape."""
    key = (id(plan), features, service, full)
    hit = _resolutions.get(key)
    if hit is not None and hit[0] is plan:  # the entry holds the plan, so its id is not reused meanwhile
        return hit[1]
    resolved = resolve_features(plan, features, service)
    names = output_names(resolved, full)
    grouped: dict[str, list[str]] = {}
    views: dict[str, ViewPlan] = {}
    for view, name in resolved:
        grouped.setdefault(view.name, []).append(name)
        views[view.name] = view
    if len(_resolutions) >= 1024:
        _resolutions.clear()
    _resolutions[key] = (plan, (resolved, names, grouped, views))
    return resolved, names, grouped, views


@dataclass(frozen=True)
class OnlineQuery:
    """A validated request: what to read from which views, and how to name the results."""

    resolved: list[tuple[ViewPlan, str]]
    names: list[str]
    requests: list[ViewRequest]
    entity_rows: Sequence[Mapping[str, Any]]

    @property
    def view_names(self) -> list[str]:
        return [r.view.name for r in self.requests]

    @classmethod
    def build(
        cls,
        plan: Plan,
        features: Sequence[str] | None,
        entity_rows: Sequence[Mapping[str, Any]],
        service: str | None = None,
        full_feature_names: bool = False,
    ) -> OnlineQuery:
        resolved, names, grouped, views = _resolution(plan, tuple(features) if features is not None else None, service,
                                                      full_feature_names)
        requests = [
            ViewRequest(views[vn], feats, [entity_key(views[vn], row, i) for i, row in enumerate(entity_rows)])
            for vn, feats in grouped.items()
        ]
        return cls(resolved, names, requests, entity_rows)

    def response(self, results: Sequence[ViewResult], t_ms: int) -> OnlineResponse:
        """Assemble the reader's results: join key columns, then one column per feature, with statuses."""
        columns: dict[str, list[Any]] = {}
        for view, _ in self.resolved:
            for k in view.join_keys:
                if k.name not in columns:
                    columns[k.name] = [row.get(k.name) for row in self.entity_rows]
        by_view = {req.view.name: res for req, res in zip(self.requests, results)}
        event_ms: dict[str, list[int | None]] = {}
        sources: dict[str, tuple[ViewResult, str]] = {}
        for (view, name), out in zip(self.resolved, self.names):
            res = by_view[view.name]
            columns[out] = res.values[name]
            sources[out] = (res, name)
            event_ms[out] = res.event_ms
        statuses = _Statuses(sources)
        return OnlineResponse(columns, statuses, event_ms, t_ms)



class _Statuses(Mapping[str, list[str]]):
    """Per result column, its statuses: computed when first asked for (most callers only
    read the values)."""

    def __init__(self, sources: dict[str, tuple[ViewResult, str]]) -> None:
        self._sources = sources
        self._done: dict[str, list[str]] = {}

    def __getitem__(self, name: str) -> list[str]:
        hit = self._done.get(name)
        if hit is None:
            res, feature = self._sources[name]
            hit = self._done[name] = res.statuses(feature)
        return hit

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)
