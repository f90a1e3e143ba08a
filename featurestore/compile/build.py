"""Validate loaded definitions and build the execution plan, collecting every problem."""

from __future__ import annotations

import datetime as dt
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from pydantic import AwareDatetime, BaseModel, FutureDatetime, NaiveDatetime, PastDatetime

from featurestore.compile.fingerprint import code_fingerprints
from featurestore.compile.loader import LoadedRepo, load_repo
from featurestore.definitions import (
    AGGREGATION_FUNCTIONS,
    GUARD_METRICS,
    LIFETIME,
    Aggregation,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    Guard,
    KafkaSource,
    RequestFeature,
    RequestFeatureView,
    RequestSource,
    Transform,
)
from featurestore.errors import Problem, ValidationFailed, one_of
from featurestore.plan import (
    AggregationPlan,
    DType,
    EntityPlan,
    GuardPlan,
    KeySpec,
    Plan,
    RequestFeaturePlan,
    RequestInput,
    RequestSourcePlan,
    RequestViewPlan,
    RowFeaturePlan,
    ServicePlan,
    SourcePlan,
    ViewPlan,
    choose_tile_ms,
)
from featurestore.plan.models import GuardMetric
from featurestore.plan.names import NAME_RULE, is_code_ref, is_name, is_topic, parse_view_ref, view_id
from featurestore.plan.rollout import rollout_problem
from featurestore.plan.validate import (
    KEY_TYPES,
    MAX_LAST_N,
    NEEDS_NUMERIC,
    NUMERIC_TYPES,
    code_refs,
    request_feature_order,
    validate_plan,
)
from featurestore.plan.windows import LIFETIME_TILE_MS

_PYDANTIC_DATETIMES = (AwareDatetime, NaiveDatetime, PastDatetime, FutureDatetime)
MAX_VERSION = 999_999
"""Highest view version."""


def _version(view: FeatureView) -> int:
    """A view's version as declared, 1 when it is not a whole number (that problem is reported)."""
    return view.version if isinstance(view.version, int) and not isinstance(view.version, bool) else 1


def _versioned(view: FeatureView) -> str:
    """A view's name for messages: with its version when it is not 1."""
    version = _version(view)
    return view_id(view.name, version) if isinstance(view.name, str) and version >= 1 else str(view.name)


def compile_repo(root: Path | str) -> Plan:
    """Load and validate a repository; return its plan or raise ValidationFailed with every problem."""
    loaded = load_repo(root)
    plan, problems = build_plan(loaded)
    if problems or plan is None:
        raise ValidationFailed(problems)
    return plan


def _aware(annotation: Any) -> bool:
    """Whether a datetime annotation only accepts times with a UTC offset (AwareDatetime)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _aware(typing.get_args(annotation)[0]) or any(
            getattr(m, "tz_constraint", None) == "aware" for m in typing.get_args(annotation)[1:])
    if origin in (typing.Union, types.UnionType):
        return all(_aware(a) for a in typing.get_args(annotation) if a is not type(None))
    return annotation is AwareDatetime


def dtype_of(annotation: Any) -> DType | None:
    """Plan type of a Python/pydantic annotation (Optional[X] counts as X), or None if unsupported."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return dtype_of(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return dtype_of(args[0]) if len(args) == 1 else None
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if annotation is str:
        return "str"
    if annotation is dt.datetime or annotation in _PYDANTIC_DATETIMES:
        return "datetime"
    return None


def import_path(obj: Any) -> str | None:
    """`module:qualname` of a module-level function or class, or None if it has none."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    return f"{module}:{qualname}"


class _Builder:
    def __init__(self, loaded: LoadedRepo) -> None:
        self.loaded = loaded
        self.problems: list[Problem] = list(loaded.problems)

    # -- helpers ---------------------------------------------------------------
    def _file(self, obj: Any, fallback: Any = None) -> str:
        loc = self.loaded.where(obj) or (self.loaded.where(fallback) if fallback is not None else None)
        return loc.file if loc else str(self.loaded.root)

    def problem(self, obj: Any, label: str, message: str, fix: str = "", owner: Any = None) -> None:
        self.problems.append(Problem(self._file(obj, owner), label, message, fix))

    # -- collection ------------------------------------------------------------
    def collect(self) -> tuple[list[Entity], list[KafkaSource], list[FeatureView]]:
        views = [o.obj for o in self.loaded.objects if isinstance(o.obj, FeatureView)]
        entities: dict[int, Entity] = {id(o.obj): o.obj for o in self.loaded.objects if isinstance(o.obj, Entity)}
        sources: dict[int, KafkaSource] = {
            id(o.obj): o.obj for o in self.loaded.objects if isinstance(o.obj, KafkaSource)
        }
        for view in views:
            for ent in view.entities if isinstance(view.entities, tuple) else ():
                if isinstance(ent, Entity):
                    entities.setdefault(id(ent), ent)
            if isinstance(view.source, KafkaSource):
                sources.setdefault(id(view.source), view.source)
        return list(entities.values()), list(sources.values()), views

    def check_unique(self, kind: str, objs: list[Any], key: Callable[[Any], str] = lambda o: o.name) -> None:
        by_name: dict[str, Any] = {}
        for obj in objs:
            name = key(obj)
            if name in by_name and by_name[name] != obj:
                first = self.loaded.where(by_name[name])
                where = f" (first declared as {first.variable} in {first.file})" if first else ""
                self.problem(obj, f"{kind} '{name}'", f"duplicate {kind} name{where}", f"rename one of the two {kind}s")
            by_name.setdefault(name, obj)

    def check_name(self, obj: Any, label: str, name: Any, owner: Any = None) -> bool:
        if not is_name(name):
            self.problem(obj, label, f"invalid name {name!r}", f"use {NAME_RULE}", owner)
            return False
        return True

    # -- entities and sources ----------------------------------------------------
    def entity_plan(self, ent: Entity) -> EntityPlan | None:
        label = f"Entity '{ent.name}'"
        ok = self.check_name(ent, label, ent.name)
        if not ent.join_keys or not all(is_name(k) for k in ent.join_keys):
            self.problem(ent, label, f"join_keys must be a non-empty list of field names, each {NAME_RULE}",
                         'e.g. join_keys=["user_id"]')
            ok = False
        return EntityPlan(name=ent.name, join_keys=list(ent.join_keys), description=ent.description) if ok else None

    def schema_fields(self, src: KafkaSource | RequestSource) -> dict[str, Any] | None:
        schema = src.schema
        if not (inspect.isclass(schema) and issubclass(schema, BaseModel)):
            return None
        # fields whose names are not valid names cannot be used by features (they are left out)
        return {name: dtype_of(f.annotation) for name, f in schema.model_fields.items() if is_name(name)}

    def source_plan(self, src: KafkaSource) -> SourcePlan | None:
        label = f"KafkaSource '{src.name}'"
        ok = self.check_name(src, label, src.name)
        if not is_topic(src.topic):
            self.problem(src, label, f"invalid topic name {src.topic!r}",
                         'use 1 to 249 letters, digits, ".", "_" or "-", e.g. topic="payments"')
            ok = False
        if not is_topic(src.dead_letter_topic):
            self.problem(src, label, f"invalid dead_letter_topic {src.dead_letter_topic!r}",
                         'use 1 to 249 letters, digits, ".", "_" or "-"')
            ok = False
        fields = self.schema_fields(src)
        ref = import_path(src.schema) if fields is not None else None
        if fields is None:
            self.problem(src, label, f"schema {src.schema!r} is not a pydantic model class",
                         "pass a class deriving from pydantic.BaseModel")
            return None
        if ref is not None and not is_code_ref(ref):
            self.problem(src, label, f"schema {ref} has no plain import path",
                         "define the event model in a module whose path is ASCII letters, digits and underscores")
            ok = False
        if ref is None:
            self.problem(src, label, f"schema {src.schema.__name__} is not defined at module level",
                         "define the event model at the top level of a module in the repo")
            ok = False
        ts_type = fields.get(src.timestamp_field, "missing")
        if ts_type == "missing":
            self.problem(src, label, f"timestamp_field '{src.timestamp_field}' is not a field of {src.schema.__name__}",
                         one_of(src.timestamp_field, fields, lead="use "))
            ok = False
        elif ts_type != "datetime":
            self.problem(src, label, f"timestamp_field '{src.timestamp_field}' must be a datetime",
                         "annotate it as pydantic.AwareDatetime")
            ok = False
        elif not _aware(src.schema.model_fields[src.timestamp_field].annotation):
            self.problem(src, label, f"timestamp_field '{src.timestamp_field}' accepts times without a UTC offset, "
                         "which would be read as UTC without a word",
                         "annotate it as pydantic.AwareDatetime (events then carry an offset, e.g. "
                         "2026-01-01T12:00:00+00:00 or ...Z)")
            ok = False
        if not ok or ref is None:
            return None
        return SourcePlan(
            name=src.name, topic=src.topic, schema_ref=ref, fields={k: v or "other" for k, v in fields.items()},
            timestamp_field=src.timestamp_field, dead_letter_topic=src.dead_letter_topic, description=src.description,
        )

    # -- views -------------------------------------------------------------------
    def duration_ms(self, view: FeatureView, label: str, name: str, value: Any, example: str,
                    zero_ok: bool = False) -> tuple[bool, int | None]:
        """(valid, a view's optional duration in whole ms, at least 1 when positive); a problem is reported."""
        if value is None:
            return True, None
        if not isinstance(value, dt.timedelta) or value < dt.timedelta(0) or (not zero_ok and value == dt.timedelta(0)):
            self.problem(view, label, f"{name} must be a {'timedelta >= 0' if zero_ok else 'positive timedelta'}, got {value!r}",
                         f"e.g. {example}")
            return False, None
        ms = int(value / dt.timedelta(milliseconds=1))
        return True, ms if zero_ok else max(1, ms)

    def view_plan(self, view: FeatureView, key_types: dict[tuple[str, str], str]) -> ViewPlan | None:
        label = f"FeatureView '{_versioned(view)}'"
        ok = self.check_name(view, label, view.name)
        if not isinstance(view.version, int) or isinstance(view.version, bool) or not 1 <= view.version <= MAX_VERSION:
            self.problem(view, label, f"version must be a whole number from 1 to {MAX_VERSION}, got {view.version!r}",
                         "e.g. version=2")
            return None
        src = view.source
        if not isinstance(src, KafkaSource):
            self.problem(view, label, f"source must be a KafkaSource, got {type(src).__name__}", "pass source=KafkaSource(...)")
            return None
        fields = self.schema_fields(src) or {}
        join_keys: list[KeySpec] = []
        if not view.entities:
            self.problem(view, label, "no entities", "pass entities=[...] with at least one Entity")
            ok = False
        for ent in view.entities:
            if not isinstance(ent, Entity):
                self.problem(view, label, f"entities must be Entity objects, got {ent!r}", "pass entities=[Entity(...)]")
                ok = False
                continue
            for key in ent.join_keys:
                dtype = fields.get(key, "missing")
                if dtype == "missing":
                    self.problem(view, label,
                                 f"join key '{key}' of entity '{ent.name}' is not a field of the event schema "
                                 f"{getattr(src.schema, '__name__', src.schema)}",
                                 f"add '{key}' to the schema or use an entity whose keys the events carry")
                    ok = False
                elif dtype not in KEY_TYPES:
                    self.problem(view, label, f"join key '{key}' has type {dtype or 'unsupported'}",
                                 "join keys must be int or str fields")
                    ok = False
                else:
                    seen = key_types.setdefault((ent.name, key), dtype)
                    if seen != dtype:
                        self.problem(view, label, f"join key '{key}' of entity '{ent.name}' is {dtype} here but {seen} in another source",
                                     "give the key the same type in every event schema")
                        ok = False
                    join_keys.append(KeySpec(name=key, dtype=dtype))
        ttl_ok, ttl_ms = self.duration_ms(view, label, "ttl", view.ttl, "ttl=timedelta(days=7), or ttl=None for no expiry")
        lateness_ok, lateness_ms = self.duration_ms(view, label, "allowed_lateness", view.allowed_lateness,
                                                    "allowed_lateness=timedelta(minutes=5), or None for no limit", zero_ok=True)
        slo_ok, slo_ms = self.duration_ms(view, label, "freshness_slo", view.freshness_slo,
                                          "freshness_slo=timedelta(seconds=5), or None for no objective")
        ok = ok and ttl_ok and lateness_ok and slo_ok
        rows: list[RowFeaturePlan] = []
        aggs: list[AggregationPlan] = []
        if not view.features:
            self.problem(view, label, "no features", "pass features=[Field(...), Aggregation(...)]")
            ok = False
        for feat in view.features:
            if isinstance(feat, Field):
                rows.extend(self.field_plan(view, feat, fields))
            elif isinstance(feat, Transform):
                rows.extend(self.transform_plan(view, feat))
            elif not isinstance(feat, Aggregation):
                self.problem(view, label, f"unknown feature {feat!r}", "use Field, Transform or Aggregation")
        derived = {r.name: r.dtype for r in rows if r.kind == "transform"}
        for feat in view.features:
            if isinstance(feat, Aggregation):
                aggs.extend(self.aggregation_plans(view, feat, fields, derived))
        renamed = {r.name: r.column for r in rows if r.kind == "field" and r.column != r.name}
        for agg in aggs:
            if agg.column in renamed:
                self.problem(view, f"{label}, aggregation '{agg.name}'",
                             f"'{agg.column}' is both an event field and the name of Field('{renamed[agg.column]}')",
                             "rename that Field feature so aggregation inputs are unambiguous")
                ok = False
        names: set[str] = {k.name for k in join_keys}
        for name in [r.name for r in rows] + [a.name for a in aggs]:
            if name in names:
                self.problem(view, f"{label}, feature '{name}'", "duplicate feature name (or same as a join key)",
                             "give each feature of a view a distinct name (Field(..., name=...), Aggregation(..., name=...))")
                ok = False
            names.add(name)
        if not ok or len(self.problems) and any(p.obj.startswith(label) for p in self.problems):
            return None
        return ViewPlan(
            name=view_id(view.name, view.version), entities=[e.name for e in view.entities], join_keys=join_keys, source=src.name,
            ttl_ms=ttl_ms, row_features=rows, aggregations=aggs, owner=view.owner, description=view.description,
            tags={str(k): str(v) for k, v in view.tags.items()}, allowed_lateness_ms=lateness_ms, freshness_slo_ms=slo_ms,
        )

    def field_plan(self, view: FeatureView, feat: Field, fields: dict[str, Any]) -> list[RowFeaturePlan]:
        label = f"FeatureView '{_versioned(view)}', feature '{feat.name}'"
        if not self.check_name(view, label, feat.name):
            return []
        dtype = fields.get(feat.column, "missing")
        if dtype == "missing":
            self.problem(view, label, f"unknown field '{feat.column}' in the event schema",
                         one_of(feat.column, fields, lead="use "))
            return []
        if dtype is None:
            self.problem(view, label, f"field '{feat.column}' has an unsupported type",
                         "features are int, float, str, bool or datetime")
            return []
        return [RowFeaturePlan(name=feat.name, kind="field", column=feat.column, dtype=dtype)]

    def transform_plan(self, view: FeatureView, feat: Transform) -> list[RowFeaturePlan]:
        label = f"FeatureView '{_versioned(view)}', feature '{feat.name}'"
        if not self.check_name(view, label, feat.name):
            return []
        udf: Callable[..., Any] = feat.udf
        ref = import_path(udf) if inspect.isfunction(udf) else None
        if ref is None or not is_code_ref(ref):
            self.problem(view, label, "udf must be a function defined at module level (no lambdas or closures)",
                         "define it with `def` at the top of a module in the repo")
            return []
        try:
            ret = typing.get_type_hints(udf).get("return")
        except Exception:
            ret = None
        dtype = dtype_of(ret) if ret is not None else None
        if dtype is None:
            self.problem(view, label, f"udf {ref} must annotate its return type as int, float, str, bool or datetime",
                         f"e.g. def {udf.__name__}(event) -> float:")
            return []
        return [RowFeaturePlan(name=feat.name, kind="transform", udf_ref=ref, dtype=dtype)]

    def aggregation_plans(
        self, view: FeatureView, agg: Aggregation, fields: dict[str, Any], derived: dict[str, DType]
    ) -> list[AggregationPlan]:
        label = f"FeatureView '{_versioned(view)}', aggregation '{agg.name}'"
        ok = self.check_name(view, label, agg.name)
        if agg.function not in AGGREGATION_FUNCTIONS:
            self.problem(view, label, f"unknown aggregation function {agg.function!r}",
                         one_of(agg.function, AGGREGATION_FUNCTIONS, lead="use "))
            ok = False
        dtype = derived.get(agg.column) or fields.get(agg.column, "missing")
        if dtype == "missing":
            self.problem(view, label, f"unknown field '{agg.column}' in the event schema",
                         one_of(agg.column, list(fields) + list(derived), lead="use "))
            ok = False
        elif dtype is None:
            self.problem(view, label, f"field '{agg.column}' has an unsupported type", "aggregate int, float, str or bool fields")
            ok = False
        elif agg.function in NEEDS_NUMERIC and dtype not in NUMERIC_TYPES:
            self.problem(view, label, f"'{agg.function}' needs a numeric field but '{agg.column}' is {dtype}",
                         "aggregate an int or float field, or use count/last")
            ok = False
        if agg.where is not None:
            where_type = derived.get(agg.where) or fields.get(agg.where, "missing")
            if where_type != "bool":
                what = "is not an event field or Transform" if where_type == "missing" else f"is {where_type}"
                self.problem(view, label, f"where='{agg.where}' {what}; it must name a bool field or Transform",
                             "e.g. Transform('is_foreign', udf=is_foreign) with `-> bool`, then where='is_foreign'")
                ok = False
        if agg.function == "last_n":
            if not isinstance(agg.k, int) or isinstance(agg.k, bool) or not 1 <= agg.k <= MAX_LAST_N:
                self.problem(view, label, f"last_n needs k between 1 and {MAX_LAST_N}, got {agg.k!r}",
                             "e.g. Aggregation('merchant_id', 'last_n', k=5, windows=[...])")
                ok = False
        elif agg.k is not None:
            self.problem(view, label, f"k is only for last_n, not {agg.function}", "remove k=...")
            ok = False
        if not agg.windows:
            self.problem(view, label, "no windows", "pass windows=[timedelta(hours=1), ...] (or LIFETIME)")
            ok = False
        plans: list[AggregationPlan] = []
        seen: set[int] = set()
        for window, name in zip(agg.windows, agg.output_names):
            if window == LIFETIME:
                if 0 in seen:
                    self.problem(view, label, "LIFETIME is listed twice", "remove the duplicate window")
                    ok = False
                seen.add(0)
                if ok and dtype not in ("missing", None):
                    plans.append(AggregationPlan(
                        name=name, column=agg.column, function=agg.function,
                        window_ms=None, tile_ms=LIFETIME_TILE_MS, dtype=dtype,
                        where=agg.where, k=agg.k,
                    ))
                continue
            if not isinstance(window, dt.timedelta):
                self.problem(view, label, f"window {window!r} is not a timedelta or LIFETIME", "use datetime.timedelta(...)")
                ok = False
                continue
            ms = int(window / dt.timedelta(milliseconds=1))
            if ms <= 0:
                self.problem(view, label, f"window {window} is not positive", "windows must be longer than zero")
                ok = False
            elif ms % 1000:
                self.problem(view, label, f"window {window} is not a whole number of seconds", "round the window to seconds")
                ok = False
            elif ms in seen:
                self.problem(view, label, f"window {window} is listed twice", "remove the duplicate window")
                ok = False
            seen.add(ms)
            if ok and dtype not in ("missing", None):
                plans.append(AggregationPlan(
                    name=name, column=agg.column, function=agg.function,
                    window_ms=ms, tile_ms=choose_tile_ms(ms), dtype=dtype,
                    where=agg.where, k=agg.k,
                ))
        return plans if ok else []


def _request_source_plan(b: _Builder, src: RequestSource) -> RequestSourcePlan | None:
    label = f"RequestSource '{src.name}'"
    ok = b.check_name(src, label, src.name)
    fields = b.schema_fields(src)
    if fields is None:
        b.problem(src, label, f"schema {src.schema!r} is not a pydantic model class",
                  "pass a class deriving from pydantic.BaseModel with the fields callers send")
        return None
    ref = import_path(src.schema)
    if ref is None or not is_code_ref(ref):
        b.problem(src, label, f"schema {src.schema.__name__} is not defined at module level with a plain import path",
                  "define the request model at the top level of a module in the repo")
        ok = False
    if not ok or ref is None:
        return None
    return RequestSourcePlan(name=src.name, schema_ref=ref, fields={k: v or "other" for k, v in fields.items()},
                             description=src.description)


def _request_view_plan(b: _Builder, view: RequestFeatureView, features: dict[str, list[str]]) -> RequestViewPlan | None:
    """`features`: every view's feature names (stream and request views), to check inputs."""
    label = f"RequestFeatureView '{view.name}'"
    ok = b.check_name(view, label, view.name)
    src = view.request
    if not isinstance(src, RequestSource):
        b.problem(view, label, f"request must be a RequestSource, got {type(src).__name__}", "pass request=RequestSource(...)")
        return None
    fields = b.schema_fields(src) or {}
    if not view.features:
        b.problem(view, label, "no features", "pass features=[RequestFeature(...)]")
        ok = False
    plans: list[RequestFeaturePlan] = []
    for feat in view.features:
        if not isinstance(feat, RequestFeature):
            b.problem(view, label, f"unknown feature {feat!r}", "use RequestFeature(name, function, inputs=[...])")
            ok = False
            continue
        plan = _request_feature_plan(b, view, feat, fields, features)
        ok = ok and plan is not None
        if plan is not None:
            plans.append(plan)
    for name in sorted({n for n in (f.name for f in plans) if [p.name for p in plans].count(n) > 1}):
        b.problem(view, f"{label}, feature '{name}'", "duplicate feature name", "give each feature its own name")
        ok = False
    if not ok:
        return None
    return RequestViewPlan(name=view.name, request_source=src.name, features=plans, owner=view.owner,
                           description=view.description, tags={str(k): str(v) for k, v in view.tags.items()})


def _request_feature_plan(b: _Builder, view: RequestFeatureView, feat: RequestFeature, fields: dict[str, Any],
                          features: dict[str, list[str]]) -> RequestFeaturePlan | None:
    label = f"RequestFeatureView '{view.name}', feature '{feat.name}'"
    if not b.check_name(view, label, feat.name):
        return None
    fn = feat.function
    ref = import_path(fn) if inspect.isfunction(fn) else None
    if ref is None or not is_code_ref(ref):
        b.problem(view, label, "function must be a function defined at module level (no lambdas or closures)",
                  "define it with `def` at the top of a module in the repo")
        return None
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    dtype = dtype_of(hints["return"]) if "return" in hints else None
    if dtype is None:
        b.problem(view, label, f"function {ref} must annotate its return type as int, float, str, bool or datetime",
                  f"e.g. def {fn.__name__}(...) -> float | None:")
        return None
    ok = True
    bound: dict[str, str] = {}
    for param, feature_ref in feat.inputs:
        view_name, sep, name = feature_ref.partition(":") if isinstance(feature_ref, str) else ("", "", "")
        if not sep or view_name not in features:
            b.problem(view, label, f"input {feature_ref!r} names no view", one_of(view_name, sorted(features), lead="use "))
            ok = False
        elif name not in features[view_name]:
            b.problem(view, label, f"view '{view_name}' has no feature '{name}'", one_of(name, features[view_name], lead="use "))
            ok = False
        else:
            bound[param] = feature_ref
    positional = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    inputs: list[RequestInput] = []
    for arg in inspect.signature(fn).parameters.values():
        if arg.kind not in positional:
            b.problem(view, label, f"parameter '{arg.name}' of {ref} cannot be passed by name",
                      "use plain named parameters, one per request field or input feature")
            ok = False
        elif arg.name in bound:
            inputs.append(RequestInput(param=arg.name, feature=bound.pop(arg.name)))
        elif arg.name in fields:
            inputs.append(RequestInput(param=arg.name, field=arg.name))
        elif arg.default is inspect.Parameter.empty and arg.name not in dict(feat.inputs):  # (a bad input is reported)
            b.problem(view, label, f"parameter '{arg.name}' of {ref} is neither a field of the request model "
                      f"{getattr(view.request.schema, '__name__', '?')} nor a feature listed in inputs",
                      one_of(arg.name, list(fields), lead="name it after a request field: ") + ", or add its "
                      "feature to inputs")
            ok = False
    for param, feature_ref in bound.items():
        b.problem(view, label, f"input {feature_ref!r} is not a parameter of {ref} (expected a parameter '{param}')",
                  f"add a parameter '{param}', or map it: inputs={{'your_param': '{feature_ref}'}}")
        ok = False
    return RequestFeaturePlan(name=feat.name, udf_ref=ref, dtype=dtype, inputs=inputs) if ok else None


def _service_refs(b: _Builder, svc: FeatureService, label: str, items: Any, known: dict[str, ViewPlan | RequestViewPlan],
                  declared: set[str], versions: dict[str, int]) -> list[str] | None:
    """The references of one feature list of a service (None after reporting a problem)."""
    ok = True
    refs: list[str] = []
    if isinstance(items, str) or not items:
        b.problem(svc, label, "no features", 'list "view:feature" references or FeatureView objects')
        return None
    for item in items:
        if isinstance(item, (FeatureView, RequestFeatureView)):
            version = getattr(item, "version", 1)
            part = f"{item.name}@{version}" if versions.get(item.name, 1) > 1 or version != 1 else item.name
            refs.extend(f"{part}:{f}" for f in (known[part].feature_names if part in known else []))
            continue
        view_part, sep, feature = item.partition(":") if isinstance(item, str) else ("", "", "")
        parsed = parse_view_ref(view_part)
        if not sep or parsed is None:
            b.problem(svc, label, f"feature reference {item!r} is not 'view:feature' or 'view@N:feature'",
                      'e.g. "user_payments:amount_sum_1h"')
            ok = False
        elif view_part not in known and parsed[0] in known:
            b.problem(svc, label, f"feature reference {item!r} names no version {parsed[1]} of view '{parsed[0]}'",
                      one_of(view_part, sorted(k for k in known if k.partition("@")[0] == parsed[0]), lead="use "))
            ok = False
        elif view_part not in known and parsed[0] in declared:
            ok = False  # the view's own problems are reported
        elif view_part not in known:
            b.problem(svc, label, f"feature reference {item!r} names an unknown view '{view_part}'",
                      one_of(view_part, sorted(known), lead="use "))
            ok = False
        elif feature not in known[view_part].feature_names:
            b.problem(svc, label, f"view '{view_part}' has no feature '{feature}'",
                      one_of(feature, known[view_part].feature_names, lead="use "))
            ok = False
        else:
            refs.append(item)
    dupes = sorted({r for r in refs if refs.count(r) > 1})
    if dupes:
        b.problem(svc, label, f"features listed twice: {', '.join(dupes)}", "list each feature once")
        ok = False
    return refs if ok else None


def _service_plan(b: _Builder, svc: FeatureService, known: dict[str, ViewPlan | RequestViewPlan],
                  versions: dict[str, int]) -> ServicePlan | None:
    """`known`: every view part a reference may use (`name`, `name@N`, request views)."""
    label = f"FeatureService '{svc.name}'"
    ok = b.check_name(svc, label, svc.name)
    rate = svc.log_sample_rate
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate <= 1:
        b.problem(svc, label, f"log_sample_rate must be a number from 0 to 1, got {rate!r}", "e.g. log_sample_rate=0.1")
        return None
    declared = {o.obj.name for o in b.loaded.objects if isinstance(o.obj, (FeatureView, RequestFeatureView))}
    if not svc.variants:
        if svc.split or svc.guards:
            b.problem(svc, label, "split or guards without variants", 'pass variants={"control": [...], "treatment": [...]}')
            return None
        refs = _service_refs(b, svc, label, svc.features, known, declared, versions)
        if not ok or refs is None:
            return None
        return ServicePlan(name=svc.name, features=refs, owner=svc.owner, description=svc.description, tags=dict(svc.tags),
                           log_sample_rate=float(rate))
    if svc.features:
        b.problem(svc, label, "both features and variants", "list the features inside each variant")
        return None
    variants: dict[str, list[str]] = {}
    for name, items in svc.variants.items():
        ok = b.check_name(svc, f"{label}, variant '{name}'", name) and ok
        refs = _service_refs(b, svc, f"{label}, variant '{name}'", items, known, declared, versions)
        if refs is None:
            ok = False
        else:
            variants[str(name)] = refs
    if not ok:
        return None
    problem = rollout_problem(variants, dict(svc.split))
    if problem:
        b.problem(svc, label, *problem)
        return None
    control = next(v for v in variants if v not in svc.split)
    guards = _guard_plans(b, svc, label, [r.partition(":")[2] for r in variants[control]])
    window = svc.guard_window
    if not isinstance(window, dt.timedelta) or window < dt.timedelta(seconds=1):
        b.problem(svc, label, f"guard_window must be a timedelta of at least a second, got {window!r}",
                  "e.g. guard_window=timedelta(minutes=5)")
        return None
    if guards is None:
        return None
    return ServicePlan(name=svc.name, features=variants[control], owner=svc.owner, description=svc.description,
                       tags=dict(svc.tags), variants=variants, split={k: float(v) for k, v in svc.split.items()},
                       guards=guards, guard_window_ms=int(window / dt.timedelta(milliseconds=1)),
                       log_sample_rate=float(rate))


def _guard_plans(b: _Builder, svc: FeatureService, label: str, features: list[str]) -> list[GuardPlan] | None:
    out: list[GuardPlan] = []
    for guard in svc.guards:
        if not isinstance(guard, Guard):
            b.problem(svc, label, f"guards must be Guard objects, got {guard!r}", 'e.g. Guard("null_rate", max=0.05)')
            return None
        if guard.metric not in GUARD_METRICS:
            b.problem(svc, label, f"unknown guard metric {guard.metric!r}", one_of(str(guard.metric), GUARD_METRICS, lead="use "))
            return None
        if not isinstance(guard.max, (int, float)) or isinstance(guard.max, bool) or guard.max < 0:
            b.problem(svc, label, f"guard max must be a number >= 0, got {guard.max!r}", "e.g. max=0.05")
            return None
        if guard.feature is not None and guard.feature not in features:
            b.problem(svc, label, f"guard names feature {guard.feature!r}, not one of the service's",
                      one_of(str(guard.feature), features, lead="use "))
            return None
        out.append(GuardPlan(metric=cast(GuardMetric, guard.metric), max=float(guard.max), feature=guard.feature))  # checked above
    return out


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


def _by_name(items: Iterable[N]) -> list[N]:
    """One item per name (the last given), sorted by name."""
    return sorted({i.name: i for i in items}.values(), key=lambda i: i.name)


def _serving(b: _Builder, views: list[FeatureView]) -> dict[str, int]:
    """Per view with several versions, the serving version when it is not the lowest."""
    out: dict[str, int] = {}
    for name in sorted({v.name for v in views if isinstance(v.name, str)}):
        versions = [v for v in views if v.name == name and isinstance(v.version, int)]
        marked = [v for v in versions if v.serving]
        if len(marked) > 1:
            b.problem(marked[1], f"FeatureView '{name}'",
                      f"versions {', '.join(str(v.version) for v in marked)} are all marked serving=True",
                      "mark the one version that references without @N read")
        elif marked and len(versions) > 1 and marked[0].version != min(v.version for v in versions):
            out[name] = marked[0].version
    return out


def build_plan(loaded: LoadedRepo) -> tuple[Plan | None, list[Problem]]:
    """Validate the loaded definitions and build the plan. Returns (plan or None, problems)."""
    b = _Builder(loaded)
    entities, sources, views = b.collect()
    b.check_unique("Entity", entities)
    b.check_unique("KafkaSource", sources)
    ent_plans = [p for p in (b.entity_plan(e) for e in entities) if p]
    src_plans = [p for p in (b.source_plan(s) for s in sources) if p]
    key_types: dict[tuple[str, str], str] = {}
    view_plans = [p for p in (b.view_plan(v, key_types) for v in views) if p]
    if not loaded.objects and not b.problems:
        b.problems.append(Problem(str(loaded.root), "repository", "no feature views found",
                                  "declare FeatureView objects at module level in .py files of the repo"))
    request_views = [o.obj for o in loaded.objects if isinstance(o.obj, RequestFeatureView)]
    request_sources = {id(o.obj): o.obj for o in loaded.objects if isinstance(o.obj, RequestSource)}
    for rv in request_views:
        if isinstance(rv.request, RequestSource):
            request_sources.setdefault(id(rv.request), rv.request)
    b.check_unique("RequestSource", list(request_sources.values()))
    b.check_unique("FeatureView", views, key=_versioned)
    stored_names = {v.name for v in views}
    b.check_unique("FeatureView", [*(v for v in views if _version(v) == min(_version(w) for w in views if w.name == v.name)),
                                   *request_views])
    serving = _serving(b, views)
    stored = Plan(entities=[], sources=[], views=_by_name(view_plans), serving=serving)
    req_src_plans = [p for p in (_request_source_plan(b, s) for s in request_sources.values()) if p]
    names = {part: v.feature_names for part, v in stored.view_refs.items()}
    names |= {v.name: [f.name for f in v.features if isinstance(f, RequestFeature)] for v in request_views
              if v.name not in stored_names}
    req_view_plans = [p for p in (_request_view_plan(b, v, names) for v in request_views) if p]
    services = [o.obj for o in loaded.objects if isinstance(o.obj, FeatureService)]
    b.check_unique("FeatureService", services)
    known: dict[str, ViewPlan | RequestViewPlan] = dict(stored.view_refs)
    known |= {v.name: v for v in req_view_plans if v.name not in known}
    versions = {name: sum(1 for v in views if v.name == name) for name in stored_names}
    service_plans = [p for p in (_service_plan(b, s, known, versions) for s in services) if p]
    if b.problems:
        return None, b.problems
    plan = Plan(entities=_by_name(ent_plans), sources=_by_name(src_plans), views=_by_name(view_plans), services=_by_name(service_plans),
                request_sources=_by_name(req_src_plans), request_views=_by_name(req_view_plans), serving=serving)
    plan = plan.model_copy(update={"code": code_fingerprints(loaded.root, code_refs(plan))})
    if request_feature_order(plan) is None:
        cycle = [f"{v.name}:{f.name}" for v in plan.request_views for f in v.features]
        return None, [Problem(str(loaded.root), "RequestFeatureView", "request-time features read each other in a cycle "
                              f"(among {', '.join(cycle)})", "make one of them read stored features only")]
    problems = validate_plan(plan)  # the rules a plan received as JSON is held to: compile's output always passes
    return (None, problems) if problems else (plan, [])
