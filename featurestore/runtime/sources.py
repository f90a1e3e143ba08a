"""Which source of a plan a command works on."""

from __future__ import annotations

from featurestore.errors import FeatureRequestError, one_of
from featurestore.plan import Plan, SourcePlan


def pick_source(plan: Plan, name: str | None) -> SourcePlan:
    """The source called `name`, or the only source that feeds feature views."""
    used = [s for s in plan.sources if any(v.source == s.name for v in plan.views)]
    names = [s.name for s in used]
    if name is not None:
        for s in used:
            if s.name == name:
                return s
        raise FeatureRequestError(f"no source '{name}' feeds a feature view: {one_of(name, names, lead='use ')}")
    if len(used) != 1:
        raise FeatureRequestError(f"the repo has {len(used)} sources with views; choose one with --source "
                                  f"({', '.join(names) or 'none'})")
    return used[0]
