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


def test_every_error_and_definition_is_importable_from_the_root() -> None:
    import inspect

    import featurestore.definitions as definitions
    import featurestore.errors as errors

    raised = {n for n, o in vars(errors).items() if inspect.isclass(o) and issubclass(o, errors.FeatureStoreError)}
    assert raised <= set(featurestore.__all__), raised - set(featurestore.__all__)
    defined = {n for n in definitions.__all__ if inspect.isclass(getattr(definitions, n))}
    assert defined <= set(featurestore.__all__) | {"Feature"}, defined - set(featurestore.__all__)
    assert not [n for n in featurestore.__all__ if n.startswith("_") and n != "__version__"]


def test_one_mapping_between_errors_and_http_statuses() -> None:
    from featurestore.errors import AuthError, FeatureRequestError, StoreUnavailable, error_of_status

    for status, cls in ((400, FeatureRequestError), (403, AuthError), (503, StoreUnavailable)):
        err = error_of_status(status, "m")
        assert type(err) is cls and err.http_status == status
    assert featurestore.ValidationFailed([]).http_status == 422 and featurestore.RegistryError().http_status == 503
