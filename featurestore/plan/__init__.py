"""The execution plan: what `compile` produces and every engine and store consumes.

The plan is plain, serialisable data (JSON, enums by name) with a format version.
Runtime, online, offline and client code import this package, never the definitions.
"""

from featurestore.plan.models import (
    PLAN_FORMAT_VERSION,
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
)
from featurestore.plan.windows import choose_tile_ms, effective_window_start, tile_index

__all__ = [
    "PLAN_FORMAT_VERSION",
    "DType",
    "AggregationPlan",
    "EntityPlan",
    "GuardPlan",
    "KeySpec",
    "Plan",
    "RequestFeaturePlan",
    "RequestInput",
    "RequestSourcePlan",
    "RequestViewPlan",
    "RowFeaturePlan",
    "ServicePlan",
    "SourcePlan",
    "ViewPlan",
    "choose_tile_ms",
    "effective_window_start",
    "tile_index",
]
