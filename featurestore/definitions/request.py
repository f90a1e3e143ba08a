"""Request-time features: computed when they are read, from what the caller sends and from
features already stored, by plain Python functions of the repository."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from featurestore.definitions.tags import frozen_tags, tag_items


@dataclass(frozen=True, init=False)
class RequestSource:
    """The fields a caller sends with each read (a pydantic model): online in
    `get_online_features(..., request_data=...)` or the entity rows, offline as columns of
    the entity frame."""

    name: str
    schema: Any
    description: str

    def __init__(self, name: str, schema: Any, description: str = "") -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "schema", schema)
        object.__setattr__(self, "description", description)


@dataclass(frozen=True, init=False)
class RequestFeature:
    """One feature computed at read time by `function`, a module-level function of the repo
    with a declared return type. Each parameter is bound by name to a field of the view's
    RequestSource or to a feature of `inputs` ("view:feature" references; the parameter is
    named after the feature, or give a mapping {parameter: reference}). A feature that is
    not found reaches the function as None."""

    name: str
    function: Callable[..., Any]
    inputs: tuple[tuple[str, str], ...]
    """(parameter, "view:feature") pairs."""

    def __init__(self, name: str, function: Callable[..., Any], inputs: Sequence[str] | Mapping[str, str] = ()) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "function", function)
        if isinstance(inputs, Mapping):
            pairs = tuple((str(p), r) for p, r in inputs.items())
        else:
            pairs = tuple((r.partition(":")[2] if isinstance(r, str) else "", r) for r in inputs)
        object.__setattr__(self, "inputs", pairs)


@dataclass(frozen=True, init=False)
class RequestFeatureView:
    """Request-time features over one RequestSource, read like a FeatureView's:
    "<view>:<feature>" references, in feature services too."""

    name: str
    request: RequestSource
    features: tuple[RequestFeature, ...]
    owner: str
    description: str
    tags: Mapping[str, str] = field(default_factory=dict)

    def __init__(
        self,
        name: str,
        request: RequestSource,
        features: Sequence[RequestFeature],
        owner: str = "",
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "request", request)
        object.__setattr__(self, "features", tuple(features))
        object.__setattr__(self, "owner", owner)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "tags", frozen_tags(tags))

    def __hash__(self) -> int:
        return hash((self.name, self.request, self.features, self.owner, self.description, tag_items(self.tags)))
