"""The Redis online store on a real Redis: ordering, bounded storage, one round trip."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from featurestore.compile import compile_repo
from featurestore.errors import OnlineLayoutError
from featurestore.online import OnlineReader, OnlineWriter
from featurestore.online.connection import AsyncOnlineRedis
from featurestore.online.entity_value import unpack_value
from featurestore.online.layout import tile_sets
from featurestore.online.reader import ViewRequest
from featurestore.online.state import StateCodec, decode_state, tile_indices
from featurestore.records import ViewRows

from .reference import window_lower_bound
from .test_failures import online_state

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
HOUR, DAY = 3_600_000, 86_400_000


def _rows(view, events: list[tuple[Any, int, dict[str, Any]]], first_offset: int = 0, partition: int = 0) -> ViewRows:
    rows = ViewRows(view=view.name, topic="t")
    cols = [n for n, _ in view.history_columns]
    rows.values = {c: [] for c in cols}
    for offset, (user, ts, values) in enumerate(events, first_offset):
        rows.keys.append((user,))
        rows.ts.append(ts)
        rows.partition.append(partition)
        rows.offset.append(offset)
        for c in cols:
            rows.values[c].append(values.get(c))
    return rows


@pytest.fixture
def store(services, run_id):
    plan = compile_repo(ROOT / "feature_defs")
    client = redis.Redis.from_url(services.redis_url)
    project = f"online-{run_id}"
    yield plan, client, OnlineWriter(client, project, plan), OnlineReader(client, project, plan), project
    for key in client.scan_iter(f"fs:{project}:*"):
        client.delete(key)


def _stored(client: redis.Redis, key: str, partition: int = 0) -> bytes:
    """The state an entity's value holds from one partition."""
    return dict(unpack_value(client.get(key) or b"", key))[partition]


def _event(amount: float, merchant: str) -> dict[str, Any]:
    return {"amount": amount, "amount_eur": amount, "last_merchant": merchant, "last_country": "FR", "is_large": False}


def test_out_of_order_event_never_overwrites_a_newer_one(store) -> None:
    plan, _client, writer, reader, _ = store
    view = plan.view("user_payments")
    t0 = 1_700_000_000_000
    writer.write([_rows(view, [(1, t0 + 5000, _event(10.0, "newest"))])])
    writer.write([_rows(view, [(1, t0 + 1000, _event(99.0, "older"))], first_offset=1)])  # arrives later, happened earlier
    got = reader.read([ViewRequest(view, ["last_merchant", "amount_count_1h", "amount_sum_1h", "amount_max_1d"], [(1,)])],
                      t0 + 6000)[0]
    assert got["last_merchant"] == ["newest"]
    assert got["amount_count_1h"] == [2] and got["amount_sum_1h"] == [109.0] and got["amount_max_1d"] == [99.0]
    # t0 is a minute boundary; a read at t0 + 2 s still sees the t0 + 5 s event of the same
    # 1-minute tile (the documented precision of `at` before the newest event), but a read
    # in the previous tile does not see it
    assert t0 % 60_000 == 20_000
    earlier = reader.read([ViewRequest(view, ["amount_count_1h"], [(1,)])], t0 - 20_000)[0]
    assert earlier["amount_count_1h"] == [0]


def test_storage_per_entity_stays_bounded(store) -> None:
    plan, client, writer, _reader, project = store
    view = plan.view("user_payments")
    t0 = 1_700_000_000_000
    sizes, bounded = [], []
    sets = tile_sets(view)
    slack = writer.skew_ms + (view.allowed_lateness_ms or 0)
    key = f"fs:{project}:user_payments:7"
    for day in range(6):  # one event a minute for six days, written in hourly batches
        for hour in range(24):
            start = t0 + day * DAY + hour * HOUR
            writer.write([_rows(view, [(7, start + m * 60_000, _event(1.0, "m")) for m in range(60)],
                                first_offset=(day * 24 + hour) * 60)])
            codec = StateCodec.of(sets)
            state = decode_state(_stored(client, key), codec)
            bounded.append(all(len(tile_indices(state, i, codec)) <= ts.live_tiles(slack)
                               for i, ts in enumerate(sets)))
        sizes.append(len(_stored(client, key)))
    assert all(bounded), "every tile set keeps only the tiles a read can reach"
    assert max(sizes) == max(sizes[1:]), "size stops growing once the longest window is full"
    assert sizes[-1] <= sizes[1] * 1.1


def test_replayed_and_overlapping_batches_take_effect_once(store) -> None:
    """A batch delivered twice, a zombie re-sending an old batch, and a replay whose batch
    boundaries differ from the first delivery all leave the same state as one delivery."""
    plan, client, writer, reader, project = store
    view = plan.view("user_payments")
    t0 = 1_700_000_000_000
    events = [(u, t0 + i * 7_000, _event(float(i % 13 + 1), f"m{i}")) for i in range(200) for u in (i % 5,)]
    rows = _rows(view, events)
    writer.write([rows])
    reference = online_state(client, project)
    writer.write([rows])  # the same batch again
    writer.write([_rows(view, events[:50])])  # an old, smaller batch
    zombie = OnlineWriter(client, project, plan)  # a former owner of the partition: no cached states
    zombie.write([_rows(view, events[:50])])
    zombie.write([_rows(view, events[20:90], first_offset=20)])
    # replay with different boundaries: offsets 30..129 then 130..199
    writer.write([_rows(view, events[30:130], first_offset=30)])
    writer.write([_rows(view, events[130:], first_offset=130)])
    after = online_state(client, project)
    assert after == reference
    assert writer.groups_skipped > 0 and zombie.groups_applied == 0
    t = t0 + 200 * 7_000
    got = reader.read([ViewRequest(view, ["amount_count_1h"], [(u,) for u in range(5)])], t)[0]
    lo = window_lower_bound(t, 3_600_000, 60_000)
    assert sum(got["amount_count_1h"]) == sum(1 for e in events if lo < e[1] <= t) > 0


def test_an_entity_fed_by_several_partitions_keeps_one_state_each_in_one_value(store) -> None:
    """An entity whose events come from several partitions (its view keyed otherwise than the
    topic): one value holds a state per partition in partition order, whatever order they
    were written in; a replay of one partition changes nothing, a newer batch of it replaces
    only its own state, and reads merge all of them."""
    plan, client, writer, reader, project = store
    view = plan.view("user_payments")
    t0 = 1_700_000_000_000
    key = f"fs:{project}:user_payments:8"
    batches = {p: [(8, t0 + p * 1_000 + i * 60_000, _event(float(p + 1), f"m{p}")) for i in range(3)] for p in (2, 0, 1)}
    for p, events in batches.items():
        writer.write([_rows(view, events, partition=p)])
    stored = unpack_value(client.get(key) or b"", key)
    assert [p for p, _ in stored] == [0, 1, 2]
    value = client.get(key)
    OnlineWriter(client, project, plan).write([_rows(view, batches[1], partition=1)])  # a former owner replays
    assert client.get(key) == value
    later = [(8, t0 + 10 * 60_000, _event(10.0, "m9"))]
    writer.write([_rows(view, later, first_offset=3, partition=1)])
    after = dict(unpack_value(client.get(key) or b"", key))
    assert after[0] == dict(stored)[0] and after[2] == dict(stored)[2] and after[1] != dict(stored)[1]
    got = reader.read([ViewRequest(view, ["amount_count_1h", "amount_sum_1h", "last_merchant"], [(8,)] * 10)],
                      t0 + 11 * 60_000)[0]
    assert got == {"amount_count_1h": [10] * 10, "amount_sum_1h": [3 * 6.0 + 10.0] * 10, "last_merchant": ["m9"] * 10}


def test_reads_survive_a_dropped_connection_and_report_a_wrong_type(store) -> None:
    """Reads send raw pipelined commands on a pooled connection: a pooled connection the
    server closed does not fail the next read, and a Redis error reply is raised, not
    returned as a value."""
    plan, client, writer, reader, project = store
    view = plan.view("user_payments")
    t0 = 1_700_000_000_000
    writer.write([_rows(view, [(1, t0, _event(10.0, "m1")), (2, t0, _event(5.0, "m2"))])])
    request = [ViewRequest(view, ["last_merchant", "amount_count_1h"], [(1,), (2,)])]
    assert reader.read(request, t0 + 1000)[0] == {"last_merchant": ["m1", "m2"], "amount_count_1h": [1, 1]}
    name = f"reader-{project}"
    conn = client.connection_pool.get_connection()
    conn.send_command("CLIENT", "SETNAME", name)
    conn.read_response()
    client.connection_pool.release(conn)  # the pooled connection the next read takes
    pool = client.connection_pool
    admin = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **pool.connection_kwargs))
    ids = [c["id"] for c in admin.client_list() if c.get("name") == name]
    assert len(ids) == 1
    admin.execute_command("CLIENT", "KILL", "ID", ids[0])
    assert reader.read(request, t0 + 1000)[0] == {"last_merchant": ["m1", "m2"], "amount_count_1h": [1, 1]}
    client.rpush(f"fs:{project}:user_payments:3", "not a state")
    with pytest.raises(OnlineLayoutError, match="user_payments:3 holds a value that is not an online state.*rebuild-online"):
        reader.read([ViewRequest(view, ["last_merchant"], [(3,)])], t0 + 1000)
    client.set(f"fs:{project}:user_payments:4", "not a state either")
    with pytest.raises(OnlineLayoutError, match="user_payments:4 holds a value that is not an online state"):
        reader.read([ViewRequest(view, ["last_merchant"], [(4,)])], t0 + 1000)
    with pytest.raises(redis.ResponseError, match="NOPERM|unknown command|ERR"):  # any other error reply is raised
        reader.redis.run([(b"k", ("NOSUCHCOMMAND", "k"))])
    admin.close()


def test_async_reads_survive_a_dropped_connection_and_report_a_wrong_type(store) -> None:
    """The feature server's reads (asyncio client): the same answers as the synchronous
    reader, a pooled connection the server closed is replaced, a Redis error is raised."""
    import asyncio

    import redis.asyncio as aioredis

    plan, client, writer, reader, project = store
    view = plan.view("user_payments")
    t0 = 1_700_000_000_000
    writer.write([_rows(view, [(1, t0, _event(10.0, "m1")), (2, t0, _event(5.0, "m2"))])])
    request = [ViewRequest(view, ["last_merchant", "amount_count_1h", "amount_sum_1h"], [(1,), (2,), (9,)])]
    name = f"areader-{project}"
    pool = client.connection_pool
    admin = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **pool.connection_kwargs))

    async def scenario() -> None:
        aclient = aioredis.Redis(**{k: v for k, v in pool.connection_kwargs.items() if k in ("host", "port", "db", "username", "password")})
        online = AsyncOnlineRedis(aclient)
        try:
            want = reader.read_results(request, t0 + 1000)
            got = await reader.aread_results(online, request, t0 + 1000)
            assert got == want and got[0].values["amount_sum_1h"] == [10.0, 5.0, None]
            await aclient.client_setname(name)  # the pooled connection the next read takes
            ids = [c["id"] for c in admin.client_list() if c.get("name") == name]
            assert len(ids) == 1
            admin.execute_command("CLIENT", "KILL", "ID", ids[0])
            assert await reader.aread_results(online, request, t0 + 1000) == want
            await aclient.rpush(f"fs:{project}:user_payments:3", "not a state")
            with pytest.raises(OnlineLayoutError, match="user_payments:3 holds a value that is not an online state"):
                await reader.aread_results(online, [ViewRequest(view, ["last_merchant"], [(3,)])], t0 + 1000)
        finally:
            await aclient.aclose()  # type: ignore[attr-defined]  # the client is redis.asyncio's, typed as the sync one

    try:
        asyncio.run(scenario())
    finally:
        admin.close()


def test_state_of_another_layout_is_refused_not_misread(store) -> None:
    """An entity hash without a layout version (written before the packed layout) is
    neither read as empty windows nor written over: both raise OnlineLayoutError naming the
    fix, and the hash is left as it was."""
    from featurestore.online.keys import LAYOUT_VERSION

    plan, client, writer, reader, project = store
    view = plan.view("user_payments")
    t0 = 1_700_000_000_000
    writer.write([_rows(view, [(1, t0, _event(10.0, "m1"))])])
    key = f"fs:{project}:user_payments:1"
    assert client.get(key)[:4] == b"FSe6"
    client.delete(key)
    client.hset(key, "amount|60000|28333333|c", "1")  # as a hash of the first layout looks
    before = client.hgetall(key)
    with pytest.raises(OnlineLayoutError, match="rebuild-online"):
        reader.read([ViewRequest(view, ["amount_count_1h"], [(1,)])], t0 + 1000)
    with pytest.raises(OnlineLayoutError, match=f"layout 1, this version reads and writes layout {LAYOUT_VERSION}"):
        writer.write([_rows(view, [(1, t0 + 5, _event(3.0, "m2"))], first_offset=10)])
    assert client.hgetall(key) == before


@pytest.mark.parametrize("layout, fields", [
    ("3", {"_ts": "1700000000000", "amount|60000|P": b"\0" * 24}),  # tiles merged inside Redis by a script
    ("4", {"o0": "7", "s0": b"F4\0\0" + b"\0" * 60}),  # states with their item counts in JSON
    ("5", {"o0": "7", "s0": b"F5\0\0" + b"\0" * 60}),  # states in a hash, one field per partition
])
def test_state_of_an_older_layout_is_refused_not_misread(store, layout: str, fields: dict) -> None:
    """A hash of an older layout is neither read nor written over: both name the fix
    (`rebuild-online`), and the hash is left as it was."""
    from featurestore.online.keys import LAYOUT_VERSION

    plan, client, writer, reader, project = store
    view = plan.view("user_payments")
    t0 = 1_700_000_000_000
    key = f"fs:{project}:user_payments:3"
    client.hset(key, mapping={"_v": layout, **fields})
    before = client.hgetall(key)
    expected = f"layout {layout}, this version reads and writes layout {LAYOUT_VERSION}.*rebuild-online"
    with pytest.raises(OnlineLayoutError, match=expected):
        reader.read([ViewRequest(view, ["amount_count_1h"], [(3,)])], t0 + 1000)
    with pytest.raises(OnlineLayoutError, match=expected):
        writer.write([_rows(view, [(3, t0 + 5, _event(3.0, "m2"))], first_offset=10)])
    assert client.hgetall(key) == before


def test_a_read_of_many_entities_equals_reading_each_alone(store) -> None:
    """Requests of more than a few entities parse all their states side by side; every
    value, status and event time must be what reading each entity alone gives — entities
    fed by several partitions, with sums that need further exact terms, missing, expired."""
    import random

    plan, _client, writer, reader, _ = store
    rnd = random.Random(11)
    t0 = 1_700_000_000_000
    for view_name, key_of in (("user_payments", lambda u: u), ("merchant_payments", lambda u: f"m{u % 7}")):
        view = plan.view(view_name)
        for partition in range(3):
            events: list[tuple[Any, int, dict[str, Any]]] = []
            for i in range(400):
                user = rnd.choice([*range(1, 29), 30])
                amount = rnd.choice([1e300, 1e-300, 3.3e16, 1.0, 12.5, 999.99])
                # whole seconds over 20 minutes: tiles of many events (sums with further
                # terms), and newest events tied across partitions (broken by partition)
                ts = t0 - 1000 * rnd.randint(0, 1200) if user != 30 else t0 - 30 * DAY  # user 30: expired
                events.append((key_of(user), ts, _event(amount, f"m{rnd.randint(1, 9)}")))
            if partition != 1:  # crafted: user 29's newest events tie across partitions 0 and 2 (2 wins);
                # m100's tile sums 2^53 + 1 + 1e-300, whose third term decides the rounding
                events.append((key_of(29), t0 - 5000, _event(5.0, f"from-p{partition}")))
                events += [(key_of(100) if view_name == "user_payments" else "m100", t0 - 7000 - j, _event(x, "m1"))
                           for j, x in enumerate([2.0**53, 1.0, 1e-300])]
            rows = _rows(view, sorted(events, key=lambda e: e[1]), first_offset=1000 * (2 - partition))
            rows.partition = [partition] * len(rows)
            writer.write([rows])
    for view_name, keys in (("user_payments", [(u,) for u in range(1, 41)]),  # 31..40: never written
                            ("merchant_payments", [(f"m{u}",) for u in [*range(0, 12), 100]])):
        view = plan.view(view_name)
        features = [f for f in view.feature_names if not any(
            a.name == f and a.function in ("first", "last", "last_n", "count_distinct") for a in view.aggregations)]
        many = reader.read_results([ViewRequest(view, features, keys)], t0)[0]
        alone = [reader.read_results([ViewRequest(view, features, [k])], t0)[0] for k in keys]
        assert many.states == [a.states[0] for a in alone]
        assert many.event_ms == [a.event_ms[0] for a in alone]
        for f in features:
            assert many.values[f] == [a.values[f][0] for a in alone], f
        assert {"present", "not_found"} <= set(many.states)
    got = reader.read_results([ViewRequest(plan.view("user_payments"), ["last_merchant"], [(u,) for u in range(20, 41)])], t0)
    assert got[0].values["last_merchant"][29 - 20] == "from-p2"
    merchants = [(f"m{u}",) for u in [*range(12), 100]]
    sums = reader.read_results([ViewRequest(plan.view("merchant_payments"), ["amount_sum_1h"], merchants)], t0)
    assert sums[0].values["amount_sum_1h"][-1] == 2.0 * (2.0**53 + 2)  # two partitions, each 2^53 + 2
    assert "expired" in reader.read_results([ViewRequest(plan.view("user_payments"), ["amount_count_1h"],
                                                         [(u,) for u in range(25, 41)])], t0)[0].states


@pytest.mark.parametrize("cache_bytes", [0, 5_000])
def test_states_evicted_from_memory_are_read_back(store, cache_bytes: int) -> None:
    """A writer whose memory holds few states (or none) reads the others back from Redis:
    the stored states are those of a writer that kept them all, and the memory it keeps
    stays within its budget."""
    import random

    plan, client, writer, _reader, project = store
    view = plan.view("user_payments")
    small = OnlineWriter(client, f"{project}-small", plan, cache_bytes=cache_bytes)
    rnd = random.Random(5)
    t0 = 1_700_000_000_000
    for batch in range(6):
        events = sorted(((rnd.randint(1, 12), t0 + batch * 600_000 + rnd.randint(0, 599_999),
                          _event(float(rnd.randint(1, 500)), f"m{rnd.randint(1, 5)}")) for _ in range(60)),
                        key=lambda e: e[1])
        for w in (writer, small):
            w.write([_rows(view, events, first_offset=batch * 100)])
        assert small.cached_bytes <= cache_bytes
    for user in range(1, 13):
        assert client.get(f"fs:{project}-small:user_payments:{user}") == client.get(f"fs:{project}:user_payments:{user}")
    for key in client.scan_iter(f"fs:{project}-small:*"):
        client.delete(key)


def test_streamed_and_pipelined_replies_arrive_whole_and_in_order(services, run_id) -> None:
    """Replies are parsed from as few socket reads as they arrive in: a read that takes in the
    next batch's replies keeps them for it; large replies span reads; error replies come back
    as redis-py's exception for them, in place."""
    from redis.exceptions import NoScriptError, ResponseError

    from featurestore.online.streaming import arun_commands, pack_command, run_commands, stream_commands

    client = redis.Redis.from_url(services.redis_url)
    big = f"fs:stream-{run_id}:big".encode()
    client.set(big, b"x" * 300_000)  # one reply larger than a socket read
    try:
        batches = [[pack_command(("ECHO", f"{b}-{i}")) for i in range(40)] for b in range(300)]
        got = stream_commands(client, batches)
        assert got == [f"{b}-{i}".encode() for b in range(300) for i in range(40)]
        mixed = [("GET", big), ("EVALSHA", "0" * 40, 0), ("ECHO", "after"), ("HGET", big, "f"), ("ECHO", "last")]
        replies = run_commands(client, mixed, raise_errors=False)
        assert replies[0] == b"x" * 300_000 and replies[2] == b"after" and replies[4] == b"last"
        assert isinstance(replies[1], NoScriptError)
        assert isinstance(replies[3], ResponseError) and "WRONGTYPE" in str(replies[3])
        with pytest.raises(NoScriptError):
            run_commands(client, mixed)
        assert client.echo("the connection is still in step") == b"the connection is still in step"

        async def over_asyncio() -> list[Any]:
            aclient: Any = redis.asyncio.Redis.from_url(services.redis_url)
            try:
                return await arun_commands(aclient, mixed, raise_errors=False)
            finally:
                await aclient.aclose()

        areplies = asyncio.run(over_asyncio())
        assert [type(r) for r in areplies] == [type(r) for r in replies] and areplies[0] == replies[0]
    finally:
        client.delete(big)
        client.close()
