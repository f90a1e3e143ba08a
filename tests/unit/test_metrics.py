"""The batch-observed histogram exposes exactly what prometheus_client's own Histogram does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from featurestore.metrics import BulkHistogram

BUCKETS = (0.001, 0.01, 0.1, 1, 2.5, 60)


def _exposition(registry: CollectorRegistry) -> list[str]:
    return sorted(line for line in generate_latest(registry).decode().splitlines() if "_created" not in line)


@given(st.lists(st.lists(st.sampled_from([0.0, *BUCKETS, 0.0005, 0.05, 3.0, 1e6]) | st.floats(0, 100), max_size=30),
                max_size=4))
def test_bulk_histogram_exposes_what_a_histogram_does(batches: list[list[float]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("fs_test_seconds", "Test.", ["view"], BUCKETS, registry=ours)
    plain = Histogram("fs_test_seconds", "Test.", ["view"], buckets=BUCKETS, registry=theirs)
    for i, batch in enumerate(batches):
        view = "a" if i % 2 == 0 else "b"
        bulk.observe_many((view,), batch)
        child = plain.labels(view)  # a series exists from its first batch, even an empty one
        for v in batch:
            child.observe(v)
    got, want = _exposition(ours), _exposition(theirs)
    assert [line for line in got if "_sum" not in line] == [line for line in want if "_sum" not in line]
    assert _sums(got).keys() == _sums(want).keys()
    for name, value in _sums(got).items():  # summed in another order
        assert abs(value - _sums(want)[name]) <= 1e-9 * max(1.0, abs(value))


def _sums(lines: list[str]) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if "_sum" in line}


def test_status_reads_the_freshness_of_a_batch_observed_histogram() -> None:
    # `featurestore status` scrapes the processors' /metrics: the bulk histogram must parse there
    from prometheus_client import Counter, start_http_server

    from featurestore.cli.status import fetch_status

    registry = CollectorRegistry()
    fresh = BulkHistogram("featurestore_freshness_seconds", "Test.", ["view"], (0.01, 0.1, 1.0), registry=registry)
    events = Counter("featurestore_events", "Test.", ["view"], registry=registry)
    fresh.observe_many(("user_payments",), [0.005] * 60 + [0.05] * 39 + [0.5])
    events.labels("user_payments").inc(100)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        status = fetch_status([f"http://127.0.0.1:{server.server_port}/metrics"])
    finally:
        server.shutdown()
        thread.join()
    (view,) = status.views
    assert (view.view, view.events, view.p50, view.p99) == ("user_payments", 100.0, "≤ 10 ms", "≤ 100 ms")


def test_a_quantile_beyond_the_last_bucket_reads_as_such() -> None:
    from featurestore.cli.status import _bound

    assert _bound(None) == "-" and _bound(0.01) == "≤ 10 ms" and _bound(float("inf")) == "> 1 h"
