"""The public API is re-exported from the package root and __all__ is complete."""

from __future__ import annotations

import featurestore


def test_all_names_resolve() -> None:
    for name in featurestore.__all__:
        assert getattr(featurestore, name) is not None, name


def test_contract_names_are_public() -> None:
    for name in ("Entity", "KafkaSource", "FeatureView", "Aggregation", "Field", "Transform", "FeatureStore"):
        assert name in featurestore.__all__


def test_public_classes_are_exported() -> None:
    public = {n for n in dir(featurestore) if not n.startswith("_") and isinstance(getattr(featurestore, n), type)}
    assert public <= set(featurestore.__all__), public - set(featurestore.__all__)
