"""The FeatureStore SDK: online reads from Redis, training sets from the Parquet history."""

from featurestore.client.feature_store import FeatureStore
from featurestore.client.responses import OnlineResponse, TrainingSet

__all__ = ["FeatureStore", "OnlineResponse", "TrainingSet"]
