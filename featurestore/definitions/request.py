"""Request-time features: computed when they are read, from what the caller sends and from
features already stored, by plain Python functions of the repository."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from featurestore.definitions.tags import frozen_tags, hash_of_fields, normalised


@dataclass(frozen=True)
class RequestSource:
    """The fields a caller sends with each read (a pydantic model): online in
    `get_online_features(..., request_data=...)` or the entity rows, offline as columns of
    the entity frame."""

    name: str
    schema: Any
    description: str = ""


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

    # written out (not generated): it accepts references or a mapping, and stores pairs
    def __init__(self, name: str, function: Callable[..., Any], inputs: Sequence[str] | Mapping[str, str] = ()) -> None:
        if isinstance(inputs, Mapping):
            pairs = tuple((str(p), r) for p, r in inputs.items())
        else:
            pairs = tuple((r.partition(":")[2] if isinstance(r, str) else "", r) for r in inputs)
        normalised(self, name=name, function=function, inputs=pairs)


@dataclass(frozen=True)
class RequestFeatureView:
    """Request-time features over one RequestSource, read like a FeatureView's:
    "<view>:<feature>" references, in feature services too."""

    name: str
    request: RequestSource
    features: Sequence[RequestFeature]
    owner: str = ""
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        normalised(self, features=tuple(self.features), tags=frozen_tags(self.tags))

    __hash__ = hash_of_fields
