"""An online feature request, resolved against the plan: pure, shared by the SDK and the feature server."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from featurestore.client.request_time import ERROR, Computed, RequestFeatureRunner, request_closure
from featurestore.client.responses import OnlineResponse
from featurestore.errors import FeatureRequestError, one_of
from featurestore.online.reader import ViewRequest, ViewResult
from featurestore.plan import Plan, RequestViewPlan, ViewPlan

AnyView = ViewPlan | RequestViewPlan


def resolve_references(plan: Plan, features: Sequence[str] | None, service: str | None = None) -> list[tuple[AnyView, str]]:
    """(view, feature) for each "view:feature" reference, or for each feature of a named
    service; the view is a FeatureView's plan or a RequestFeatureView's."""
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
    out: list[tuple[AnyView, str]] = []
    views: dict[str, AnyView] = dict(plan.view_refs)
    views |= {v.name: v for v in plan.request_views}
    for ref in features:
        view_name, sep, name = ref.partition(":") if isinstance(ref, str) else ("", "", "")
        if not sep or view_name not in views:
            raise FeatureRequestError(f"unknown feature reference {ref!r}: expected 'view:feature' or "
                                      f"'view@N:feature' with view {one_of(view_name, sorted(views))}")
        if name not in views[view_name].feature_names:
            raise FeatureRequestError(
                f"view '{view_name}' has no feature '{name}': {one_of(name, views[view_name].feature_names)}"
            )
        out.append((views[view_name], name))
    return out


def resolve_features(plan: Plan, features: Sequence[str] | None, service: str | None = None) -> list[tuple[ViewPlan, str]]:
    """(view, feature) for each reference to a stored feature (request-time ones are refused:
    use `resolve_references`)."""
    out = []
    for view, name in resolve_references(plan, features, service):
        if not isinstance(view, ViewPlan):
            raise FeatureRequestError(f"'{view.name}:{name}' is a request-time feature; it cannot be read here")
        out.append((view, name))
    return out


def output_names(resolved: Sequence[tuple[AnyView, str]], full: bool) -> list[str]:
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


@dataclass(frozen=True)
class _Resolution:
    """A request shape resolved: outputs, what to read per view, what to compute."""

    resolved: list[tuple[AnyView, str]]
    names: list[str]
    grouped: dict[str, list[str]]
    """Per stored view: the features to read (the outputs, then the inputs of request-time features)."""
    views: dict[str, ViewPlan]
    computed: list[str]
    """Request-time features to compute, in dependency order (outputs and their inputs)."""
    sources: list[str]
    """Request sources whose fields the rows must carry."""


_resolutions: dict[tuple[int, Any, str | None, bool], tuple[Plan, _Resolution]] = {}


def resolve_query(plan: Plan, features: tuple[str, ...] | None, service: str | None, full: bool) -> _Resolution:
    """Resolved references, result names, what to read per stored view (with the inputs of
    request-time features) and what to compute: the one resolution of online reads and
    training sets, cached per plan and request shape."""
    key = (id(plan), features, service, full)
    hit = _resolutions.get(key)
    if hit is not None and hit[0] is plan:  # the entry holds the plan, so its id is not reused meanwhile
        return hit[1]
    resolved = resolve_references(plan, features, service)
    names = output_names(resolved, full)
    grouped: dict[str, list[str]] = {}
    views: dict[str, ViewPlan] = {}
    asked = [f"{v.name}:{n}" for v, n in resolved if isinstance(v, RequestViewPlan)]
    computed: list[str] = []
    stored_inputs: list[str] = []
    if asked:
        computed, stored_inputs = request_closure(plan, asked)
    stored = [(v, n) for v, n in resolved if isinstance(v, ViewPlan)]
    stored += [(plan.view(r.partition(":")[0]), r.partition(":")[2]) for r in stored_inputs]  # view ids
    for view, name in stored:
        feats = grouped.setdefault(view.name, [])
        if name not in feats:
            feats.append(name)
        views[view.name] = view
    sources = sorted({plan.request_view(r.partition(":")[0]).request_source for r in computed})
    if len(_resolutions) >= 1024:
        _resolutions.clear()
    out = _Resolution(resolved, names, grouped, views, computed, sources)
    _resolutions[key] = (plan, out)
    return out


@dataclass(frozen=True)
class OnlineQuery:
    """A validated request: what to read from which views, what to compute, and how to name the results."""

    resolved: list[tuple[AnyView, str]]
    names: list[str]
    requests: list[ViewRequest]
    entity_rows: Sequence[Mapping[str, Any]]
    computed: list[str] = field(default_factory=list)
    request_rows: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    """Per request source, its fields' columns (validated)."""
    runner: RequestFeatureRunner | None = None

    @property
    def view_names(self) -> list[str]:
        """Every view the answer reveals: stored views read, request-time views computed."""
        return [r.view.name for r in self.requests] + sorted({r.partition(":")[0] for r in self.computed})

    @classmethod
    def build(
        cls,
        plan: Plan,
        features: Sequence[str] | None,
        entity_rows: Sequence[Mapping[str, Any]],
        service: str | None = None,
        full_feature_names: bool = False,
        request_data: Mapping[str, Any] | None = None,
        runner: Callable[[], RequestFeatureRunner | None] | None = None,
    ) -> OnlineQuery:
        """`request_data`: fields of request sources (one value for every row, or a list with
        one per row) for rows that do not carry them; `runner` gives the runner of request-time
        features (asked for only when some are requested: it imports their functions)."""
        res = resolve_query(plan, tuple(features) if features is not None else None, service, full_feature_names)
        requests = [
            ViewRequest(res.views[vn], feats, [entity_key(res.views[vn], row, i) for i, row in enumerate(entity_rows)])
            for vn, feats in res.grouped.items()
        ]
        request_rows = {}
        computer = None
        if res.computed:
            computer = runner() if runner is not None else None
            if computer is None:
                raise FeatureRequestError(f"request-time features ({', '.join(res.computed)}) cannot be computed here")
            request_rows = {s: computer.request_rows(s, entity_rows, request_data) for s in res.sources}
        return cls(res.resolved, res.names, requests, entity_rows, res.computed, request_rows, computer)

    def response(self, results: Sequence[ViewResult], t_ms: int) -> OnlineResponse:
        """Assemble the reader's results and the computed features: join key columns, then one
        column per feature, with statuses."""
        columns: dict[str, list[Any]] = {}
        for view, _ in self.resolved:
            for k in view.join_keys if isinstance(view, ViewPlan) else ():
                if k.name not in columns:
                    columns[k.name] = [row.get(k.name) for row in self.entity_rows]
        by_view = {req.view.name: res for req, res in zip(self.requests, results)}
        computed = self._compute(by_view) if self.computed else {}
        event_ms: dict[str, list[int | None]] = {}
        sources: dict[str, tuple[ViewResult, str]] = {}
        fixed: dict[str, list[str]] = {}
        details: dict[str, list[str | None]] = {}
        none: list[int | None] = [None] * len(self.entity_rows)
        for (view, name), out in zip(self.resolved, self.names):
            if isinstance(view, ViewPlan):
                res = by_view[view.name]
                columns[out] = res.values[name]
                sources[out] = (res, name)
                event_ms[out] = res.event_ms
            else:
                c = computed[f"{view.name}:{name}"]
                columns[out] = c.values
                fixed[out] = [ERROR if e is not None else "null" if v is None else "present" for v, e in zip(c.values, c.errors)]
                event_ms[out] = none
                if any(e is not None for e in c.errors):
                    details[out] = c.errors
        statuses = _Statuses(sources, fixed, self.names)
        return OnlineResponse(columns, statuses, event_ms, t_ms, details)

    def _compute(self, by_view: Mapping[str, ViewResult]) -> dict[str, Computed]:
        assert self.runner is not None
        stored: dict[str, list[Any]] = {}
        for ref in {i.feature for r in self.computed for i in self.runner.features[r][1].inputs if i.feature}:
            ref = self.runner.stored_refs.get(ref, ref)
            view, _, name = ref.partition(":")
            if view in by_view:
                stored[ref] = by_view[view].values[name]
        return self.runner.compute(self.computed, len(self.entity_rows), self.request_rows, stored)


class _Statuses(Mapping[str, list[str]]):
    """Per result column, its statuses: computed when first asked for (most callers only
    read the values)."""

    def __init__(self, sources: dict[str, tuple[ViewResult, str]], fixed: dict[str, list[str]], order: list[str]) -> None:
        self._sources = sources
        self._done: dict[str, list[str]] = dict(fixed)
        self._order = order

    def __getitem__(self, name: str) -> list[str]:
        hit = self._done.get(name)
        if hit is None:
            res, feature = self._sources[name]
            hit = self._done[name] = res.statuses(feature)
        return hit

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)
