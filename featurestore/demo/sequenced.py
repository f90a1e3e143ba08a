"""Sequenced transactions: each user's events carry 1, 2, 3, ... so that any lost or doubled
event shows (crash tests, the long crash benchmark). Comes with a one-view feature repo."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

from featurestore.demo.events import DemoEvent, json_bytes

#: A feature repository over sequenced transactions; write it with `write_sequenced_repo`.
SEQUENCED_REPO = '''
from datetime import timedelta
from pydantic import AwareDatetime, BaseModel
from featurestore import Aggregation, Entity, FeatureView, Field, KafkaSource

class Txn(BaseModel):
    user_id: int
    seq: int
    amount: float
    ts: AwareDatetime

user = Entity("user", join_keys=["user_id"])
txns = KafkaSource("txns", topic="TOPIC", schema=Txn, timestamp_field="ts")
user_txns = FeatureView("user_txns", entities=[user], source=txns, features=[
    Aggregation("seq", "count", windows=[timedelta(days=30)]),
    Aggregation("seq", "sum", windows=[timedelta(days=30)]),
    Aggregation("seq", "max", windows=[timedelta(days=30)]),
    Aggregation("amount", "sum", windows=[timedelta(hours=1)]),
    Field("seq", name="last_seq"),
])
'''


def write_sequenced_repo(folder: Path, topic: str) -> Path:
    """Create a feature repo reading sequenced transactions from `topic`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defs.py").write_text(SEQUENCED_REPO.replace("TOPIC", topic))
    return folder


def sequenced_events(n: int, end: dt.datetime, users: int = 2_000, seed: int = 2024) -> list[DemoEvent]:
    """`n` transactions over the ten days before `end`, user ids in [0, users), in time order."""
    rnd = random.Random(seed)
    seq: dict[int, int] = {}
    out = []
    start_ms = int(end.timestamp() * 1000) - 10 * 86_400_000
    step = 864_000_000 // n
    for i in range(n):
        user = rnd.randrange(users)
        seq[user] = seq.get(user, 0) + 1
        ts = dt.datetime.fromtimestamp((start_ms + i * step) / 1000, dt.timezone.utc)
        event = {"user_id": user, "seq": seq[user], "amount": round(rnd.uniform(1, 100), 2), "ts": ts.isoformat()}
        out.append(DemoEvent(str(user).encode(), json_bytes(event), event))
    return out
