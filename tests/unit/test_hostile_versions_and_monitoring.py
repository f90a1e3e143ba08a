"""Hostile input to what view versions, disaster recovery and monitoring added: malformed
sentinel URLs, unreadable served-value records, bad durations and references; each refused
clearly, nothing valid lost."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest

from featurestore.config import parse_sentinel_url, redact_url
from featurestore.errors import ConfigError
from featurestore.offline.served import LandStats, landed_offsets, write_served
from featurestore.plan.names import is_view_id, parse_view_ref
from tests.unit.test_versions import V2, _problems, _repo


def test_sentinel_urls_are_parsed_or_refused_and_never_print_a_password() -> None:
    url = parse_sentinel_url("redis+sentinel://u:s3cret@h1:26379,h2:26380/mymaster/2")
    assert url is not None and url.hosts == [("h1", 26379), ("h2", 26380)] and url.service == "mymaster" and url.db == 2
    assert "s3cret" not in redact_url("redis+sentinel://u:s3cret@h1:26379/mymaster")
    assert parse_sentinel_url("redis://127.0.0.1:6379/0") is None
    for bad in ("redis+sentinel://h1/mymaster", "redis+sentinel://h1:26379", "redis+sentinel://h1:26379/m/x",
                "redis+sentinel://h1:port/m", "redis+sentinel://:1/m"):
        with pytest.raises(ConfigError, match="redis_url"):
            parse_sentinel_url(bad)


def test_view_references_accept_only_names_and_versions() -> None:
    assert parse_view_ref("user_payments@2") == ("user_payments", 2) and parse_view_ref("user_payments") == ("user_payments", None)
    for bad in ("user_payments@0", "user_payments@-1", "user_payments@2@3", "../x", "a b", "x@02", "", "x@1234567"):
        assert parse_view_ref(bad) is None, bad
    assert not is_view_id("user_payments@1")  # version 1 keeps the bare name: one id per version
    assert is_view_id("user_payments@2") and not is_view_id("user_payments@2/../../etc")


def test_bad_durations_and_versions_are_problems_with_a_fix(tmp_path: Path) -> None:
    slo = V2.replace("{serving}", " freshness_slo=timedelta(seconds=-5),")
    assert "freshness_slo must be a positive timedelta" in _problems(_repo(tmp_path, slo))
    assert "version must be a whole number" in _problems(_repo(tmp_path, V2.replace("version=2", "version='2'")
                                                               .replace("{serving}", "")))


def test_unreadable_served_records_are_skipped_and_counted_the_rest_landed(tmp_path: Path) -> None:
    good = orjson.dumps({"request_id": "r1", "service": "svc", "served_at_ms": 1_796_000_000_000, "rows": 2,
                         "keys": {"user_id": [1, 2]}, "features": {"f": {"values": [1.5, None], "statuses": ["present", "not_found"]}},
                         "variants": None})
    hostile = [b"not json", b"{}", orjson.dumps({"service": "../../etc", "rows": 1, "served_at_ms": 0, "features": {}}),
               orjson.dumps({"service": "svc", "rows": "many"})]
    stats = LandStats()
    items = list(enumerate(hostile + [good]))
    files = write_served(tmp_path, 3, items, stats)
    assert stats.malformed == 4 and stats.rows == 2 and len(files) == 1
    assert files[0].is_relative_to(tmp_path / "_served" / "service=svc")
    assert landed_offsets(tmp_path) == {3: 4}
    assert dt.date.fromtimestamp(1_796_000_000).isoformat() in str(files[0])
