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


def test_unreachable_services_carry_where_they_were_looked_for() -> None:
    from featurestore.errors import StoreUnavailable, unreachable

    err = unreachable("Redis", "redis://:***@db:6379/0", "Connection refused.")
    assert isinstance(err, StoreUnavailable) and (err.service, err.address) == ("Redis", "redis://:***@db:6379/0")
    assert "FEATURESTORE_REDIS_URL" in str(err) and "Connection refused" in str(err)


def test_a_damaged_online_state_names_the_fix() -> None:
    import pytest

    from featurestore.compile import compile_repo
    from featurestore.online.layout import tile_sets
    from featurestore.online.state import StateBlock, StateCodec
    from tests.unit.test_decode import ROOT

    plan = compile_repo(ROOT / "feature_defs")
    view = plan.views[0]
    codec = StateCodec.of(tile_sets(view))
    with pytest.raises(featurestore.OnlineLayoutError, match="rebuild-online"):
        StateBlock([b"\x00" * 64], codec)
