"""The attacks of a narrow token against a running feature server, each refused (or limited),
audited, and leaving the registry as it was."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import orjson
import pytest
import urllib3

from featurestore.plan import Plan
from featurestore.plan.validate import code_refs
from featurestore.registry import FileRegistry
from tests.integration.server_harness import Deployment, audit_lines, get, post
from tests.plan_mutations import string_slots

pytestmark = pytest.mark.integration


def _current(deployment: Deployment) -> dict[str, Any]:
    latest = FileRegistry(deployment.repo / ".featurestore" / "registry").latest()
    assert latest is not None
    return latest.plan.model_dump(mode="json")


def _versions(deployment: Deployment) -> int:
    return len(FileRegistry(deployment.repo / ".featurestore" / "registry").versions())


def _view(plan: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in plan["views"] if v["name"] == name)


def _apply(deployment: Deployment, plan: dict[str, Any], token: str = "applier") -> Any:
    return post(deployment, "/v1/apply", {"plan": plan}, token)


def _message(resp: Any) -> str:
    return str(orjson.loads(resp.data)["error"]["message"])


@pytest.mark.parametrize("udf", ["this:s", "builtins:print", "sys:exit", "transforms:amount_eur_v2"])
def test_h1_a_plan_over_http_cannot_name_new_code(deployment: Deployment, udf: str) -> None:
    before = _versions(deployment)
    for token in ("applier", "admin"):  # not even an admin: code arrives with the repository
        plan = _current(deployment)
        feature = next(f for f in _view(plan, "user_payments")["row_features"] if f["kind"] == "transform")
        feature["udf_ref"] = udf
        resp = _apply(deployment, plan, token)
        assert resp.status in (403, 422), (token, resp.status, resp.data)
        if resp.status == 422:
            assert "code" in _message(resp) or "pattern" in _message(resp)
    assert _versions(deployment) == before


def test_h2_a_smuggled_duplicate_view_is_refused(deployment: Deployment) -> None:
    before = _versions(deployment)
    plan = _current(deployment)
    twin = dict(_view(plan, "user_payments"), tags={"domain": "payments"})
    plan["views"].append(twin)
    resp = _apply(deployment, plan)
    assert resp.status == 422 and "duplicate FeatureView" in _message(resp)
    assert _versions(deployment) == before


def test_h3_repointing_a_service_needs_apply_on_what_it_read(deployment: Deployment) -> None:
    before = _versions(deployment)
    plan = _current(deployment)
    service = next(s for s in plan["services"] if s["name"] == "fraud_model_v1")
    service["features"] = ["merchant_payments:amount_count_1h"]
    resp = _apply(deployment, plan)
    assert resp.status == 403, resp.data
    assert "user_payments" not in _message(resp), "the refusal names nothing the token cannot see"
    assert _versions(deployment) == before
    # the token's own view: allowed, and the diff is the whole story
    plan = _current(deployment)
    _view(plan, "merchant_payments")["description"] = "Traffic at each merchant (edited)."
    resp = _apply(deployment, plan)
    assert resp.status == 200, resp.data
    assert orjson.loads(resp.data)["changes"][0].startswith("~ FeatureView merchant_payments")
    assert _versions(deployment) == before + 1


@pytest.mark.parametrize("name", ["x') UNION ALL BY NAME SELECT * FROM read_text('/etc/hostname') --",
                                  "../../../../elsewhere/x", "merchant:payments"])
def test_h4_m1_names_cannot_reach_sql_paths_or_keys(deployment: Deployment, name: str) -> None:
    before = _versions(deployment)
    plan = _current(deployment)
    _view(plan, "merchant_payments")["name"] = name
    resp = _apply(deployment, plan, "admin")
    assert resp.status == 422 and "name" in _message(resp)
    historical = {"features": [f"{name}:amount_count_1h"], "entities": {"merchant_id": ["m1"], "event_timestamp": [0]}}
    resp = post(deployment, "/v1/features/historical", historical, "admin")
    assert resp.status == 422 and "hostname" not in resp.data.decode(errors="replace").replace(name, "")
    assert _versions(deployment) == before
    assert not (deployment.repo.parent / "elsewhere").exists()


def test_m2_refusals_reveal_no_views(deployment: Deployment) -> None:
    plan = _current(deployment)
    plan["views"] = [v for v in plan["views"] if v["name"] != "user_payments"]
    plan["services"] = [s for s in plan["services"] if s["name"] != "fraud_model_v1"]
    plan["request_views"] = [v for v in plan.get("request_views", []) if not any(
        (i.get("feature") or "").startswith("user_payments:") for f in v["features"] for i in f["inputs"])]
    named = code_refs(Plan.model_validate({**plan, "code": {}}))  # the code hashes of what is left
    plan["code"] = {ref: h for ref, h in plan.get("code", {}).items() if ref in named}
    resp = _apply(deployment, plan)
    assert resp.status == 403 and "user_payments" not in _message(resp) and "fraud" not in _message(resp)
    resp = post(deployment, "/v1/features/online", {"features": ["user_payments"], "entities": {"user_id": [1]}}, "tag_reader")
    assert resp.status == 422 and "merchant_payments" not in _message(resp)


def test_m3_limits_apply_before_work(deployment: Deployment) -> None:
    big = b'{"features": ["user_payments:last_country"], "entities": {"user_id": [' + b"1," * 25_000_000 + b"1]}}"
    headers = {"Content-Type": "application/json"}
    resp = urllib3.request("POST", deployment.url + "/v1/features/online", body=big, headers=headers, retries=False)
    assert resp.status == 401, "no token: refused before the body is read"
    headers["Authorization"] = f"Bearer {deployment.tokens['user_reader']}"
    resp = urllib3.request("POST", deployment.url + "/v1/features/online", body=big, headers=headers, retries=False)
    assert resp.status == 413 and "max_request_bytes" in _message(resp)
    many = {"features": ["user_payments:last_country"], "entities": {"user_id": list(range(10_001))}}
    resp = post(deployment, "/v1/features/online", many, "user_reader")
    assert resp.status == 413 and "max_online_entities" in _message(resp)
    rows = {"features": ["user_payments:last_country"], "entities": {"user_id": [1] * 100_001, "event_timestamp": [0] * 100_001}}
    resp = post(deployment, "/v1/features/historical", rows, "offline_reader")
    assert resp.status == 413 and "max_historical_rows" in _message(resp)
    assert get(deployment, "/v1/health", None).status == 200


def test_l1_every_answer_is_audited_with_its_final_status(deployment: Deployment) -> None:
    before = len(audit_lines(deployment))
    now_ms = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    cases: list[tuple[dict[str, Any], int]] = [
        ({"features": ["user_payments:last_country"], "entities": {"user_id": [2**70]}}, 422),
        ({"features": ["user_payments:last_country"], "entities": {"user_id": [{"nested": [1]}]}}, 422),
        ({"features": ["user_payments:last_country"], "entities": {"user_id": [1]}, "at_ms": 10**20}, 422),
        ({"features": ["user_payments:last_country"], "entities": {"user_id": [1]}, "at_ms": now_ms}, 200),
        ({"features": ["user_payments:last_country"], "entities": {"user_id": ["secret-key-value"]}}, 400),
    ]
    for body, status in cases:
        resp = post(deployment, "/v1/features/online", body, "user_reader")
        assert resp.status == status, (body, resp.status, resp.data)
    bad_json = urllib3.request("POST", deployment.url + "/v1/features/historical", body=b"{" * 100_000, retries=False,
                               headers={"Content-Type": "application/json",
                                        "Authorization": f"Bearer {deployment.tokens['offline_reader']}"})
    assert bad_json.status == 422
    historical = {"features": ["user_payments:last_country"], "entities": {"user_id": [1], "event_timestamp": ["year 99999"]}}
    assert post(deployment, "/v1/features/historical", historical, "offline_reader").status == 400
    lines = audit_lines(deployment)[before:]
    assert [line["status"] for line in lines] == [s for _, s in cases] + [422, 400]
    assert all(line["latency_ms"] >= 0 and line["token_id"] for line in lines)
    assert "secret-key-value" not in json.dumps(lines), "reasons never carry key values of pii views"


def test_l2_edges_host_content_type_ready_docs(deployment: Deployment) -> None:
    ready = urllib3.request("GET", deployment.url + "/v1/ready", retries=False)
    assert ready.status == 200 and orjson.loads(ready.data) == {"status": "ready"}
    auth = {"Authorization": f"Bearer {deployment.tokens['user_reader']}"}
    body = orjson.dumps({"features": ["user_payments:last_country"], "entities": {"user_id": [1]}})
    rebound = urllib3.request("POST", deployment.url + "/v1/features/online", body=body, retries=False,
                              headers={**auth, "Content-Type": "application/json", "Host": "attacker.example:6566"})
    assert rebound.status == 421
    plain = urllib3.request("POST", deployment.url + "/v1/features/online", body=body, retries=False,
                            headers={**auth, "Content-Type": "text/plain"})
    assert plain.status == 415
    assert urllib3.request("GET", deployment.url + "/docs", headers=auth, retries=False).status == 404
    assert urllib3.request("GET", deployment.url + "/openapi.json", retries=False).status == 200
    assert [line["status"] for line in audit_lines(deployment)[-4:]] == [421, 415, 404, 200]


_HOSTILE = ["../x", "a:b", "x'); DROP TABLE t; --", "sys:exit", "builtins:eval", "", "_x", "é", "{}", "0" * 300]


def test_hostile_plans_over_http_are_refused_and_leave_the_registry(deployment: Deployment) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from featurestore.plan import Plan
    from featurestore.plan.names import is_name
    from featurestore.plan.validate import code_refs

    original = _current(deployment)
    allowed_code = code_refs(Plan.model_validate(original))

    @settings(max_examples=40, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def attack(data: st.DataObject) -> None:
        plan = _current(deployment)
        node, key = data.draw(st.sampled_from(string_slots(plan)))
        node[key] = data.draw(st.sampled_from(_HOSTILE) | st.text(max_size=20))
        if data.draw(st.booleans()):
            plan["views"].append(data.draw(st.sampled_from(plan["views"])))  # a smuggled duplicate
        before = _versions(deployment)
        resp = _apply(deployment, plan, data.draw(st.sampled_from(["applier", "admin"])))
        assert resp.status in (200, 403, 422), (resp.status, resp.data)
        if resp.status != 200:
            assert _versions(deployment) == before, "a refused plan changes nothing"
            return
        applied = Plan.model_validate(_current(deployment))  # accepted: only a harmless edit
        assert code_refs(applied) <= allowed_code
        assert all(is_name(v.name) for v in applied.views) and len({v.name for v in applied.views}) == len(applied.views)

    attack()
