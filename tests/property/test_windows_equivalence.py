"""Property tests of the window semantics, every aggregation at once.

Random event streams (out of order, some later than the allowed lateness, some records
malformed) and random read instants. For every feature:
- backfill -> Redis (online read) == brute-force reference over the events that were not late;
- backfill -> Parquet -> DuckDB "corrected" == reference over all events, at any instant;
- DuckDB as the online store holds it (late events excluded) == reference, at any instant;
- streaming the same events through a Kafka topic == backfilling them: same online values,
  same history, same dead letters.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest
import redis
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.offline.point_in_time import point_in_time_features
from featurestore.online.entity_value import unpack_value
from featurestore.online.reader import OnlineReader, ViewRequest
from featurestore.plan import Plan
from featurestore.runtime.backfill import Backfill
from featurestore.runtime.dead_letters import ERROR
from featurestore.runtime.kafka import ensure_topics, producer_config
from featurestore.runtime.processor import StreamProcessor
from featurestore.runtime.rebuild import rebuild_view
from tests.conftest import FAST_GROUP, Services, read_dead_letters
from tests.property.reference import Agg, Event, aggregate, close, late_flags

pytestmark = pytest.mark.integration

LATENESS_MS = 90_000
HLL_REL = 3 * 0.0081
DEFS = '''
from datetime import timedelta

from pydantic import AwareDatetime, BaseModel

from featurestore import LIFETIME, Aggregation, Entity, FeatureView, KafkaSource


class PropEvent(BaseModel):
    user_id: int
    n: int
    x: float
    label: str
    flag: bool
    ts: AwareDatetime


user = Entity("user", join_keys=["user_id"])
events = KafkaSource("events", topic="prop-events", schema=PropEvent, timestamp_field="ts")
W = [timedelta(minutes=1), timedelta(hours=1), LIFETIME]
props = FeatureView(
    "props",
    entities=[user],
    source=events,
    allowed_lateness=timedelta(milliseconds=%d),
    features=[Aggregation("n", f, windows=W) for f in ("count", "sum", "mean", "min", "max", "stddev", "variance")]
    + [
        Aggregation("x", "sum", windows=W),
        Aggregation("x", "max", windows=W),
        Aggregation("label", "first", windows=W),
        Aggregation("label", "last", windows=W),
        Aggregation("label", "last_n", k=3, windows=W),
        Aggregation("label", "count_distinct", windows=W),
        Aggregation("n", "sum", windows=W, where="flag", name="flagged_n"),
        Aggregation("n", "count", windows=W, where="flag", name="flagged"),
    ],
)
# lifetime only, no lateness limit: old one-day tiles are folded into a base tile
lifetimes = FeatureView(
    "lifetimes",
    entities=[user],
    source=events,
    features=[Aggregation("n", f, windows=[LIFETIME]) for f in ("count", "sum", "min", "max", "variance")]
    + [Aggregation("label", f, windows=[LIFETIME]) for f in ("first", "last", "count_distinct")]
    + [Aggregation("label", "last_n", k=4, windows=[LIFETIME]), Aggregation("x", "sum", windows=[LIFETIME])],
)
''' % LATENESS_MS

BASE = int(dt.datetime(2026, 11, 20, 12, 0, 0, 250_000, tzinfo=dt.timezone.utc).timestamp() * 1000)


def _with_topic(plan: Plan, topic: str) -> Plan:
    sources = [s.model_copy(update={"topic": topic, "dead_letter_topic": f"{topic}.dlq"}) for s in plan.sources]
    return plan.model_copy(update={"sources": sources})


# -- generated streams ---------------------------------------------------------------------------
@st.composite
def streams(draw: st.DrawFn) -> tuple[list[dict[str, Any] | None], list[int]]:
    """Events in arrival order (None: a malformed record) and read instants (ms offsets from BASE)."""
    n = draw(st.integers(1, 70))
    t = draw(st.integers(0, 59_999))
    out: list[dict[str, Any] | None] = []
    for _ in range(n):
        if draw(st.integers(0, 19)) == 0:
            out.append(None)
            continue
        t = max(0, t + draw(st.one_of(st.integers(0, 150_000), st.integers(-400_000, 0))))
        out.append({
            "user_id": draw(st.integers(0, 2)),
            "n": draw(st.integers(-5, 30)),
            "x": draw(st.integers(-100_000, 1_000_000)) / 100,
            "label": draw(st.sampled_from(["a", "b", "c", "d", "e"])),
            "flag": draw(st.booleans()),
            "ts": _iso(BASE + t),
        })
    instants = draw(st.lists(st.integers(-60_000, 4 * 3_600_000), min_size=1, max_size=4))
    return out, instants


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _ms(iso: str) -> int:
    return int(round(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000))


def _raw(events: list[dict[str, Any] | None]) -> list[bytes]:
    return [json.dumps(e).encode() if e is not None else b'{"user_id": 1, "ts": "not a time"' for e in events]


def _reference_events(events: list[dict[str, Any] | None]) -> list[Event]:
    return [Event(i, _ms(e["ts"]), e["user_id"], e) for i, e in enumerate(events) if e is not None]


def _aggs(plan: Plan, view: str = "props") -> list[Agg]:
    return [Agg(a.name, a.column, a.function, a.window_ms, a.tile_ms, a.where, a.k) for a in plan.view(view).aggregations]


def _settings(repo: Path, services: Services, root: Path, project: str) -> Any:
    return load_settings(
        repo, kafka_bootstrap_servers=services.bootstrap_servers, redis_url=services.redis_url, project=project,
        consumer_group=project, registry_path=root / "registry", offline_path=root / "offline",
        checkpoint_interval_s=1.0, kafka_options=dict(FAST_GROUP), batch_size=7,
    )


def _check(feature: str, function: str, got: Any, want: Any, where: str) -> None:
    if function == "count_distinct" and got is not None and want is not None:
        assert abs(got - want) <= HLL_REL * max(1, want), f"{where} {feature}: {got!r} != {want!r}"
    else:
        assert close(got, want), f"{where} {feature}: {got!r} != {want!r}"


def _backfill(plan: Plan, settings: Any, raw: list[bytes], folder: Path) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "events.jsonl"
    path.write_bytes(b"\n".join(raw) + b"\n")
    return Backfill(plan, settings).run(path, materialize=True)


# -- backfill, online, offline and the reference -------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=streams())
def test_online_offline_and_reference_agree(stream: tuple[list[Any], list[int]], plan: Plan, repo: Path,
                                            services: Services) -> None:
    events, instants = stream
    ref = _reference_events(events)
    late = late_flags(ref, LATENESS_MS)
    served = [e for e, is_late in zip(ref, late) if not is_late]
    aggs = _aggs(plan)
    view = plan.view("props")
    feats = [a.name for a in aggs]
    project = f"prop-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        settings_ = _settings(repo, services, Path(tmp), project)
        stats = _backfill(plan, settings_, _raw(events), Path(tmp) / "in")
        assert stats.dead_letters.get("late", 0) == sum(late)
        assert stats.dead_letters.get("malformed_json", 0) == sum(1 for e in events if e is None)
        keys = sorted({e.key for e in ref})
        if not keys:
            return
        root = Path(settings_.offline_root)
        newest = max(e.ts for e in ref)
        client = redis.Redis.from_url(services.redis_url)
        try:
            reader = OnlineReader(client, project, plan)
            rebuilt = _rebuilt(client, plan, settings_)
            # online rows hold the newest state: read at instants at or after the newest event
            for t in sorted({newest + max(0, x) for x in instants}):
                got = reader.read([ViewRequest(view, feats, [(k,) for k in keys])], t)[0]
                # rebuild-online's state computed from the history reads the same, exactly
                assert rebuilt.read([ViewRequest(view, feats, [(k,) for k in keys])], t)[0] == got
                for i, k in enumerate(keys):
                    for a in aggs:
                        want = _null_empty(a, aggregate(served, k, t, a), served, k, t)
                        _check(a.name, a.function, got[a.name][i], want, f"online t={t - BASE} key={k}")
                        if a.function in ("sum", "mean"):  # exact sums: the correctly rounded value
                            assert got[a.name][i] == want, f"online {a.name}: {got[a.name][i]!r} != {want!r}"
        finally:
            client.close()
        # offline: any instant, both policies
        grid = [(k, BASE + x) for k in keys for x in instants]
        table = pa.table({"user_id": [k for k, _ in grid]})
        times = pa.array([t for _, t in grid], pa.int64())
        corrected = point_in_time_features(root, view, feats, table, times).to_pylist()
        as_held = point_in_time_features(root, view, feats, table, times, mode="as_served",
                                         served_at_row_time=False).to_pylist()
        for (k, t), row_c, row_h in zip(grid, corrected, as_held):
            for a in aggs:
                _check(a.name, a.function, row_c[a.name], _null_empty(a, aggregate(ref, k, t, a), ref, k, t),
                       f"corrected t={t - BASE} key={k}")
                _check(a.name, a.function, row_h[a.name], _null_empty(a, aggregate(served, k, t, a), served, k, t),
                       f"served t={t - BASE} key={k}")


def _rebuilt(client: redis.Redis, plan: Plan, settings_: Any) -> OnlineReader:
    """A reader of the online state `rebuild-online` computes from the history (another project)."""
    project = f"{settings_.project}-rebuilt"
    skew_ms = int(settings_.max_future_skew_s * 1000)
    for view in plan.views:
        rebuild_view(client, project, Path(settings_.offline_root), view, skew_ms)
    return OnlineReader(client, project, plan)


def _null_empty(agg: Agg, value: Any, events: list[Event], key: Any, t: int) -> Any:
    """Offline, an entity with no event at or before t has no value at all (NULL), even for counts."""
    return value if any(e.key == key and e.ts <= t for e in events) else None


@st.composite
def long_streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Events over 60 days in random order, few entities: lifetime tiles get folded."""
    n = draw(st.integers(20, 150))
    return [{
        "user_id": draw(st.integers(0, 1)),
        "n": draw(st.integers(-5, 30)),
        "x": draw(st.integers(-100_000, 1_000_000)) / 100,
        "label": draw(st.sampled_from(["a", "b", "c", "d", "e", "f", "g"])),
        "flag": draw(st.booleans()),
        # spread over the days (in a scrambled order), anywhere within each day
        "ts": _iso(BASE - (i * 37 % 60) * 86_400_000 - draw(st.integers(0, 86_399_999))),
    } for i in range(n)]


FOLDED: list[bool] = []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(events=long_streams(), later=st.integers(0, 3 * 86_400_000))
def test_lifetime_tiles_fold_exactly_and_stay_bounded(events: list[dict[str, Any]], later: int, plan: Plan, repo: Path,
                                                      services: Services) -> None:
    from featurestore.online.layout import tile_sets
    from featurestore.online.state import StateCodec, decode_state, tile_indices
    from featurestore.plan.windows import LIFETIME_BASE_INDEX

    ref = _reference_events(events)  # type: ignore[arg-type]  # hypothesis gives dicts of the same shape
    aggs = _aggs(plan, "lifetimes")
    view = plan.view("lifetimes")
    project = f"prop-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        settings_ = _settings(repo, services, Path(tmp), project)
        _backfill(plan, settings_, _raw(events), Path(tmp) / "in")  # type: ignore[arg-type]  # as above
        keys = sorted({e.key for e in ref})
        t = max(e.ts for e in ref) + later
        client = redis.Redis.from_url(services.redis_url)
        try:
            request = [ViewRequest(view, [a.name for a in aggs], [(k,) for k in keys])]
            got = OnlineReader(client, project, plan).read(request, t)[0]
            assert _rebuilt(client, plan, settings_).read(request, t)[0] == got
            sets = tile_sets(view)
            slack = int(settings_.max_future_skew_s * 1000) + (view.allowed_lateness_ms or 0)
            for i, k in enumerate(keys):
                name = f"fs:{project}:lifetimes:{k}"
                codec = StateCodec.of(sets)
                states = [decode_state(v, codec) for _, v in unpack_value(client.get(name) or b"", name)]
                for s in states:  # a tile for each day a read can reach, and the base
                    assert all(len(tile_indices(s, j, codec)) <= ts.live_tiles(slack) for j, ts in enumerate(sets))
                FOLDED.append(any(LIFETIME_BASE_INDEX in tile_indices(s, j, codec)
                                  for s in states for j in range(len(sets))))
                for a in aggs:
                    _check(a.name, a.function, got[a.name][i], aggregate(ref, k, t, a), f"lifetime key={k}")
        finally:
            client.close()


def test_lifetime_folding_happened() -> None:
    """The property above exercised folding (runs after it in file order)."""
    assert any(FOLDED), "no example folded a lifetime tile"


# -- streaming == backfill ---------------------------------------------------------------------
def _online_state(client: redis.Redis, project: str, keys: list[int], view: Any) -> dict[int, list[Any]]:
    """Per entity its states without provenance (the partition, applied offsets, the offsets in
    first / last / newest orders: streaming and backfill read the events from different
    partitions). Everything else, float sums included, must be equal to the last bit."""
    from featurestore.online.layout import tile_sets
    from featurestore.online.state import ITEM_COLUMNS, StateCodec, decode_state

    sets = tile_sets(view)
    state: dict[int, list[Any]] = {}
    for k in keys:
        name = f"fs:{project}:props:{k}"
        out = []
        for _, raw in unpack_value(client.get(name) or b"", name):
            codec = StateCodec.of(sets)
            s = decode_state(raw, codec)
            items = [[(_no_offsets(raw_rows, ITEM_COLUMNS[stat]), vals) for stat, (raw_rows, vals) in zip(stats, set_items)]
                     for stats, set_items in zip(codec.stats, s.items)]
            out.append((s.ts, s.row, s.packed, s.overflow, items))
        state[k] = out
    return state


def _no_offsets(raw: bytes, width: int) -> list[list[int]]:
    """Item rows without their offset column (tile, event time[, offset] | tile, hash)."""
    rows = np.frombuffer(raw, dtype="<i8").reshape(-1, width)
    return (rows[:, :2] if width == 3 else rows).tolist()


def _history(root: Path) -> list[dict[str, Any]]:
    table = pads.dataset(root / "props", format="parquet", partitioning="hive", exclude_invalid_files=True).to_table()
    rows = sorted(table.to_pylist(), key=lambda r: r["_offset"])
    drop = {"_topic", "_partition", "_offset", "_processed_at", "date"}
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def _assert_same_stores(services: Services, a: Any, b: Any, events: list[dict[str, Any] | None], view: Any) -> None:
    """Two runs over the same events left the same online state and the same history."""
    keys = sorted({e["user_id"] for e in events if e is not None})
    client = redis.Redis.from_url(services.redis_url)
    try:
        assert _online_state(client, a.project, keys, view) == _online_state(client, b.project, keys, view)
    finally:
        client.close()
    if keys:
        assert _history(Path(a.offline_root)) == _history(Path(b.offline_root))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=streams())
def test_streaming_equals_backfill(stream: tuple[list[Any], list[int]], plan: Plan, repo: Path, services: Services) -> None:
    events, _ = stream
    raw = _raw(events)
    run = uuid.uuid4().hex[:8]
    topic = f"prop-{run}"
    plan_k = _with_topic(plan, topic)
    with tempfile.TemporaryDirectory() as tmp:
        s_stream = _settings(repo, services, Path(tmp) / "stream", f"prop-s-{run}")
        s_back = _settings(repo, services, Path(tmp) / "backfill", f"prop-b-{run}")
        ensure_topics(s_stream, [topic], partitions=1)
        producer = Producer(producer_config(s_stream))
        for value in raw:
            producer.produce(topic, value=value)
        assert producer.flush(30) == 0
        stats = StreamProcessor(plan_k, s_stream).run(until_caught_up=True)
        back = _backfill(plan_k, s_back, raw, Path(tmp) / "in")
        assert stats.events == back.events and stats.dead_letters == back.dead_letters

        _assert_same_stores(services, s_stream, s_back, events, plan_k.view("props"))
        # the same dead letters, with the same reasons and original bytes
        streamed = _dead_letters(s_stream, f"{topic}.dlq", sum(stats.dead_letters.values()))
        lines = (back.dead_letter_file.read_text().splitlines() if back.dead_letter_file else [])
        from_files = sorted((json.loads(x)["reason"], json.loads(x)["record"].encode()) for x in lines)
        assert streamed == from_files


def _dead_letters(settings_: Any, topic: str, expected: int) -> list[tuple[str, bytes]]:
    """(reason, value) of every dead letter on the topic."""
    return sorted((h[ERROR], value) for h, value in read_dead_letters(settings_.kafka_bootstrap_servers, topic, expected))


# -- lateness decisions survive crashes ----------------------------------------------------------
def test_late_decisions_survive_sigkills(tmp_path: Path, services: Services, run_id: str) -> None:
    """Kill the processor at the points where history, online store and offsets disagree; the
    watermark each restart recovers from the history gives every replayed record the decision
    of an uninterrupted run (compared with a backfill of the same events)."""
    import os
    import random
    import signal
    import subprocess
    import sys

    from featurestore.registry import FileRegistry

    topic = f"late-{run_id}"
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "late_window_defs.py").write_text(DEFS.replace('topic="prop-events"', f'topic="{topic}"'))
    settings_ = _settings(repo, services, tmp_path / "stream", f"late-{run_id}")
    plan_k = compile_repo(repo)
    FileRegistry(settings_.registry_root).apply(plan_k)
    ensure_topics(settings_, [topic], partitions=1)
    rnd = random.Random(5)
    events: list[dict[str, Any] | None] = []
    t = 0
    for _ in range(1500):
        t = max(0, t + (rnd.randint(0, 60_000) if rnd.random() < 0.8 else -rnd.randint(0, 240_000)))
        events.append(None if rnd.random() < 0.03 else {
            "user_id": rnd.randint(0, 9), "n": rnd.randint(0, 9), "x": rnd.randint(0, 99_999) / 100,
            "label": rnd.choice("abcdef"), "flag": rnd.random() < 0.5, "ts": _iso(BASE + t)})
    raw = _raw(events)
    producer = Producer(producer_config(settings_))

    def produce(values: list[bytes]) -> None:
        for value in values:
            producer.produce(topic, value=value)
        assert producer.flush(30) == 0

    late = late_flags(_reference_events(events), LATENESS_MS)
    assert sum(late) > 20

    env = {**os.environ, **services.env(), "FEATURESTORE_KAFKA_OPTIONS": json.dumps(FAST_GROUP),
           "FEATURESTORE_PROJECT": settings_.project, "FEATURESTORE_CONSUMER_GROUP": settings_.consumer_group,
           "FEATURESTORE_REGISTRY_PATH": str(settings_.registry_root), "FEATURESTORE_OFFLINE_PATH": str(settings_.offline_root),
           "FEATURESTORE_BATCH_SIZE": "25", "FEATURESTORE_CHECKPOINT_INTERVAL_S": "0.05",
           "PYTHONPATH": os.pathsep.join([str(repo), *sys.path])}
    cmd = [sys.executable, "-m", "featurestore", "run", "--until-caught-up", "--repo", str(repo)]
    dangerous = ("before_offset_commit:2", "after_history_commit:1", "after_online_write:2", "before_offset_commit:1",
                 "after_history_staged:2", "before_offset_commit:3", "after_history_commit:2", "after_online_write:1")
    missed = []
    for i, fault in enumerate(dangerous):  # each run resumes where the previous one's commits left it
        produce(raw[i * len(raw) // len(dangerous):(i + 1) * len(raw) // len(dangerous)])  # and has new events
        res = subprocess.run(cmd, env={**env, "FEATURESTORE_FAULT": fault}, capture_output=True, text=True)
        assert res.returncode in (0, -signal.SIGKILL), res.stderr[-2000:]
        if res.returncode == 0:
            missed.append(fault)
    assert len(missed) <= 2, f"runs finished before reaching their fault point: {missed}"
    subprocess.run(cmd, env={**env, "FEATURESTORE_FAULT": ""}, check=True, capture_output=True)

    back_settings = _settings(repo, services, tmp_path / "backfill", f"late-b-{run_id}")
    back = _backfill(plan_k, back_settings, raw, tmp_path / "in")
    assert back.dead_letters["late"] == sum(late)
    _assert_same_stores(services, settings_, back_settings, events, plan_k.view("props"))
    # dead letters are at least once: the same set, each at least once
    streamed = _dead_letters(settings_, f"{topic}.dlq", sum(back.dead_letters.values()))
    from_files = {(json.loads(x)["reason"], json.loads(x)["record"].encode())
                  for x in back.dead_letter_file.read_text().splitlines()} if back.dead_letter_file else set()
    assert set(streamed) == from_files
