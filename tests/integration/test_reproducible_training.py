"""A training set's manifest builds the same set again later, whatever the history gained
since (late events included), from the SDK and the CLI."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from featurestore import FeatureStore
from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo import payment_events, produce_records
from featurestore.errors import FeatureRequestError
from featurestore.registry import FileRegistry
from featurestore.runtime import StreamProcessor
from featurestore.runtime.kafka import ensure_topics, producer_config
from tests.unit.test_cli import cli

pytestmark = pytest.mark.integration

FEATURES = ["user_payments:amount_sum_1h", "user_payments:amount_count_1d", "user_payments:last_merchant",
            "payment_checks:amount_vs_1d_mean"]


def test_a_manifest_rebuilds_the_same_training_set(example_repo: Path, services, overrides: dict, tmp_path: Path) -> None:
    settings = load_settings(example_repo, **overrides)
    plan = compile_repo(example_repo)
    FileRegistry(settings.registry_root).apply(plan)
    topic = plan.source("payments").topic
    ensure_topics(settings, [topic], partitions=2)
    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    first = payment_events(800, end=end, span=dt.timedelta(hours=2), users=8, late_fraction=0.0, malformed_fraction=0.0,
                           seed=21)
    produce_records(producer_config(settings), topic, first)
    StreamProcessor(plan, settings).run(until_caught_up=True)

    entity = pd.DataFrame({"user_id": list(range(1, 9)) * 2, "amount": [10.0 * u for u in range(1, 17)],
                           "event_timestamp": [end - dt.timedelta(minutes=30)] * 8 + [end] * 8})
    store = FeatureStore(example_repo, settings=settings)
    built = store.get_historical_features(entity, FEATURES)
    manifest = built.manifest
    pinned = [f.replace("user_payments:", "user_payments@1:") for f in FEATURES]  # the manifest names the versions read
    assert manifest["registry_version"] == 1 and manifest["features"] == pinned and manifest["history"]["user_payments"]

    # more events arrive, stamped inside the rows' windows: a new build sees them, the manifest's does not
    later = payment_events(400, end=end, span=dt.timedelta(hours=1), users=8, late_fraction=0.0, malformed_fraction=0.0,
                           seed=22)
    produce_records(producer_config(settings), topic, later)
    StreamProcessor(plan, settings).run(until_caught_up=True)
    fresh = store.get_historical_features(entity, FEATURES)
    assert not fresh.to_arrow().equals(built.to_arrow()), "the new events change a new build"
    again = store.rebuild_training_set(json.loads(json.dumps(manifest)), entity)
    assert again.to_arrow().equals(built.to_arrow()) and again.manifest["output_sha256"] == manifest["output_sha256"]
    with pytest.raises(FeatureRequestError, match="not the ones the training set was built from"):
        store.rebuild_training_set(manifest, entity.iloc[:-1])

    # the CLI: --manifest with the same entity file writes the same rows and says so
    rows = tmp_path / "rows.parquet"
    entity.to_parquet(rows)
    env = {**services.env(), "FEATURESTORE_PROJECT": settings.project, "FEATURESTORE_REGISTRY_PATH": str(settings.registry_root),
           "FEATURESTORE_OFFLINE_PATH": str(settings.offline_root)}
    out = tmp_path / "train.parquet"
    res = cli("training-set", "--entities", str(rows), "-f", FEATURES[0], "-f", FEATURES[1], "-o", str(out),
              "--repo", str(example_repo), env=env)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "train.manifest.json").is_file()
    third = payment_events(200, end=end, span=dt.timedelta(minutes=40), users=8, late_fraction=0.0, malformed_fraction=0.0,
                           seed=23)
    produce_records(producer_config(settings), topic, third)
    StreamProcessor(plan, settings).run(until_caught_up=True)
    res = cli("training-set", "--entities", str(rows), "--manifest", str(tmp_path / "train.manifest.json"),
              "-o", str(tmp_path / "again.parquet"), "--repo", str(example_repo), env=env)
    assert res.returncode == 0 and "identical to the original" in res.stdout, res.stdout + res.stderr
    assert pq.read_table(tmp_path / "again.parquet").equals(pq.read_table(out))
