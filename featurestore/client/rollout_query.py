"""An online request to a rollout service: each row read through the variant that serves it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from featurestore.client.consistency import value_difference
from featurestore.client.online_query import OnlineQuery
from featurestore.client.request_time import RequestFeatureRunner
from featurestore.client.responses import OnlineResponse
from featurestore.online.reader import ViewRequest, ViewResult
from featurestore.plan import Plan, ServicePlan
from featurestore.plan.rollout import assign, rollout_join_keys

SHADOW = "shadow of the control"
"""The part that reads, for the rows of other variants, what the control would have served."""


@dataclass
class RolloutQuery:
    """Per variant, the rows it serves and the query over them; answers like an OnlineQuery."""

    service: ServicePlan
    parts: list[tuple[str, list[int], OnlineQuery]]
    variants: list[str]
    """The variant of each row."""
    names: list[str]
    mismatches: dict[str, tuple[int, int]] = field(default_factory=dict)
    """After response(), with a mismatch_rate guard: per feature (rows compared with the
    control, rows that differ) over the rows of the other variants."""

    @classmethod
    def build(cls, plan: Plan, service: ServicePlan, entity_rows: Sequence[Mapping[str, Any]], full_feature_names: bool,
              request_data: Mapping[str, Any] | None, runner: Callable[[], RequestFeatureRunner | None] | None) -> RolloutQuery:
        variants = assign(service, rollout_join_keys(plan, service), entity_rows)
        parts = []
        names: list[str] = []
        for name, refs in service.variants.items():
            rows = [i for i, v in enumerate(variants) if v == name]
            data = _rows_of(request_data, rows)
            query = OnlineQuery.build(plan, refs, [entity_rows[i] for i in rows], None, full_feature_names, data, runner)
            names = names or query.names
            if rows:
                parts.append((name, rows, query))
        control = service.control or next(iter(service.variants))
        if not parts:  # no rows: still validate and name the control's features
            parts.append((control, [], OnlineQuery.build(plan, service.variants[control], [], None, full_feature_names,
                                                         request_data, runner)))
        others = [i for i, v in enumerate(variants) if v != control]
        if others and any(g.metric == "mismatch_rate" for g in service.guards):
            parts.append((SHADOW, others, OnlineQuery.build(plan, service.variants[control],
                                                            [entity_rows[i] for i in others], None, full_feature_names,
                                                            _rows_of(request_data, others), runner)))
        return cls(service, parts, variants, names or parts[0][2].names)

    @property
    def requests(self) -> list[ViewRequest]:
        return [r for _, _, q in self.parts for r in q.requests]

    def response(self, results: Sequence[ViewResult], t_ms: int) -> OnlineResponse:
        """Every variant's answer, rows back in the request's order, with the variant of each row."""
        n = len(self.variants)
        columns: dict[str, list[Any]] = {}
        statuses: dict[str, list[str]] = {}
        event_ms: dict[str, list[int | None]] = {}
        details: dict[str, list[str | None]] = {}
        start = 0
        shadow: OnlineResponse | None = None
        for variant, rows, query in self.parts:
            part = query.response(results[start:start + len(query.requests)], t_ms)
            start += len(query.requests)
            if variant == SHADOW:
                shadow = part
                continue
            for name in part.column_names:
                _scatter(columns.setdefault(name, [None] * n), rows, part.column(name))
            for name in part.feature_names:
                _scatter(statuses.setdefault(name, ["not_found"] * n), rows, part.status(name))
                _scatter(event_ms.setdefault(name, [None] * n), rows, part.event_time_ms(name))
                if "error" in part.status(name):
                    _scatter(details.setdefault(name, [None] * n), rows, part.status_detail(name))
        if shadow is not None:
            rows = self.parts[-1][1]
            self.mismatches = {name: (len(rows), sum(value_difference(columns[name][i], c) is not None
                                                     for i, c in zip(rows, shadow.column(name))))
                               for name in shadow.feature_names}
        return OnlineResponse(columns, statuses, event_ms, t_ms, details, variants=self.variants)


def _scatter(target: list[Any], rows: list[int], values: list[Any]) -> None:
    for i, v in zip(rows, values):
        target[i] = v


def _rows_of(request_data: Mapping[str, Any] | None, rows: list[int]) -> Mapping[str, Any] | None:
    """The request data of some rows: a per-row list is cut to them, a single value kept."""
    if request_data is None:
        return None
    return {k: [v[i] for i in rows] if isinstance(v, list) else v for k, v in request_data.items()}


def build_online_query(plan: Plan, features: Sequence[str] | None, entity_rows: Sequence[Mapping[str, Any]],
                       service: str | None = None, full_feature_names: bool = False,
                       request_data: Mapping[str, Any] | None = None,
                       runner: Callable[[], RequestFeatureRunner | None] | None = None) -> OnlineQuery | RolloutQuery:
    """The query of an online request: a RolloutQuery for a rollout service, else an OnlineQuery."""
    svc = next((s for s in plan.services if s.name == service), None) if service is not None else None
    if svc is not None and svc.variants and not features:
        return RolloutQuery.build(plan, svc, entity_rows, full_feature_names, request_data, runner)
    return OnlineQuery.build(plan, features, entity_rows, service, full_feature_names, request_data, runner)
