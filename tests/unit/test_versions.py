"""View versions, pinned references, rollout services and the rule that a change of values
needs a new version: compile, plan validation, the registry and the variant assignment."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurestore.compile import compile_repo, unversioned_changes
from featurestore.errors import ValidationFailed
from featurestore.plan.rollout import assign, bucket, variant_of
from featurestore.plan.validate import validate_plan
from featurestore.registry import FileRegistry, PlanWatch

BASE = '''
from datetime import timedelta

from pydantic import AwareDatetime, BaseModel

from featurestore import Aggregation, Entity, FeatureService, FeatureView, Field, Guard, KafkaSource


class Ride(BaseModel):
    driver_id: int
    fare: float
    city: str
    ts: AwareDatetime


driver = Entity("driver", join_keys=["driver_id"])
rides = KafkaSource("rides", topic="rides", schema=Ride, timestamp_field="ts")

driver_stats = FeatureView(
    "driver_stats", entities=[driver], source=rides,
    features=[Aggregation("fare", "sum", windows=[timedelta(hours=1)]), Field("city")],
)
'''
V2 = '''
driver_stats_v2 = FeatureView(
    "driver_stats", version=2, entities=[driver], source=rides,{serving}
    features=[Aggregation("fare", "sum", windows=[timedelta(hours=1)]), Field("city"), Field("fare", name="last_fare")],
)
'''


def _repo(tmp_path: Path, *parts: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "defs.py").write_text(BASE + "".join(parts))
    return repo


def _problems(repo: Path) -> str:
    with pytest.raises(ValidationFailed) as exc:
        compile_repo(repo)
    return str(exc.value)


def test_versions_coexist_and_references_resolve(tmp_path: Path) -> None:
    plan = compile_repo(_repo(tmp_path, V2.replace("{serving}", "")))
    assert sorted(v.name for v in plan.views) == ["driver_stats", "driver_stats@2"]
    assert plan.serving == {} and plan.serving_version("driver_stats") == 1  # the lowest version serves by default
    assert plan.resolve_view("driver_stats").name == "driver_stats"
    assert plan.resolve_view("driver_stats@1").name == "driver_stats"
    assert plan.resolve_view("driver_stats@2").name == "driver_stats@2"
    assert validate_plan(plan) == []

    promoted = compile_repo(_repo(tmp_path, V2.replace("{serving}", " serving=True,")))
    assert promoted.serving == {"driver_stats": 2}
    assert promoted.resolve_view("driver_stats").name == "driver_stats@2"
    assert promoted.view("driver_stats").version == 1  # ids stay: version 1 keeps the bare name in keys and paths


def test_version_problems_say_what_to_do(tmp_path: Path) -> None:
    both = V2.replace("{serving}", " serving=True,") + '\ndriver_stats_v3 = FeatureView("driver_stats", version=3, ' \
        'entities=[driver], source=rides, serving=True, features=[Field("city")])\n'
    assert "all marked serving=True" in _problems(_repo(tmp_path, both))
    dup = V2.replace("{serving}", "") + V2.replace("{serving}", "").replace("driver_stats_v2 =", "again =") \
        .replace("last_fare", "fare_again")
    assert "duplicate FeatureView name" in _problems(_repo(tmp_path, dup))
    assert "version must be a whole number" in _problems(_repo(tmp_path, V2.replace("version=2", "version=0")
                                                               .replace("{serving}", "")))
    pinned = V2.replace("{serving}", "") + 'svc = FeatureService("svc", ["driver_stats@3:fare_sum_1h"])\n'
    assert "names no version 3 of view 'driver_stats'" in _problems(_repo(tmp_path, pinned))


ROLLOUT = '''
svc = FeatureService("svc", variants={{"control": ["driver_stats@1:fare_sum_1h"], "treatment": [{treatment}]}},
                     split={split})
'''


def test_rollout_services_compile_and_are_checked(tmp_path: Path) -> None:
    v2 = V2.replace("{serving}", "")
    ok = compile_repo(_repo(tmp_path, v2, ROLLOUT.format(treatment='"driver_stats@2:fare_sum_1h"', split='{"treatment": 0.1}')))
    svc = ok.service("svc")
    assert svc.control == "control" and svc.features == ["driver_stats@1:fare_sum_1h"] and svc.split == {"treatment": 0.1}
    assert svc.view_names == ["driver_stats"]
    cases = {
        ('"driver_stats@2:city"', '{"treatment": 0.1}'): "every variant lists the same feature names",
        ('"driver_stats@2:fare_sum_1h"', '{"treatment": 0.5, "control": 0.5}'): "exactly one variant must be left out",
        ('"driver_stats@2:fare_sum_1h"', '{"treatment": 1.5}'): "split shares must be numbers from 0 to 1",
        ('"driver_stats@2:fare_sum_1h"', '{"other": 0.1}'): "split names unknown variant",
    }
    for (treatment, split), message in cases.items():
        assert message in _problems(_repo(tmp_path, v2, ROLLOUT.format(treatment=treatment, split=split)))
    # the same rules hold for a plan received as JSON
    hostile = ok.model_copy(update={"services": [svc.model_copy(update={"split": {"treatment": 2.0}})]})
    assert any("split shares" in p.message for p in validate_plan(hostile))
    stray = ok.model_copy(update={"serving": {"driver_stats": 7}})
    assert any("serving version 7" in p.message for p in validate_plan(stray))


def test_variant_assignment_is_sticky_and_a_bigger_share_only_moves_control(tmp_path: Path) -> None:
    v2 = V2.replace("{serving}", "")
    plan = compile_repo(_repo(tmp_path, v2, ROLLOUT.format(treatment='"driver_stats@2:fare_sum_1h"', split='{"treatment": 0.1}')))
    svc = plan.service("svc")
    rows = [{"driver_id": i} for i in range(20_000)]
    first = assign(svc, ["driver_id"], rows)
    assert first == assign(svc, ["driver_id"], rows)
    assert 0.09 < first.count("treatment") / len(rows) < 0.11
    wider = assign(svc.model_copy(update={"split": {"treatment": 0.3}}), ["driver_id"], rows)
    assert all(b == "treatment" for a, b in zip(first, wider) if a == "treatment")
    assert 0.28 < wider.count("treatment") / len(rows) < 0.32
    assert bucket("svc", [("driver_id", 1)]) != bucket("other", [("driver_id", 1)])  # each service splits on its own
    assert variant_of(svc, 0.0) == "treatment" and variant_of(svc, 0.999) == "control"


def test_a_change_of_values_needs_a_new_version(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    registry = FileRegistry(tmp_path / "registry")
    registry.apply(compile_repo(repo))
    (repo / "defs.py").write_text((repo / "defs.py").read_text().replace("hours=1", "hours=3"))
    with pytest.raises(ValidationFailed, match="keeps version 1") as exc:
        registry.apply(compile_repo(repo))
    assert "version=2" in str(exc.value) and "--in-place" in str(exc.value)
    assert registry.apply(compile_repo(repo), in_place=True) is not None
    # owner, description and tags are not values; a new version is not a change of the old one
    (repo / "defs.py").write_text((repo / "defs.py").read_text().replace('Field("city")],', 'Field("city")], description="x",'))
    assert unversioned_changes(registry.current_plan(), compile_repo(repo)) == []
    (repo / "defs.py").write_text((repo / "defs.py").read_text() + V2.replace("{serving}", ""))
    assert registry.apply(compile_repo(repo)) is not None
    # restoring an older version is a rollback, never refused
    assert registry.restore(1) is not None


def test_a_plan_watch_sees_apply_and_restore(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    registry = FileRegistry(tmp_path / "registry")
    registry.apply(compile_repo(repo))
    watch = PlanWatch(registry, every_s=3600)
    first = watch.plan()
    assert watch.plan() is first
    (repo / "defs.py").write_text((repo / "defs.py").read_text() + V2.replace("{serving}", ""))
    registry.apply(compile_repo(repo))
    assert watch.plan() is first, "not looked at again before every_s"
    watch.check_now()
    second = watch.plan()
    assert second is not first and watch.version == 2 and len(second.views) == 2
    registry.restore(1)
    watch.check_now()
    assert watch.plan().content_hash == first.content_hash and watch.version == 3


def test_guards_compile_and_a_crossed_guard_is_reported_after_a_whole_window(tmp_path: Path) -> None:
    from featurestore.client.guards import GuardWatch
    from featurestore.client.responses import OnlineResponse

    v2 = V2.replace("{serving}", "")
    guarded = ROLLOUT.format(treatment='"driver_stats@2:fare_sum_1h"', split='{"treatment": 0.5}').rstrip()[:-1] + \
        ', guards=[Guard("null_rate", max=0.2), Guard("mismatch_rate", max=0.5, feature="fare_sum_1h")], ' \
        'guard_window=timedelta(seconds=10))\n'
    svc = compile_repo(_repo(tmp_path, v2, guarded)).service("svc")
    assert [g.metric for g in svc.guards] == ["null_rate", "mismatch_rate"] and svc.guard_window_ms == 10_000
    bad = guarded.replace('feature="fare_sum_1h"', 'feature="nope"')
    assert "guard names feature 'nope'" in _problems(_repo(tmp_path, v2, bad))
    assert "unknown guard metric" in _problems(_repo(tmp_path, v2, guarded.replace('"null_rate"', '"nulls"')))

    def response(values: list[float | None]) -> OnlineResponse:
        n = len(values)
        return OnlineResponse({"fare_sum_1h": values}, {"fare_sum_1h": ["present"] * n}, {"fare_sum_1h": [1000] * n},
                              2000, variants=["treatment"] * (n // 2) + ["control"] * (n - n // 2))

    watch = GuardWatch()
    healthy, broken = response([1.0] * 40), response([None] * 20 + [1.0] * 20)  # treatment rows all null
    watch.observe(svc, healthy, {"fare_sum_1h": (20, 0)}, now=0.0)
    assert watch.crossed(svc, now=0.0) is None
    watch.observe(svc, broken, {"fare_sum_1h": (20, 0)}, now=5.0)
    assert watch.crossed(svc, now=5.0) is None, "not before a whole window"
    watch.observe(svc, broken, {"fare_sum_1h": (20, 0)}, now=12.0)  # the healthy response left the window
    crossed = watch.crossed(svc, now=12.0)
    assert crossed is not None and crossed[0].metric == "null_rate" and "null_rate 1 > 0.2" in crossed[1]
    watch.reset("svc")
    watch.observe(svc, healthy, {"fare_sum_1h": (20, 15)}, now=20.0)
    watch.observe(svc, healthy, {"fare_sum_1h": (20, 15)}, now=31.0)
    crossed = watch.crossed(svc, now=31.0)
    assert crossed is not None and crossed[0].metric == "mismatch_rate"
