"""Request-time features through real services: the SDK's online read, a training set and
the HTTP server give the same values for the same rows (property test), and the server
authorizes what a request-time feature reads."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore import FeatureStore
from tests.integration.server_harness import Deployment, get, post

pytestmark = pytest.mark.integration

FEATURES = ["user_payments:amount_mean_1d", "payment_checks:amount_vs_1d_mean"]


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
        return (a is None or (isinstance(a, float) and math.isnan(a))) and (b is None or (isinstance(b, float) and math.isnan(b)))
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(users=st.lists(st.integers(1, 12), min_size=1, max_size=6),
       amounts=st.lists(st.floats(0.01, 50_000, allow_nan=False), min_size=6, max_size=6),
       minutes_after=st.integers(0, 90))
def test_online_training_and_http_agree(deployment: Deployment, users: list[int], amounts: list[float],
                                        minutes_after: int) -> None:
    """Users 11 and 12 have no events (None inputs); the instant moves across the stream."""
    newest = max(dt.datetime.fromisoformat(r.event["ts"]) for r in deployment.records if r.event)
    at = newest + dt.timedelta(minutes=minutes_after)
    rows = [{"user_id": u, "amount": a} for u, a in zip(users, amounts)]
    online = deployment.direct.get_online_features(FEATURES, rows, at=at)
    frame = pd.DataFrame({"user_id": users, "amount": amounts[: len(users)], "event_timestamp": [at] * len(users)})
    offline = deployment.direct.get_historical_features(frame, FEATURES).to_pandas()
    answer = post(deployment, "/v1/features/online", {"features": FEATURES, "entities": {"user_id": users},
                  "request_data": {"amount": amounts[: len(users)]}, "at_ms": int(at.timestamp() * 1000)}, "admin")
    assert answer.status == 200, answer.data
    served = answer.json()["features"]
    for name in ("amount_mean_1d", "amount_vs_1d_mean"):
        got = online.column(name)
        assert served[name]["values"] == got, "HTTP and the SDK read the same Redis with the same code"
        assert all(_same(a, b) for a, b in zip(got, offline[name].tolist())), (name, got, offline[name].tolist())
    assert online.status("amount_vs_1d_mean") == ["present" if v is not None else "null" for v in online.column("amount_vs_1d_mean")]


def test_the_sdk_through_the_server_gets_the_same_answer(deployment: Deployment) -> None:
    rows = [{"user_id": 1}, {"user_id": 2}]
    remote = FeatureStore(deployment.repo, server_url=deployment.url, token=deployment.tokens["admin"])
    try:
        got = remote.get_online_features(FEATURES, rows, request_data={"amount": [10.0, 20.0]})
    finally:
        remote.close()
    want = deployment.direct.get_online_features(FEATURES, rows, request_data={"amount": [10.0, 20.0]})
    assert got.to_dict() == want.to_dict() and got.status("amount_vs_1d_mean") == want.status("amount_vs_1d_mean")


def test_missing_request_data_is_a_clear_400_and_permissions_cover_the_inputs(deployment: Deployment) -> None:
    body = {"features": ["payment_checks:amount_vs_1d_mean"], "entities": {"user_id": [1]}}
    missing = post(deployment, "/v1/features/online", body, "admin")
    assert missing.status == 400 and "amount: Field required" in missing.json()["error"]["message"]
    with_amount = dict(body, request_data={"amount": 12.5})
    assert post(deployment, "/v1/features/online", with_amount, "admin").status == 200
    # user_payments alone does not cover payment_checks; payment_checks alone would not cover its input
    assert post(deployment, "/v1/features/online", with_amount, "user_reader").status == 403


def test_the_registry_lists_request_views_to_tokens_that_may_read_them(deployment: Deployment) -> None:
    admin = get(deployment, "/v1/registry", "admin").json()
    assert [v["name"] for v in admin["request_views"]] == ["payment_checks"]
    assert admin["request_views"][0]["features"][0]["inputs"][1]["feature"] == "user_payments:amount_mean_1d"
    assert get(deployment, "/v1/registry", "user_reader").json()["request_views"] == []
