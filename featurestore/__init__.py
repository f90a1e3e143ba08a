"""A streaming feature store: Python definitions -> Kafka stream processors -> Redis + Parquet.

Declare features with `Entity`, `KafkaSource`, `FeatureView`, `Aggregation`, `Field` and
`Transform`; bundle them with `FeatureService`; read them with `FeatureStore`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any as _Any

from featurestore.definitions import (
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
from featurestore.errors import (
    AuthError,
    ConfigError,
    FeatureRequestError,
    FeatureStoreError,
    OnlineLayoutError,
    Problem,
    RegistryError,
    ServiceError,
    StoreUnavailable,
    ValidationFailed,
)

if TYPE_CHECKING:
    from featurestore.client import FeatureStore, OnlineResponse, TrainingSet
    from featurestore.config import Settings

__version__ = "0.1.0"

__all__ = [
    "Aggregation",
    "AuthError",
    "ConfigError",
    "Entity",
    "FeatureRequestError",
    "FeatureStore",
    "FeatureService",
    "FeatureStoreError",
    "FeatureView",
    "Field",
    "Guard",
    "KafkaSource",
    "LIFETIME",
    "OnlineLayoutError",
    "OnlineResponse",
    "Problem",
    "RegistryError",
    "RequestFeature",
    "RequestFeatureView",
    "RequestSource",
    "ServiceError",
    "Settings",
    "StoreUnavailable",
    "TrainingSet",
    "Transform",
    "ValidationFailed",
    "__version__",
]

_LAZY = {
    "FeatureStore": "featurestore.client",
    "OnlineResponse": "featurestore.client",
    "TrainingSet": "featurestore.client",
    "Settings": "featurestore.config",
}


def __getattr__(name: str) -> _Any:
    """Import the client and config lazily so feature modules import only the definitions."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'featurestore' has no attribute {name!r}")
