"""What users write: entities, sources, feature views and their features.

Definitions are immutable plain data. Constructing one performs no I/O and never
raises for semantic problems: `featurestore.compile` validates a whole repository
and reports every problem at once.
"""

from featurestore.aggregations import AGGREGATION_FUNCTIONS
from featurestore.definitions.entity import Entity
from featurestore.definitions.features import LIFETIME, Aggregation, Feature, Field, Transform
from featurestore.definitions.request import RequestFeature, RequestFeatureView, RequestSource
from featurestore.definitions.service import GUARD_METRICS, FeatureService, Guard
from featurestore.definitions.source import KafkaSource
from featurestore.definitions.view import FeatureView

__all__ = [
    "AGGREGATION_FUNCTIONS",
    "GUARD_METRICS",
    "Aggregation",
    "Entity",
    "Feature",
    "FeatureService",
    "FeatureView",
    "Field",
    "Guard",
    "KafkaSource",
    "LIFETIME",
    "RequestFeature",
    "RequestFeatureView",
    "RequestSource",
    "Transform",
]
