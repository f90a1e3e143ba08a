"""Pydantic models of the compiled plan (serialisable, versioned, hashed)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from featurestore.aggregations import FUNCTIONS
from featurestore.plan.names import CodeRef, FeatureRef, Name, Topic, ViewId

PLAN_FORMAT_VERSION = 1
_NOT_PII = {"", "false", "no", "0"}


#: Value types of keys, columns and features.
DType = Literal["int", "float", "str", "bool", "datetime"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy (with `update`), without the values cached from the original's fields."""
        copied = super().model_copy(update=update, deep=deep)
        for name in [n for n in vars(type(self)) if isinstance(getattr(type(self), n, None), cached_property)]:
            copied.__dict__.pop(name, None)
        return copied


class KeySpec(_Frozen):
    """One join key and its type."""

    name: Name
    dtype: DType


class EntityPlan(_Frozen):
    name: Name
    join_keys: list[Name]
    description: str = ""


class SourcePlan(_Frozen):
    """A Kafka topic and how to decode its events."""

    name: Name
    topic: Topic
    schema_ref: CodeRef
    """Import path `module:QualName` of the pydantic event model."""
    fields: dict[Name, Literal["int", "float", "str", "bool", "datetime", "other"]]
    """Event fields and their types ("other" for types features cannot use)."""
    timestamp_field: Name
    dead_letter_topic: Topic
    description: str = ""


class RowFeaturePlan(_Frozen):
    """Latest value of an event field (`column`) or of a function of the event (`udf_ref`)."""

    name: Name
    kind: Literal["field", "transform"]
    column: Name | None = None
    udf_ref: CodeRef | None = None
    dtype: DType


def _known_function(name: str) -> str:
    if name not in FUNCTIONS:
        raise ValueError(f"unknown aggregation function {name!r}; one of: {', '.join(FUNCTIONS)}")
    return name


AggFunction = Annotated[str, AfterValidator(_known_function)]
"""One of `featurestore.aggregations.FUNCTIONS`."""


class AggregationPlan(_Frozen):
    """`function` of `column` over a window of `window_ms` (None: lifetime), kept in tiles of `tile_ms`."""

    name: Name
    column: Name
    function: AggFunction
    window_ms: int | None = Field(gt=0)
    tile_ms: int = Field(gt=0)
    dtype: DType
    """Type of the input column."""
    where: Name | None = None
    """A bool history column: only events where it is True count."""
    k: int | None = Field(None, ge=1)
    """Values kept by last_n."""

    @property
    def tiles_key(self) -> str:
        """Name of the tile set this aggregation reads: the column, and its filter if any."""
        return self.column if self.where is None else f"{self.column}?{self.where}"


class ViewPlan(_Frozen):
    """One version of a feature view. `name` is its id: the view's name for version 1,
    `name@N` for version N (its keys and history are its own)."""

    name: ViewId
    entities: list[Name]
    join_keys: list[KeySpec]
    source: Name
    ttl_ms: int | None = Field(gt=0)
    row_features: list[RowFeaturePlan]
    aggregations: list[AggregationPlan]
    owner: str = ""
    description: str = ""
    tags: dict[str, str] = {}
    allowed_lateness_ms: int | None = Field(None, ge=0)
    freshness_slo_ms: int | None = Field(None, gt=0)
    """How soon an event should be visible online (None: no objective)."""

    @cached_property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.row_features] + [a.name for a in self.aggregations]

    @property
    def pii(self) -> bool:
        """Tagged `pii` (any value but false/no/0): its entity key values are never logged (audit
        log, served-value log) unless a setting says otherwise."""
        return "pii" in self.tags and self.tags["pii"].strip().lower() not in _NOT_PII

    @property
    def base_name(self) -> str:
        """The view's name without its version."""
        return self.name.partition("@")[0]

    @property
    def version(self) -> int:
        return int(self.name.partition("@")[2] or 1)

    def values_fingerprint(self) -> dict[str, object]:
        """What decides this version's values (all but owner, description, tags and the
        freshness objective): a change here needs a new version."""
        return self.model_dump(mode="json", exclude={"owner", "description", "tags", "freshness_slo_ms"})

    @property
    def history_columns(self) -> list[tuple[str, DType]]:
        """Value columns kept in the offline history: row features then aggregation inputs."""
        cols: dict[str, DType] = {f.name: f.dtype for f in self.row_features}
        for agg in self.aggregations:
            cols.setdefault(agg.column, agg.dtype)
            if agg.where is not None:
                cols.setdefault(agg.where, "bool")
        return list(cols.items())


class RequestSourcePlan(_Frozen):
    """The fields callers send with a read, and the pydantic model that checks them."""

    name: Name
    schema_ref: CodeRef
    fields: dict[Name, Literal["int", "float", "str", "bool", "datetime", "other"]]
    description: str = ""


class RequestInput(_Frozen):
    """What one parameter of a request-time function receives: a request field or a feature."""

    param: Name
    field: Name | None = None
    feature: FeatureRef | None = None


class RequestFeaturePlan(_Frozen):
    """A feature computed at read time: `udf_ref(**inputs)`, returning `dtype` (or None)."""

    name: Name
    udf_ref: CodeRef
    dtype: DType
    inputs: list[RequestInput]


class RequestViewPlan(_Frozen):
    """Request-time features over one request source, referenced as "<name>:<feature>"."""

    name: Name
    request_source: Name
    features: list[RequestFeaturePlan]
    owner: str = ""
    description: str = ""
    tags: dict[str, str] = {}

    @cached_property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> RequestFeaturePlan:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)


GuardMetric = Literal["null_rate", "mismatch_rate", "staleness_p99"]


class GuardPlan(_Frozen):
    """A limit on what a rollout's non-control variants serve (see `featurestore.definitions.Guard`)."""

    metric: GuardMetric
    max: float = Field(ge=0)
    feature: Name | None = None


class ServicePlan(_Frozen):
    """A named bundle of features: "view:feature" references (`view@N:feature` pins a version).

    A rollout service has `variants` (name -> references with the same feature names) and a
    `split` (variant -> share of entities); the variant left out of `split` is the control,
    whose references are also `features`. Which variant serves an entity is decided by
    `featurestore.plan.rollout`."""

    name: Name
    features: list[FeatureRef]
    owner: str = ""
    description: str = ""
    tags: dict[str, str] = {}
    variants: dict[Name, list[FeatureRef]] = {}
    split: dict[Name, float] = {}
    guards: list[GuardPlan] = []
    guard_window_ms: Annotated[int, Field(gt=0)] = 60_000
    log_sample_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Share of the reads of this service logged to the served-value topic."""

    @property
    def all_refs(self) -> list[str]:
        """Every reference the service may read (of every variant)."""
        refs = list(self.features)
        for variant in self.variants.values():
            refs += [r for r in variant if r not in refs]
        return refs

    @property
    def view_names(self) -> list[str]:
        """Names (without versions) of the views the service reads, over all its variants."""
        return sorted({ref.partition(":")[0].partition("@")[0] for ref in self.all_refs})

    @property
    def control(self) -> str | None:
        """The variant that serves every entity no other variant's share takes (None: no variants)."""
        rest = [v for v in self.variants if v not in self.split]
        return rest[0] if rest else None


class Plan(_Frozen):
    """Everything the runtime, stores and client need, and nothing from user code but import paths."""

    format_version: int = PLAN_FORMAT_VERSION
    entities: list[EntityPlan]
    sources: list[SourcePlan]
    views: list[ViewPlan]
    services: list[ServicePlan] = []
    request_sources: list[RequestSourcePlan] = []
    request_views: list[RequestViewPlan] = []
    serving: dict[Name, int] = {}
    """Per view with several live versions, the version an unpinned reference reads when it
    is not the lowest one (declared with `FeatureView(..., serving=True)`)."""
    code: dict[CodeRef, str] = {}
    """Per import path the plan names, the content hash of the repository code behind it
    (its module and the repository modules it imports): a code change is a plan change."""

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys), the basis of the content hash."""
        data = self.model_dump(mode="json")
        for key in ("request_sources", "request_views", "code", "serving"):  # absent when empty: older plans keep their hash
            if not data[key]:
                del data[key]
        for view in data["views"]:
            if view["freshness_slo_ms"] is None:
                del view["freshness_slo_ms"]
        for svc in data["services"]:
            for key in ("variants", "split", "guards"):
                if not svc[key]:
                    del svc[key]
            if svc["guard_window_ms"] == 60_000:
                del svc["guard_window_ms"]
            if not svc["log_sample_rate"]:
                del svc["log_sample_rate"]
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()

    @cached_property
    def _views_by_id(self) -> dict[str, ViewPlan]:
        return {v.name: v for v in self.views}

    def view(self, name: str) -> ViewPlan:
        """The view (version) with this id; KeyError if none."""
        return self._views_by_id[name]

    def versions(self, name: str) -> list[ViewPlan]:
        """The live versions of view `name`, lowest first."""
        return sorted((v for v in self.views if v.base_name == name), key=lambda v: v.version)

    def serving_version(self, name: str) -> int | None:
        """The version an unpinned reference to view `name` reads (None: no such view)."""
        versions = self.versions(name)
        if not versions:
            return None
        chosen = self.serving.get(name)
        return chosen if chosen is not None and any(v.version == chosen for v in versions) else versions[0].version

    @cached_property
    def view_refs(self) -> dict[str, ViewPlan]:
        """Every way a reference may name a stored view: `name@N` for each version (`@1` too)
        and `name` for the serving version."""
        refs = {f"{v.base_name}@{v.version}": v for v in self.views}
        for name in {v.base_name for v in self.views}:
            refs[name] = refs[f"{name}@{self.serving_version(name)}"]
        return refs

    def resolve_view(self, ref: str) -> ViewPlan:
        """The view a reference's view part names: `name@N` that version, `name` the serving
        one. KeyError if there is none."""
        return self.view_refs[ref]

    def service(self, name: str) -> ServicePlan:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)

    def request_view(self, name: str) -> RequestViewPlan:
        for v in self.request_views:
            if v.name == name:
                return v
        raise KeyError(name)

    def request_source(self, name: str) -> RequestSourcePlan:
        for s in self.request_sources:
            if s.name == name:
                return s
        raise KeyError(name)

    def source(self, name: str) -> SourcePlan:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)
