"""Request-time features: compile-time checks, per-value failures, the time budget, and how
an online answer carries them (pure logic; tests/integration/test_request_features.py reads
them through real services)."""

from __future__ import annotations

import shutil
import textwrap
import threading
from pathlib import Path

import pytest

from featurestore.client.online_query import OnlineQuery
from featurestore.client.request_time import RequestFeatureRunner, checked
from featurestore.compile import compile_repo
from featurestore.errors import FeatureRequestError, ValidationFailed
from featurestore.online.reader import ViewResult

ROOT = Path(__file__).resolve().parents[2]

CHECKS = '''
import time

from pydantic import BaseModel

from featurestore import RequestFeature, RequestFeatureView, RequestSource


class Req(BaseModel):
    amount: float
    note: str = ""


req = RequestSource("req", schema=Req)


def ratio(amount: float, amount_mean_1d: float | None) -> float | None:
    return None if not amount_mean_1d else amount / amount_mean_1d


def fails(amount: float) -> float:
    if amount > 100:
        raise ValueError("too big")
    return amount


def wrong_type(amount: float) -> float:
    return "a string" if amount > 100 else amount  # type: ignore[return-value]  # the wrong type on purpose


def runaway(amount: float) -> float:
    while amount > 100:
        pass
    return amount


def sleeps(amount: float) -> float:
    if amount > 100:
        time.sleep(5)
    return amount


def doubled(ratio: float | None) -> float | None:
    return None if ratio is None else 2 * ratio


checks = RequestFeatureView("checks", request=req, features=[
    RequestFeature("ratio", ratio, inputs=["user_payments:amount_mean_1d"]),
    RequestFeature("fails", fails),
    RequestFeature("wrong_type", wrong_type),
    RequestFeature("runaway", runaway),
    RequestFeature("sleeps", sleeps),
    RequestFeature("doubled", doubled, inputs=["checks:ratio"]),
])
'''


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "feature_defs", repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    (repo / "checks.py").write_text(CHECKS)
    return repo


def _runner(repo: Path, budget_ms: float | None = 100) -> RequestFeatureRunner:
    return RequestFeatureRunner(compile_repo(repo), repo, budget_ms)


def test_each_failure_is_one_values_error_and_the_rest_is_answered(repo: Path) -> None:
    runner = _runner(repo)
    refs, stored = runner.closure(["checks:fails", "checks:wrong_type", "checks:runaway", "checks:sleeps", "checks:doubled"])
    assert refs.index("checks:ratio") < refs.index("checks:doubled") and stored == ["user_payments:amount_mean_1d"]
    request = {"req": runner.request_rows("req", [{}, {}], {"amount": [50.0, 500.0]})}
    done = runner.compute(refs, 2, request, {"user_payments:amount_mean_1d": [25.0, None]})
    assert done["checks:fails"].values == [50.0, None] and done["checks:fails"].errors == [None, "ValueError: too big"]
    assert done["checks:wrong_type"].errors[1] == "returned str 'a string', expected float"
    for name in ("runaway", "sleeps"):  # stopped by the budget, not awaited
        assert done[f"checks:{name}"].values == [50.0, None]
        assert done[f"checks:{name}"].errors[1] == "ran longer than its budget of 100 ms"
    assert done["checks:ratio"].values == [2.0, None] and done["checks:doubled"].values == [4.0, None]


def test_the_budget_holds_off_the_main_thread_too(repo: Path) -> None:
    runner = _runner(repo, budget_ms=100)
    got: dict = {}

    def read() -> None:
        request = {"req": runner.request_rows("req", [{"amount": 500.0}], None)}
        got.update(runner.compute(["checks:sleeps"], 1, request, {}))

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(timeout=3)
    assert not thread.is_alive() and got["checks:sleeps"].errors == ["ran longer than its budget of 100 ms"]


def test_request_data_is_checked_by_the_request_model(repo: Path) -> None:
    runner = _runner(repo)
    with pytest.raises(FeatureRequestError, match="entity row 1 .* amount: Field required"):
        runner.request_rows("req", [{"amount": 1.0}, {}], None)
    with pytest.raises(FeatureRequestError, match="has 1 values for 2 entity rows"):
        runner.request_rows("req", [{}, {}], {"amount": [1.0]})
    assert runner.request_rows("req", [{"amount": "2.5"}, {}], {"amount": 3}) == {"amount": [2.5, 3.0], "note": ["", ""]}
    # a training set's columns: validated column by column, the same values and defaults
    assert runner.request_columns("req", {"amount": ["2.5", 3]}, 2) == {"amount": [2.5, 3.0], "note": ["", ""]}
    with pytest.raises(FeatureRequestError, match="entity row 1 .* amount: Input should be a valid number"):
        runner.request_columns("req", {"amount": [1.0, "x"]}, 2)
    with pytest.raises(FeatureRequestError, match="no column 'amount'"):
        runner.request_columns("req", {}, 2)


def test_an_online_answer_carries_error_statuses_with_their_reasons(repo: Path) -> None:
    plan = compile_repo(repo)
    runner = RequestFeatureRunner(plan, repo, 100)
    query = OnlineQuery.build(plan, ["user_payments:amount_count_1d", "checks:fails", "checks:ratio"],
                              [{"user_id": 1, "amount": 10.0}, {"user_id": 2, "amount": 200.0}], runner=lambda: runner)
    assert [(r.view.name, list(r.features)) for r in query.requests] == [
        ("user_payments", ["amount_count_1d", "amount_mean_1d"])], "the hidden input is read with the asked feature"
    result = ViewResult({"amount_count_1d": [3, 0], "amount_mean_1d": [5.0, None]}, [1000, 900], ["present", "present"])
    resp = query.response([result], 2000)
    assert resp.column_names == ["user_id", "amount_count_1d", "fails", "ratio"]
    assert resp.column("fails") == [10.0, None] and resp.status("fails") == ["present", "error"]
    assert resp.status_detail("fails") == [None, "ValueError: too big"]
    assert resp.column("ratio") == [2.0, None] and resp.status("ratio") == ["present", "null"]
    assert resp.status_detail("amount_count_1d") == [None, None]


@pytest.mark.parametrize(("code", "message"), [
    ("RequestFeature('x', ratio, inputs=['nope:amount_mean_1d'])", "input 'nope:amount_mean_1d' names no view"),
    ("RequestFeature('x', ratio, inputs=['user_payments:amount_mean_7d'])", "did you mean 'amount_mean_1d'"),
    ("RequestFeature('x', ratio)", "parameter 'amount_mean_1d' of checks:ratio is neither a field of the request model"),
    ("RequestFeature('x', fails, inputs=['user_payments:amount_mean_1d'])", "is not a parameter of checks:fails"),
    ("RequestFeature('x', lambda amount: amount)", "function must be a function defined at module level"),
    ("RequestFeature('x', untyped)", "must annotate its return type"),
    ("RequestFeature('x', loop_a, inputs=['bad:y']), RequestFeature('y', loop_b, inputs=['bad:x'])", "cycle"),
])
def test_bad_definitions_are_refused_at_compile_time(repo: Path, code: str, message: str) -> None:
    (repo / "checks.py").write_text(CHECKS + textwrap.dedent(f'''
        def untyped(amount):
            return amount


        def loop_a(y: float | None) -> float | None:
            return y


        def loop_b(x: float | None) -> float | None:
            return x


        bad = RequestFeatureView("bad", request=req, features=[{code}])
        '''))
    with pytest.raises(ValidationFailed) as exc:
        compile_repo(repo)
    assert any(message in str(p) for p in exc.value.problems), [str(p) for p in exc.value.problems]


def test_declared_types_are_enforced_on_results() -> None:
    import numpy as np

    assert checked(np.float64(1.5), "float") == (1.5, None) and checked(3, "float") == (3.0, None)
    assert checked(True, "int")[1] == "returned bool True, expected int"
    assert checked(np.int64(4), "int") == (4, None) and checked(None, "str") == (None, None)


def test_a_feature_service_may_bundle_request_time_features(repo: Path) -> None:
    (repo / "checks.py").write_text(CHECKS + '''
from featurestore import FeatureService

checked_model = FeatureService("checked_model", features=["user_payments:amount_count_1d", checks])
''')
    plan = compile_repo(repo)
    assert plan.service("checked_model").features[:3] == ["user_payments:amount_count_1d", "checks:ratio", "checks:fails"]
    runner = RequestFeatureRunner(plan, repo, 100)
    query = OnlineQuery.build(plan, None, [{"user_id": 1, "amount": 1.0}], service="checked_model", runner=lambda: runner)
    assert query.names[:3] == ["amount_count_1d", "ratio", "fails"] and "checks:doubled" in query.computed
