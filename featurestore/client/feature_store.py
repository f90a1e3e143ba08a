"""FeatureStore: the SDK users call from inference and training code."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import redis

from featurestore.client.compare import FeatureComparison, compare_versions
from featurestore.client.consistency import ConsistencyReport, check_consistency
from featurestore.client.http import FeatureServerClient
from featurestore.client.online_query import resolve_features, resolve_query
from featurestore.client.request_time import RequestFeatureRunner
from featurestore.client.responses import OnlineResponse, TrainingSet
from featurestore.client.rollout_query import build_online_query
from featurestore.client.served_log import ServedLog
from featurestore.config import Settings, load_settings
from featurestore.errors import ConfigError, FeatureRequestError, one_of, unreachable
from featurestore.offline.history import history_snapshot
from featurestore.offline.point_in_time import MODES, point_in_time_features
from featurestore.online.reader import OnlineReader
from featurestore.plan import Plan, ViewPlan
from featurestore.plan.windows import to_epoch_ms
from featurestore.registry import FileRegistry, PlanWatch

if TYPE_CHECKING:
    import pandas as pd

def empty_store(settings: Settings) -> ConfigError:
    """The error for a Redis without the project's data: most likely the wrong URL."""
    return ConfigError(
        f"Redis at {settings.redis.display} holds no online data of project '{settings.project}'. If that is the "
        "wrong Redis, set FEATURESTORE_REDIS_URL (`featurestore dev env` prints the dev services' one); if no "
        "processor has written it yet, run `featurestore run` first, or set allow_empty_online_store "
        "(FEATURESTORE_ALLOW_EMPTY_ONLINE_STORE=1) to read it as empty")


ENGINES = ("duckdb", "spark")
"""Engines that build training sets."""
_PLAN_CHECK_S = 2.0
"""How often a FeatureStore looks for a newly applied registry version."""
_UNIT_MS = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)}


class FeatureStore:
    """Reads the features applied in a feature repository.

    `FeatureStore("feature_defs")` uses the repo's applied registry version and settings
    (arguments > environment > featurestore.yaml > defaults).
    `FeatureStore("feature_defs", server_url="http://host:6566", token=...)` reads online
    features through a feature server instead of Redis.
    """

    def __init__(
        self,
        repo_path: Path | str = ".",
        settings: Settings | None = None,
        server_url: str | None = None,
        token: str | None = None,
        server_ca_certs: str | None = None,
        **overrides: Any,
    ) -> None:
        self.repo_path = Path(repo_path)
        self.server_url = server_url
        """With a feature server URL, online reads go over HTTP (with `token`, default $FEATURESTORE_TOKEN)."""
        self.token = token if token is not None else os.environ.get("FEATURESTORE_TOKEN")
        self.server_ca_certs = server_ca_certs
        """CA bundle for an https:// server_url signed by a private CA (default: the system's)."""
        self._http: FeatureServerClient | None = None
        self.settings = settings.resolved(self.repo_path) if settings else load_settings(self.repo_path, **overrides)
        self.registry = FileRegistry(self.settings.paths.registry)
        self._watch = PlanWatch(self.registry, _PLAN_CHECK_S)
        self._plan: Plan | None = None
        self._pinned: Plan | None = None
        self._redis: redis.Redis[bytes] | None = None
        self._reader: OnlineReader | None = None
        self._runner: RequestFeatureRunner | None = None
        self._served_log: ServedLog | None = None

    # -- metadata -------------------------------------------------------------------
    @property
    def plan(self) -> Plan:
        """The applied plan: a newly applied or restored registry version is picked up within
        two seconds (or at once after refresh())."""
        if self._pinned is not None:
            return self._pinned
        plan = self._watch.plan()
        if plan is not self._plan:
            self._plan, self._reader, self._runner = plan, None, None
        return plan

    def refresh(self) -> None:
        """Read the registry's current version now."""
        self._watch.check_now()

    def _request_runner(self) -> RequestFeatureRunner | None:
        """Computes the plan's request-time features (imported from the repository once)."""
        if self._runner is None and self.plan.request_views:
            self._runner = RequestFeatureRunner(self.plan, self.settings.paths.repo, self.settings.server.request_feature_budget_ms)
        return self._runner

    def _online_reader(self) -> OnlineReader:
        if self._reader is None:
            reader = OnlineReader(self.redis, self.settings.project, self.plan)
            if not self.settings.server.allow_empty_online_store and not reader.holds_project():
                raise empty_store(self.settings)
            self._reader = reader
        return self._reader

    def list_feature_views(self) -> list[str]:
        return [v.name for v in self.plan.views]

    def list_features(self) -> list[str]:
        return [f"{v.name}:{f}" for v in self.plan.views for f in v.feature_names]

    def _resolve(self, features: Sequence[str] | None, service: str | None = None) -> list[tuple[ViewPlan, str]]:
        return resolve_features(self.plan, features, service)

    def list_feature_services(self) -> list[str]:
        return [s.name for s in self.plan.services]

    # -- online ----------------------------------------------------------------------
    @property
    def redis(self) -> redis.Redis[bytes]:
        if self._redis is None:
            self._redis = self.settings.redis.client()
        return self._redis

    def get_online_features(
        self,
        features: Sequence[str] | None = None,
        entity_rows: Sequence[Mapping[str, Any]] = (),
        full_feature_names: bool = False,
        at: dt.datetime | None = None,
        service: str | None = None,
        max_staleness: dt.timedelta | None = None,
        request_data: Mapping[str, Any] | None = None,
    ) -> OnlineResponse:
        """Current feature values for each entity row, in one Redis round trip (or one HTTP request).

        Features by "view:feature" reference or by `service` name. `at` evaluates windows
        and TTL as of that instant instead of now (meant for reproducible reads at or after
        the newest processed event). With `max_staleness`, values whose newest event is
        older come back as None with status `stale`. Statuses and event times are on the
        response (`status()`, `event_time()`, `staleness()`).

        Request-time features take their request fields from each entity row, else from
        `request_data` (a value for every row, or a list with one per row); a function that
        fails gives that value the status `error` (`status_detail()` says why).
        """
        if self.server_url is not None:
            return self._server().online(
                features, entity_rows, service=service, full_feature_names=full_feature_names, at=at,
                max_staleness=max_staleness, request_data=request_data,
            )
        query = build_online_query(self.plan, features, entity_rows, service, full_feature_names, request_data,
                                   self._request_runner)
        t_ms = to_epoch_ms(at) if at is not None else int(time.time() * 1000)
        max_ms = None if max_staleness is None else int(max_staleness.total_seconds() * 1000)
        try:
            results = self._online_reader().read_results(query.requests, t_ms, max_ms)
        except redis.RedisError as exc:
            raise unreachable("Redis", self.settings.redis.display, exc) from None
        response = query.response(results, t_ms)
        if service is not None:
            self._log_served(service, response)
        return response

    def _log_served(self, service: str, response: OnlineResponse) -> None:
        svc = next((s for s in self.plan.services if s.name == service), None)
        if svc is not None and svc.log_sample_rate > 0:
            if self._served_log is None:
                self._served_log = ServedLog(self.settings)
            self._served_log.log(self.plan, svc, response)

    def _server(self) -> FeatureServerClient:
        if self._http is None:
            assert self.server_url is not None
            self._http = FeatureServerClient(self.server_url, token=self.token, ca_certs=self.server_ca_certs)
        return self._http

    # -- offline ----------------------------------------------------------------------
    def get_historical_features(
        self,
        entity_df: pd.DataFrame | pa.Table,
        features: Sequence[str] | None = None,
        timestamp_column: str = "event_timestamp",
        full_feature_names: bool = False,
        mode: str = "corrected",
        service: str | None = None,
        snapshot: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        engine: str = "duckdb",
        spark_master: str | None = None,
    ) -> TrainingSet:
        """Point-in-time correct features for each entity row as of its timestamp.

        `mode="corrected"` (default): every event by event time, late ones included.
        `mode="as_served"`: what the online store held at each timestamp: events processed
        after it, or dropped as later than the view's allowed lateness, are absent.
        `service=` names a feature service instead of `features`. The result's `manifest`
        records how it was built; `snapshot` (a manifest's) reads each view's history only as
        far as it went then (see `rebuild_training_set`).
        `engine="spark"` computes the same set with Apache Spark (`pip install 'featurestore[spark]'`,
        Java 17+): the active session, or one on `spark_master` (default `local[*]`)."""
        if mode not in MODES:
            raise FeatureRequestError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if engine not in ENGINES:
            raise FeatureRequestError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        query = resolve_query(self.plan, tuple(features) if features is not None else None, service, full_feature_names)
        resolved, names, grouped, views, computed = query.resolved, query.names, query.grouped, query.views, query.computed
        table = _as_table(entity_df)
        if timestamp_column not in table.column_names:
            raise FeatureRequestError(
                f"entity_df has no timestamp column '{timestamp_column}' (columns: {', '.join(table.column_names)})"
            )
        runner = self._request_runner() if computed else None
        t_ms = _to_epoch_ms(table[timestamp_column], timestamp_column)
        values: dict[tuple[str, str], pa.ChunkedArray | pa.Array] = {}
        taken: dict[str, list[dict[str, Any]]] = {}
        for vn, feats in grouped.items():
            view = views[vn]
            missing = [k.name for k in view.join_keys if k.name not in table.column_names]
            if missing:
                raise FeatureRequestError(f"entity_df lacks join key(s) {missing} needed by view '{vn}'")
            keys = table.select([k.name for k in view.join_keys])
            if snapshot is not None and vn not in snapshot:
                raise FeatureRequestError(f"the snapshot has no history position of view '{vn}'")
            taken[vn] = [dict(s) for s in snapshot[vn]] if snapshot is not None else history_snapshot(self.settings.paths.offline, vn)
            if engine == "spark":
                from featurestore.offline.spark_engine import spark_point_in_time_features, spark_session

                result = spark_point_in_time_features(spark_session(spark_master), self.settings.paths.offline, view, feats,
                                                      keys, t_ms, mode=mode, snapshot=taken[vn])
            else:
                result = point_in_time_features(self.settings.paths.offline, view, feats, keys, t_ms, mode=mode,
                                                snapshot=taken[vn])
            for f in feats:
                values[(vn, f)] = result[f]
        if computed:
            assert runner is not None
            values |= _request_time_columns(runner, computed, table, values)
        out = table
        for (any_view, name), col in zip(resolved, names):
            out = out.append_column(col, values[(any_view.name, name)])
        latest = self.registry.latest()
        manifest = {
            "format": 1,
            "built_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "project": self.settings.project,
            "registry_version": latest.version if latest else None,
            "plan_hash": self.plan.content_hash,
            "features": [f"{v.base_name}@{v.version}:{n}" if isinstance(v, ViewPlan) else f"{v.name}:{n}" for v, n in resolved],
            "full_feature_names": full_feature_names,
            "mode": mode,
            "engine": engine,
            "timestamp_column": timestamp_column,
            "entity_rows": table.num_rows,
            "entity_sha256": table_sha256(table),
            "history": taken,
            "output_sha256": table_sha256(out),
        }
        return TrainingSet(out, manifest)

    def rebuild_training_set(self, manifest: Mapping[str, Any], entity_df: pd.DataFrame | pa.Table) -> TrainingSet:
        """The training set a manifest describes, built again: the same entity rows (checked
        by hash), features, mode and plan version, each view's history read only as far as it
        went then. Raises FeatureRequestError if the rows or the plan differ."""
        if manifest.get("format") != 1:
            raise FeatureRequestError(f"not a training-set manifest of format 1 (format {manifest.get('format')!r})")
        table = _as_table(entity_df)
        if table_sha256(table) != manifest["entity_sha256"]:
            raise FeatureRequestError(f"these entity rows are not the ones the training set was built from "
                                      f"({table.num_rows:,} rows here, {manifest['entity_rows']:,} then)")
        version = manifest.get("registry_version")
        plan = self.registry.get(version).plan if version is not None else self.plan
        if plan.content_hash != manifest["plan_hash"]:
            raise FeatureRequestError(f"registry version {version} is not the plan the training set was built with")
        self._pinned, self._runner = plan, None
        try:
            rebuilt = self.get_historical_features(table, manifest["features"], manifest["timestamp_column"],
                                                   manifest["full_feature_names"], manifest["mode"],
                                                   snapshot=manifest["history"], engine=manifest.get("engine", "duckdb"))
        finally:
            self._pinned, self._runner = None, None
        rebuilt.manifest["rebuilt_from"] = manifest.get("built_at")
        return rebuilt

    def sample_online(self, view: str, features: Sequence[str] | None = None, sample: int = 1000, seed: int = 0) -> pa.Table:
        """The current online values of up to `sample` entities of a view (drawn from its
        history): what the processors write, e.g. to compare with a training set
        (`featurestore monitor --online VIEW`)."""
        import random

        import duckdb

        from featurestore.offline.history import has_history
        from featurestore.offline.sql import identifier, read_history
        from featurestore.online.reader import ViewRequest

        try:
            plan_view = self.plan.resolve_view(view)
        except KeyError:
            raise FeatureRequestError(f"unknown view {view!r}: {one_of(view, sorted(self.plan.view_refs))}") from None
        names = list(features) if features else plan_view.feature_names
        unknown = [n for n in names if n not in plan_view.feature_names]
        if unknown:
            raise FeatureRequestError(f"view '{plan_view.name}' has no feature(s) {', '.join(unknown)}")
        keys: list[tuple[Any, ...]] = []
        if has_history(self.settings.paths.offline, plan_view.name):
            cols = ", ".join(identifier(k.name) for k in plan_view.join_keys)
            rows = duckdb.connect().execute(
                f"SELECT DISTINCT {cols} FROM {read_history(self.settings.paths.offline, plan_view.name)}").fetchall()
            keys = [tuple(r) for r in random.Random(seed).sample(rows, min(sample, len(rows)))]
        got = self._online_reader().read_results([ViewRequest(plan_view, names, keys)], int(time.time() * 1000))[0]
        columns: dict[str, Any] = {k.name: [key[i] for key in keys] for i, k in enumerate(plan_view.join_keys)}
        columns |= {n: got.values[n] for n in names}
        return pa.table(columns)

    def served_log(self, service: str) -> pa.Table:
        """The landed served-value log of a service (`featurestore served-log land`): one row per
        served entity row, with `served_at`, `request_id`, keys, values and statuses; join it to
        training rows and labels on the keys and `served_at`."""
        import duckdb

        from featurestore.offline.served import read_served, served_root
        from featurestore.plan.names import is_name

        if not is_name(service):
            raise FeatureRequestError(f"unknown feature service {service!r}")
        if not (served_root(self.settings.paths.offline) / f"service={service}").is_dir():
            raise FeatureRequestError(f"no served-value log of service {service!r} landed in {self.settings.paths.offline}: "
                                      "give it a log_sample_rate, then run `featurestore served-log land`")
        relation = duckdb.connect().sql(f"SELECT * FROM {read_served(self.settings.paths.offline, service)} "
                                        "ORDER BY served_at, request_id, \"row\"")
        return (getattr(relation, "to_arrow_table", None) or relation.arrow)()

    def check_consistency(self, sample: int = 200, at: dt.datetime | None = None) -> ConsistencyReport:
        """Compare `sample` entities per view online vs an offline recomputation as of `at` (now).

        Run it on a caught-up store: entities updated within the last checkpoint interval may
        differ because the history is flushed at checkpoints."""
        t_ms = to_epoch_ms(at) if at is not None else int(time.time() * 1000)
        reader = self._online_reader()
        return check_consistency(reader, self.settings.paths.offline, self.plan, t_ms, sample)

    def compare_versions(self, a: str, b: str, sample: int = 1000, at: dt.datetime | None = None,
                         online: bool = True) -> list[FeatureComparison]:
        """Shadow comparison of two live versions of a view ("user_payments@1", "user_payments@2"):
        per shared feature, over the same sampled entities online (as of `at`, default now) and
        the same sampled (entity, time) rows of the history, the mismatch rate, null rates, and
        means and quantiles of each version."""
        t_ms = to_epoch_ms(at) if at is not None else int(time.time() * 1000)
        reader = self._online_reader() if online else None
        return compare_versions(self.plan, reader, self.settings.paths.offline, a, b, t_ms, sample)

    def close(self) -> None:
        if self._served_log is not None:
            self._served_log.close()
            self._served_log = None
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None
        self._reader = None


def _request_time_columns(runner: RequestFeatureRunner, computed: list[str], table: pa.Table,
                          stored: dict[tuple[str, str], Any]) -> dict[tuple[str, str], pa.Array]:
    """Request-time features over a training set: each row's request fields from the entity
    frame's columns and its point-in-time stored inputs, through the same functions as online
    (a failing value is null)."""
    n = table.num_rows
    request: dict[str, dict[str, list[Any]]] = {}
    for source in sorted({runner.features[r][0].request_source for r in computed}):
        fields = [f for f in runner.models[source].model_fields if f in table.column_names]
        request[source] = runner.request_columns(source, {f: table.column(f).to_pylist() for f in fields}, n)
    inputs = {f"{v}:{f}": col.to_pylist() for (v, f), col in stored.items()}
    done = runner.compute(computed, n, request, inputs, budget=False)
    out = {}
    for ref, c in done.items():
        view, _, name = ref.partition(":")
        out[(view, name)] = pa.array(c.values, type=_ARROW_TYPES[runner.features[ref][1].dtype])
    return out


_ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_(),
                "datetime": pa.timestamp("us", tz="UTC")}


def table_sha256(table: pa.Table) -> str:
    """A content hash of an Arrow table (its columns' names, types and values)."""
    import hashlib

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema.remove_metadata()) as writer:
        writer.write_table(table.replace_schema_metadata(None).combine_chunks())
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _as_table(entity_df: Any) -> pa.Table:
    import pandas as pd

    if isinstance(entity_df, pa.Table):
        return entity_df
    if isinstance(entity_df, pd.DataFrame):
        return pa.Table.from_pandas(entity_df, preserve_index=False)
    raise FeatureRequestError(f"entity_df must be a pandas DataFrame or a pyarrow Table, got {type(entity_df).__name__}")


def _to_epoch_ms(col: pa.ChunkedArray, name: str) -> pa.Array:
    typ = col.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        import pandas as pd

        try:
            col = pa.chunked_array([pa.array(pd.to_datetime(col.to_pandas(), utc=True))])
        except (ValueError, TypeError) as exc:
            raise FeatureRequestError(f"entity_df column '{name}' has unparseable timestamps: {exc}") from None
        typ = col.type
    if pa.types.is_date(typ):
        col = col.cast(pa.timestamp("ms"))
        typ = col.type
    if not pa.types.is_timestamp(typ):
        raise FeatureRequestError(f"entity_df column '{name}' must hold timestamps, got {typ}")
    if col.null_count:
        raise FeatureRequestError(f"entity_df column '{name}' has {col.null_count} null timestamps")
    mul, div = _UNIT_MS[typ.unit]
    raw = col.combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False)
    return pa.array(np.floor_divide(raw * mul, div), pa.int64())
