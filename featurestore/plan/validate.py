"""Check a plan as data: every rule `compile` enforces, for plans that arrive as JSON.

`compile` builds plans from Python definitions and reports problems with their source
files; a plan received over HTTP (or read from a registry file) has no source, so it is
checked here against the same rules. `compile` runs this check on what it builds too, so
the two can never disagree: whatever `compile` emits passes, and what fails here could
never have come out of `compile`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from featurestore.aggregations import FUNCTIONS
from featurestore.errors import Problem
from featurestore.plan.models import PLAN_FORMAT_VERSION, AggregationPlan, Plan, ServicePlan, ViewPlan
from featurestore.plan.rollout import rollout_problem
from featurestore.plan.windows import LIFETIME_TILE_MS, choose_tile_ms

NUMERIC_TYPES = frozenset({"int", "float", "bool"})
"""Column types numeric aggregations accept."""
NEEDS_NUMERIC = frozenset(name for name, f in FUNCTIONS.items() if f.numeric_input)
"""Aggregations that need a numeric column."""
KEY_TYPES = frozenset({"int", "str"})
"""Types a join key may have."""
MAX_LAST_N = 1000
"""Largest k of last_n."""

_WHERE = "plan"
_Reporter = Callable[..., None]


def code_refs(plan: Plan) -> set[str]:
    """Every import path a plan names (event models and transforms): the code it runs."""
    refs = {s.schema_ref for s in plan.sources}
    refs |= {f.udf_ref for v in plan.views for f in v.row_features if f.udf_ref is not None}
    refs |= {s.schema_ref for s in plan.request_sources}
    refs |= {f.udf_ref for v in plan.request_views for f in v.features}
    return refs


def request_feature_order(plan: Plan) -> list[str] | None:
    """Every request-time feature ("view:feature") after the request-time features it reads;
    None when they read each other in a cycle."""
    deps = {f"{v.name}:{f.name}": [i.feature for i in f.inputs if i.feature is not None]
            for v in plan.request_views for f in v.features}
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the path, 2: placed

    def visit(ref: str) -> bool:
        if state.get(ref) == 2:
            return True
        if state.get(ref) == 1:
            return False
        state[ref] = 1
        if not all(visit(d) for d in deps[ref] if d in deps):
            return False
        state[ref] = 2
        order.append(ref)
        return True

    return order if all(visit(ref) for ref in deps) else None


def validate_plan(plan: Plan) -> list[Problem]:
    """Every problem of a plan (empty: valid)."""
    problems: list[Problem] = []

    def bad(label: str, message: str, fix: str = "") -> None:
        problems.append(Problem(_WHERE, label, message, fix))

    if plan.format_version != PLAN_FORMAT_VERSION:
        bad("plan", f"format_version {plan.format_version} is not {PLAN_FORMAT_VERSION}", "compile the repo with this version")
    for kind, names in (("Entity", [e.name for e in plan.entities]), ("KafkaSource", [s.name for s in plan.sources]),
                        ("FeatureView", [v.name for v in plan.views] + [v.name for v in plan.request_views]),
                        ("FeatureService", [s.name for s in plan.services]),
                        ("RequestSource", [s.name for s in plan.request_sources])):
        for name in _repeated(names):
            bad(f"{kind} '{name}'", f"duplicate {kind} name", f"give each {kind} its own name")
    entities = {e.name: e for e in plan.entities}
    sources = {s.name: s for s in plan.sources}
    for source in plan.sources:
        if source.fields.get(source.timestamp_field) != "datetime":
            bad(f"KafkaSource '{source.name}'", f"timestamp_field '{source.timestamp_field}' is not a datetime field of the event")
    key_types: dict[tuple[str, str], str] = {}
    for view in plan.views:
        label = f"FeatureView '{view.name}'"
        src = sources.get(view.source)
        if src is None:
            bad(label, f"unknown source '{view.source}'", "declare the source in the same plan")
            continue
        expected: list[str] = []
        for ent in view.entities:
            if ent not in entities:
                bad(label, f"unknown entity '{ent}'", "declare the entity in the same plan")
            else:
                expected.extend(entities[ent].join_keys)
                for key in entities[ent].join_keys:
                    dtype = src.fields.get(key)
                    seen = key_types.setdefault((ent, key), dtype or "")
                    if dtype is not None and seen != dtype:
                        bad(label, f"join key '{key}' of entity '{ent}' is {dtype} here but {seen} in another source")
        if not view.entities:
            bad(label, "no entities")
        if [k.name for k in view.join_keys] != expected:
            bad(label, f"join_keys {[k.name for k in view.join_keys]} are not the keys of its entities {expected}")
        for spec in view.join_keys:
            if spec.dtype not in KEY_TYPES or src.fields.get(spec.name) != spec.dtype:
                bad(label, f"join key '{spec.name}' ({spec.dtype}) is not an int or str field of the event")
        if view.ttl_ms is not None and view.ttl_ms <= 0:
            bad(label, "ttl_ms must be positive")
        _check_features(view, src.fields, bad)
    stray = sorted(set(plan.code) - code_refs(plan))
    if stray:
        bad("plan", f"code hashes for import paths the plan does not name: {', '.join(stray)}")
    for name, version in plan.serving.items():
        if len(plan.versions(name)) < 2 or not any(v.version == version for v in plan.versions(name)):
            bad(f"FeatureView '{name}'", f"serving version {version} is not one of several live versions of the view")
    for name in sorted({v.base_name for v in plan.views} & {v.name for v in plan.request_views}):
        bad(f"FeatureView '{name}'", "a stored view and a request-time view share this name")
    features = {part: set(v.feature_names) for part, v in plan.view_refs.items()}
    _check_request_views(plan, features, bad)
    features |= {v.name: set(v.feature_names) for v in plan.request_views}
    for svc in plan.services:
        _check_service(svc, features, bad)
    return problems


def _check_service(svc: ServicePlan, features: Mapping[str, set[str]], bad: _Reporter) -> None:
    label = f"FeatureService '{svc.name}'"
    for name, refs in [("", svc.features), *((f" variant '{v}'", r) for v, r in svc.variants.items())]:
        if not refs:
            bad(label + name, "no features")
        for ref in refs:
            view_name, _, feature = ref.partition(":")
            if feature not in features.get(view_name, ()):
                bad(label + name, f"feature reference '{ref}' names no feature of the plan")
        for ref in _repeated(refs):
            bad(label + name, f"feature '{ref}' listed twice")
    names = [r.partition(":")[2] for r in svc.features]
    for guard in svc.guards:
        if not svc.variants:
            bad(label, "guards without variants")
        elif guard.feature is not None and guard.feature not in names:
            bad(label, f"guard names feature '{guard.feature}', not one of the service's")
    if svc.variants or svc.split:
        problem = rollout_problem(svc.variants, svc.split)
        if problem:
            bad(label, problem[0], problem[1])
        elif svc.features != svc.variants[svc.control or ""]:
            bad(label, "features are not the control variant's")


def _check_request_views(plan: Plan, stored: dict[str, set[str]], bad: _Reporter) -> None:
    """Request views: a known request source, inputs that exist, no cycle."""
    sources = {s.name: s for s in plan.request_sources}
    computed = {v.name: set(v.feature_names) for v in plan.request_views}
    for view in plan.request_views:
        label = f"RequestFeatureView '{view.name}'"
        src = sources.get(view.request_source)
        if src is None:
            bad(label, f"unknown request source '{view.request_source}'", "declare the RequestSource in the same plan")
            continue
        if not view.features:
            bad(label, "no features")
        for name in _repeated(view.feature_names):
            bad(f"{label}, feature '{name}'", "duplicate feature name")
        for f in view.features:
            where = f"{label}, feature '{f.name}'"
            for name in _repeated(i.param for i in f.inputs):
                bad(where, f"parameter '{name}' is bound twice")
            for i in f.inputs:
                if (i.field is None) == (i.feature is None):
                    bad(where, f"parameter '{i.param}' must receive exactly one request field or feature")
                elif i.field is not None and i.field not in src.fields:
                    bad(where, f"parameter '{i.param}' reads '{i.field}', not a field of request source '{src.name}'")
                elif i.feature is not None:
                    v, _, name = i.feature.partition(":")
                    if name not in stored.get(v, computed.get(v, set())):
                        bad(where, f"parameter '{i.param}' reads '{i.feature}', which names no feature of the plan")
    if request_feature_order(plan) is None:
        bad("RequestFeatureView", "request-time features read each other in a cycle", "break the cycle")


def _check_features(view: ViewPlan, fields: Mapping[str, str], bad: _Reporter) -> None:
    label = f"FeatureView '{view.name}'"
    if not view.row_features and not view.aggregations:
        bad(label, "no features")
    derived: dict[str, str] = {}
    renamed: dict[str, str] = {}
    for f in view.row_features:
        where = f"{label}, feature '{f.name}'"
        if f.kind == "field":
            if f.column is None or f.udf_ref is not None:
                bad(where, "a field feature has a column and no udf_ref")
            elif fields.get(f.column) != f.dtype:
                bad(where, f"column '{f.column}' is not a {f.dtype} field of the event")
            elif f.column != f.name:
                renamed[f.name] = f.column
        else:
            if f.udf_ref is None or f.column is not None:
                bad(where, "a transform has a udf_ref and no column")
            derived[f.name] = f.dtype
    for agg in view.aggregations:
        _check_aggregation(view, agg, fields, derived, renamed, bad)
    names = [k.name for k in view.join_keys] + view.feature_names
    for name in _repeated(names):
        bad(f"{label}, feature '{name}'", "duplicate feature name (or same as a join key)")


def _check_aggregation(view: ViewPlan, agg: AggregationPlan, fields: Mapping[str, str], derived: dict[str, str],
                       renamed: dict[str, str], bad: _Reporter) -> None:
    where = f"FeatureView '{view.name}', aggregation '{agg.name}'"
    dtype = derived.get(agg.column) or fields.get(agg.column)
    if dtype != agg.dtype:
        bad(where, f"column '{agg.column}' is not a {agg.dtype} field or transform of the view")
    if agg.column in renamed:
        bad(where, f"'{agg.column}' is both an event field and the name of a field feature")
    if agg.function in NEEDS_NUMERIC and agg.dtype not in NUMERIC_TYPES:
        bad(where, f"'{agg.function}' needs a numeric column")
    if agg.where is not None and (derived.get(agg.where) or fields.get(agg.where)) != "bool":
        bad(where, f"where='{agg.where}' is not a bool field or transform")
    if agg.function == "last_n":
        if agg.k is None or not 1 <= agg.k <= MAX_LAST_N:
            bad(where, f"last_n needs k between 1 and {MAX_LAST_N}")
    elif agg.k is not None:
        bad(where, f"k is only for last_n, not {agg.function}")
    if agg.window_ms is None:
        if agg.tile_ms != LIFETIME_TILE_MS:
            bad(where, f"a lifetime aggregation has tile_ms {LIFETIME_TILE_MS}")
    elif agg.window_ms <= 0 or agg.window_ms % 1000:
        bad(where, "window_ms must be a positive whole number of seconds")
    elif agg.tile_ms != choose_tile_ms(agg.window_ms):
        bad(where, f"tile_ms of a {agg.window_ms} ms window is {choose_tile_ms(agg.window_ms)}")


def _repeated(items: Iterable[str]) -> list[str]:
    return sorted(name for name, n in Counter(items).items() if n > 1)
