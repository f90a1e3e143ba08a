"""Hostile plans, names and code references, refused before they reach a path, SQL or an import
(pure logic: no services)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.errors import ConfigError, RegistryError
from featurestore.offline.history import HistoryWriter, view_dir
from featurestore.offline.point_in_time import point_in_time_features
from featurestore.plan import Plan
from featurestore.plan.validate import code_refs, validate_plan
from featurestore.records import ViewRows
from featurestore.runtime.decode import Decoder, RawRecord
from featurestore.runtime.imports import import_object
from featurestore.server.app import ServeOptions
from featurestore.server.auth import Permission, TokenStore
from tests.plan_mutations import string_slots

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "feature_defs"
PLAN = compile_repo(EXAMPLE)
PLAN_JSON: dict[str, Any] = PLAN.model_dump(mode="json")


def _plan(mutate: Any) -> dict[str, Any]:
    data = orjson.loads(orjson.dumps(PLAN_JSON))
    mutate(data)
    return data


def _problems(data: dict[str, Any]) -> list[str]:
    """Every reason a plan given as JSON is refused: schema errors, then plan problems."""
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        return [str(e["msg"]) for e in exc.errors()]
    return [str(p) for p in validate_plan(plan)]


def test_compiled_plans_pass_the_plan_check() -> None:
    assert validate_plan(PLAN) == []
    assert code_refs(PLAN) == {"sources:Payment", "transforms:amount_eur", "transforms:is_large",
                               "request_features:PaymentRequest", "request_features:amount_vs_1d_mean"}


def test_request_views_must_read_what_exists_without_cycles() -> None:
    def unknown_input(d: dict[str, Any]) -> None:
        d["request_views"][0]["features"][0]["inputs"][1]["feature"] = "user_payments:nope"

    def cycle(d: dict[str, Any]) -> None:
        d["request_views"][0]["features"][0]["inputs"][1]["feature"] = "payment_checks:amount_vs_1d_mean"

    def unknown_field(d: dict[str, Any]) -> None:
        d["request_views"][0]["features"][0]["inputs"][0]["field"] = "tip"

    assert any("names no feature of the plan" in str(p) for p in _problems(_plan(unknown_input)))
    assert any("cycle" in str(p) for p in _problems(_plan(cycle)))
    assert any("not a field of request source" in str(p) for p in _problems(_plan(unknown_field)))


def test_code_hashes_name_only_the_plans_own_code() -> None:
    def stray(d: dict[str, Any]) -> None:
        d["code"]["os:system"] = "0" * 64

    assert any("import paths the plan does not name: os:system" in str(p) for p in _problems(_plan(stray)))


@pytest.mark.parametrize("name", [
    "x') UNION ALL BY NAME SELECT * FROM read_text('/etc/hostname') --", "../../../../elsewhere/x", "a:b", "a/b", "a.b",
    "_hidden", "", "a b", "é", "x" * 129,
])
def test_names_that_reach_paths_sql_or_keys_are_refused(name: str) -> None:
    def rename(d: dict[str, Any]) -> None:
        d["views"][1]["name"] = name

    assert _problems(_plan(rename)), f"view name {name!r} accepted"
    with pytest.raises(RegistryError):
        view_dir(Path("/tmp/offline"), name)


def test_duplicates_unknown_references_and_wrong_tiles_are_refused() -> None:
    def dup_view(d: dict[str, Any]) -> None:
        twin = dict(d["views"][1], tags={})
        d["views"].append(twin)

    def ghost_source(d: dict[str, Any]) -> None:
        d["views"][0]["source"] = "ghost"

    def bad_tile(d: dict[str, Any]) -> None:
        d["views"][0]["aggregations"][0]["tile_ms"] = 7

    def bad_service(d: dict[str, Any]) -> None:
        d["services"][0]["features"].append("merchant_payments:nope")

    def bad_type(d: dict[str, Any]) -> None:
        d["views"][0]["aggregations"][0]["function"] = "sum"
        d["views"][0]["aggregations"][0]["dtype"] = "str"

    for mutate, expected in ((dup_view, "duplicate FeatureView"), (ghost_source, "unknown source"), (bad_tile, "tile_ms"),
                             (bad_service, "names no feature"), (bad_type, "not a str field")):
        problems = _problems(_plan(mutate))
        assert any(expected in p for p in problems), (expected, problems)


@pytest.mark.parametrize("ref", ["this:s", "builtins:print", "sys:exit", "os:system", "json:loads", "featurestore.cli.main:main"])
def test_the_runtime_imports_only_the_repositorys_own_code(ref: str) -> None:
    before = set(sys.modules)
    with pytest.raises(RegistryError, match="not a module of the feature repository|standard library"):
        import_object(ref, EXAMPLE)
    assert "this" not in set(sys.modules) - before, "nothing was imported to find out"


def test_a_malformed_code_reference_is_refused() -> None:
    for ref in ("transforms", "transforms:amount_eur; import os", "../x:y", "transforms:"):
        with pytest.raises(RegistryError):
            import_object(ref, EXAMPLE)
    assert callable(import_object("transforms:amount_eur", EXAMPLE))


def test_a_failing_transform_costs_only_the_views_that_use_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    (repo / "transforms.py").write_text((repo / "transforms.py").read_text() + '''

_original_amount_eur = amount_eur


def amount_eur(event: Payment) -> float:  # noqa: F811
    if event.currency == "XXX":
        raise ValueError("no rate for XXX")
    return _original_amount_eur(event)
''')
    plan = compile_repo(repo)
    decoder = Decoder(plan, plan.source("payments"), repo, max_future_skew_ms=300_000)
    now = int(dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc).timestamp() * 1000)

    def event(currency: str) -> bytes:
        return orjson.dumps({"payment_id": "p", "user_id": 7, "merchant_id": "m1", "amount": 10.0, "currency": currency,
                             "country": "US", "ts": "2026-01-01T11:59:00+00:00"})

    rows, dead = decoder.decode([RawRecord(0, 1, None, event("USD")), RawRecord(0, 2, None, event("XXX"))], now)
    by_view = {r.view: r for r in rows}
    assert by_view["merchant_payments"].offset == [1, 2], "the merchant view does not use the transform: it takes both"
    assert by_view["user_payments"].offset == [1], "the user view uses it: it loses the failing event only"
    assert [(d.offset, d.reason, d.kept) for d in dead] == [(2, "transform_error", True)]
    assert "user_payments.amount_eur: ValueError: no rate for XXX" in dead[0].detail


def test_history_sql_quotes_paths(tmp_path: Path) -> None:
    root = tmp_path / "off'line) UNION SELECT 1 --"
    view = PLAN.view("merchant_payments")
    writer = HistoryWriter(root, PLAN)
    rows = ViewRows(view="merchant_payments", topic="payments", keys=[("m1",)], ts=[1_000], partition=[0], offset=[0],
                    values={"amount": [5.0]}, processed_at_ms=1_000)
    writer.append(rows)
    writer.flush()
    got = point_in_time_features(root, view, ["amount_count_1h"], pa.table({"merchant_id": ["m1"]}), pa.array([2_000], pa.int64()))
    assert got.column("amount_count_1h").to_pylist() == [1]


def _create(path: str, n: int) -> None:
    store = TokenStore(path)
    for i in range(n):
        store.create(f"t{i}", [Permission.parse("read_online:*")])


def test_concurrent_creates_and_revokes_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "tokens.json")
    store = TokenStore(path)
    victims = [store.create(f"v{i}", [Permission.parse("admin")])[1].id for i in range(20)]

    ctx = multiprocessing.get_context("fork")
    creators = [ctx.Process(target=_create, args=(path, 25)) for _ in range(4)]
    for p in creators:
        p.start()
    for token_id in victims:  # revocations race with the creates
        TokenStore(path).revoke(token_id)
    for p in creators:
        p.join(60)
        assert p.exitcode == 0
    records = TokenStore(path).records()
    assert len(records) == 20 + 4 * 25, "no create lost"
    assert {r.id for r in records if not r.active} == set(victims), "no revocation undone"


def test_no_setting_turns_auth_off_on_a_public_address() -> None:
    with pytest.raises(ConfigError, match="refusing to serve without authentication on 0.0.0.0"):
        ServeOptions(repo=Path("."), host="0.0.0.0", auth=False).check()
    ServeOptions(repo=Path("."), host="127.0.0.1", auth=False).check()
    code = "from featurestore.server.app import app_from_environment; app_from_environment()"
    env = {"FEATURESTORE_SERVE_OPTIONS": orjson.dumps({"repo": str(EXAMPLE), "host": "0.0.0.0", "auth": False}).decode(),
           "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "refusing to serve without authentication" in res.stderr


def test_security_settings_win_over_kafka_options(tmp_path: Path) -> None:
    for key in ("security.protocol", "ssl.endpoint.identification.algorithm", "sasl.mechanism"):
        with pytest.raises(ConfigError, match="transport security"):
            load_settings(tmp_path, kafka_options={key: "x"})
    from featurestore.runtime.kafka import consumer_config

    conf = consumer_config(load_settings(tmp_path, kafka_options={"fetch.wait.max.ms": 3}))
    assert conf["fetch.wait.max.ms"] == 3 and conf["security.protocol"] == "PLAINTEXT"


_hostile_text = st.one_of(
    st.text(max_size=40), st.sampled_from(["../x", "a:b", "x'); DROP TABLE t; --", "sys:exit", "builtins:eval", "", "_x"])
)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_hostile_plan_mutations_never_pass_unless_still_valid(data: st.DataObject) -> None:
    """Replace any one string of the plan with hostile text: the plan check either refuses it or the
    result still names only safe names and the code the original named."""
    doc = orjson.loads(orjson.dumps(PLAN_JSON))
    node, key = data.draw(st.sampled_from(string_slots(doc)))
    node[key] = data.draw(_hostile_text)
    if _problems(doc):
        return
    plan = Plan.model_validate(doc)
    assert code_refs(plan) <= code_refs(PLAN) or all(":" in r and "/" not in r for r in code_refs(plan))
    for v in plan.views:
        view_dir(Path("/tmp/offline"), v.name)  # raises for an unsafe name
