"""The feature server: online (and offline) features over HTTP, with tokens, an audit log and metrics.

Every request is authenticated (401), authorized per feature view (403: deny by default),
audited (one JSON line, no key values of PII views) and measured (Prometheus). Online
reads use the same resolution and reader as the SDK, over an asyncio Redis client.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import redis
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from featurestore import metrics
from featurestore.client.http import ONLINE_PATH
from featurestore.client.online_query import OnlineQuery
from featurestore.compile.diff import diff_plans
from featurestore.config import Settings, load_settings
from featurestore.errors import FeatureRequestError, FeatureStoreError, RegistryError
from featurestore.online.reader import OnlineReader
from featurestore.plan import Plan, ViewPlan
from featurestore.registry import FileRegistry
from featurestore.server.audit import AuditLog, logged_keys
from featurestore.server.auth import ANONYMOUS, TokenRecord, TokenStore, allowed
from featurestore.server.models import (
    ApplyAnswer,
    ApplyRequest,
    ErrorAnswer,
    HistoricalAnswer,
    HistoricalRequest,
    OnlineAnswer,
    OnlineRequest,
)

_JSON = "application/json"
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorAnswer, "description": "No token, or an unknown, wrong or revoked one."},
    403: {"model": ErrorAnswer, "description": "The token has no permission on a requested view."},
    400: {"model": ErrorAnswer, "description": "Unknown feature or service, bad entity keys."},
    503: {"model": ErrorAnswer, "description": "Redis or the offline store is unreachable."},
}
#: Offline requests over HTTP are for small frames; bigger ones belong to the SDK.
MAX_HISTORICAL_ROWS = 100_000
_PLAN_CHECK_S = 2.0


class Refused(Exception):
    """A request ends with this HTTP status and message (audited like every other)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Audit:
    """What the audit line of one request says; filled in as the request is understood."""

    endpoint: str
    started: float
    method: str = ""
    path: str = ""
    client: str | None = None
    token: TokenRecord | None = None
    views: list[str] = field(default_factory=list)
    entities: int = 0
    keys: dict[str, Any] = field(default_factory=dict)


class FeatureServer:
    """State shared by the requests of one server process."""

    def __init__(self, settings: Settings, auth: bool = True) -> None:
        self.settings = settings
        self.registry = FileRegistry(settings.registry_root)
        self.tokens = TokenStore(settings.tokens_file) if auth else None
        self.audit = AuditLog(settings.audit_log_file)
        self.redis = aioredis.Redis.from_url(settings.redis_url, **settings.redis_options())
        self._plan: Plan | None = None
        self._plan_stamp: int | None = None
        self._plan_checked = 0.0
        self._reader: OnlineReader | None = None

    # -- plan ---------------------------------------------------------------------------
    @property
    def plan(self) -> Plan:
        """The applied plan, re-read when a new version is applied (checked every 2 s)."""
        now = time.monotonic()
        if self._plan is None or now - self._plan_checked > _PLAN_CHECK_S:
            self._plan_checked = now
            try:
                stamp = self.registry.path.stat().st_mtime_ns
            except FileNotFoundError:
                stamp = None
            if self._plan is None or stamp != self._plan_stamp:
                try:
                    self._plan = self.registry.current_plan()
                except RegistryError as exc:
                    raise Refused(503, "no_plan", str(exc)) from None
                self._plan_stamp = stamp
                self._reader = OnlineReader(None, self.settings.project, self._plan)
        assert self._plan is not None
        return self._plan

    @property
    def reader(self) -> OnlineReader:
        self.plan  # noqa: B018 (refreshes the reader with the plan)
        assert self._reader is not None
        return self._reader

    # -- auth -------------------------------------------------------------------------------
    def authenticate(self, header: str, audit: Audit) -> Audit:
        """Who sends the request (from its Authorization header), or 401."""
        if self.tokens is None:
            audit.token = ANONYMOUS
            return audit
        scheme, _, token = header.partition(" ")
        if not header:
            raise Refused(401, "unauthenticated", "missing token: send 'Authorization: Bearer <token>'")
        record = self.tokens.authenticate(token.strip() if scheme.lower() == "bearer" else None)
        if record is None:
            raise Refused(401, "unauthenticated", "invalid, unknown or revoked token")
        audit.token = record
        return audit

    def authorize(self, audit: Audit, action: str, view_names: Sequence[str]) -> None:
        """403 unless the token may do `action` on every named view (unknown names: only `*`/admin grants)."""
        assert audit.token is not None
        audit.views = list(dict.fromkeys(view_names))
        views = {v.name: v for v in self.plan.views}
        denied = [n for n in audit.views if not allowed(audit.token, action, views.get(n), n)]
        if denied:
            raise Refused(403, "forbidden", f"token '{audit.token.name}' may not {action} on {', '.join(denied)}")

    def requested_views(self, features: Sequence[str] | None, service: str | None) -> list[str]:
        """View names a request touches, before validating it (so refusals reveal nothing)."""
        if service is not None:
            try:
                return self.plan.service(service).view_names
            except KeyError:
                return [f"service:{service}"]
        return [ref.partition(":")[0] for ref in features or []]

    # -- audit + metrics ------------------------------------------------------------------------
    def finish(self, audit: Audit | None, status: int, reason: str = "") -> None:
        """Count, time and audit one answered request."""
        if audit is None:
            return
        latency = time.perf_counter() - audit.started
        metrics.REQUESTS.labels(audit.endpoint, str(status)).inc()
        metrics.REQUEST_SECONDS.labels(audit.endpoint).observe(latency)
        entry: dict[str, Any] = {
            "token_id": audit.token.id if audit.token else None,
            "token_name": audit.token.name if audit.token else None,
            "client": audit.client,
            "method": audit.method,
            "path": audit.path,
            "views": audit.views,
            "entities": audit.entities,
            "status": status,
            "latency_ms": round(latency * 1000, 3),
        }
        if audit.keys:
            entry["keys"] = audit.keys
        if reason:
            entry["reason"] = reason
        self.audit.write(entry)

    async def online(self, audit: Audit, body: OnlineRequest) -> bytes:
        """Answer an authenticated online request (authorize, read, encode, audit)."""
        self.authorize(audit, "read_online", self.requested_views(body.features, body.service))
        query = OnlineQuery.build(self.plan, body.features, _rows(body.entities), body.service, body.full_feature_names)
        self.note_entities(audit, query)
        t_ms = body.at_ms if body.at_ms is not None else int(time.time() * 1000)
        results = await self.reader.aread_results(self.redis, query.requests, t_ms, body.max_staleness_ms)
        response = query.response(results, t_ms)
        features: dict[str, Any] = {}
        for name in response.feature_names:
            events = response.event_time_ms(name)
            features[name] = {
                "values": response.column(name),
                "statuses": response.status(name),
                "event_time_ms": events,
                "staleness_ms": [None if e is None else t_ms - e for e in events],
            }
        _count_values(query, results, t_ms)
        entities = {k: response.column(k) for k in response.column_names if k not in features}
        self.finish(audit, 200)
        return orjson.dumps({"read_at_ms": t_ms, "entities": entities, "features": features})

    def refusal(self, audit: Audit | None, exc: Exception) -> tuple[int, bytes] | None:
        """The error answer for an expected failure (audited), or None for a bug."""
        if isinstance(exc, Refused):
            status, code, message = exc.status, exc.code, exc.message
        elif isinstance(exc, FeatureRequestError):
            status, code, message = 400, "bad_request", str(exc)
        elif isinstance(exc, (RequestValidationError, ValidationError)):
            errs = exc.errors()
            status, code = 422, "invalid_body"
            message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errs[:3])
        elif isinstance(exc, redis.RedisError):
            status, code, message = 503, "unavailable", f"online store {self.settings.redis_display}: {exc}"
        elif isinstance(exc, FeatureStoreError):
            status, code, message = 503, "unavailable", str(exc)
        else:
            return None
        self.finish(audit, status, message)
        return status, orjson.dumps({"error": {"code": code, "message": message}})

    def note_entities(self, audit: Audit, query: OnlineQuery) -> None:
        for req in query.requests:
            audit.entities = max(audit.entities, len(req.keys))
            keys = logged_keys(req.view, list(req.keys))
            if keys is not None:
                audit.keys[req.view.name] = keys

    async def close(self) -> None:
        await self.redis.aclose()  # type: ignore[attr-defined]
        self.audit.close()


class FastOnlinePath:
    """ASGI wrapper answering POST /v1/features/online without the framework's routing and
    middleware (a third of a millisecond per request); the same code as the FastAPI route,
    which documents it (OpenAPI) and serves it when the app is mounted elsewhere."""

    def __init__(self, app: FastAPI, server: FeatureServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != ONLINE_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        audit = Audit("online", time.perf_counter(), "POST", ONLINE_PATH, client[0] if client else None)
        header = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
        try:
            self.server.authenticate(header, audit)
            chunks = []
            more = True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = OnlineRequest.model_validate_json(b"".join(chunks))
            status, payload = 200, await self.server.online(audit, body)
        except Exception as exc:
            answer = self.server.refusal(audit, exc)
            if answer is None:
                raise
            status, payload = answer
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def _error(status: int, code: str, message: str) -> Response:
    return Response(orjson.dumps({"error": {"code": code, "message": message}}), status, media_type=_JSON)


def create_app(server: FeatureServer) -> FastAPI:
    """The FastAPI application of one FeatureServer."""
    from featurestore import __version__

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await server.close()

    app = FastAPI(
        lifespan=lifespan,
        title="featurestore feature server",
        version=__version__,
        description="Online features with per-value freshness; bearer tokens; deny by default.",
    )
    app.state.server = server

    def guard(endpoint: str) -> Any:
        def dependency(request: Request) -> Audit:
            audit = Audit(endpoint, time.perf_counter(), request.method, request.url.path,
                          request.client.host if request.client else None)
            request.state.audit = audit
            return server.authenticate(request.headers.get("authorization", ""), audit)

        return Depends(dependency)

    async def _refused(request: Request, exc: Exception) -> Response:
        answer = server.refusal(getattr(request.state, "audit", None), exc)
        if answer is None:
            raise exc
        return Response(answer[1], answer[0], media_type=_JSON)

    for kind in (Refused, FeatureRequestError, RequestValidationError, redis.RedisError, FeatureStoreError):
        app.add_exception_handler(kind, _refused)

    @app.get("/v1/health", summary="Liveness (no token needed; says nothing but ok)")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/ready", summary="Readiness: a plan is applied and Redis answers (no token needed)",
             responses={503: {"model": ErrorAnswer}})
    async def ready() -> Response:
        try:
            server.plan  # noqa: B018
            await server.redis.ping()
        except (Refused, redis.RedisError) as exc:
            return _error(503, "not_ready", str(exc))
        return Response(b'{"status":"ready"}', media_type=_JSON)

    @app.post(ONLINE_PATH, response_model=OnlineAnswer, responses=_ERRORS,
              summary="Online feature values with status, event time and staleness per value (read_online)")
    async def online(body: OnlineRequest, audit: Audit = guard("online")) -> Response:
        return Response(await server.online(audit, body), media_type=_JSON)

    @app.post("/v1/features/historical", response_model=HistoricalAnswer, responses=_ERRORS,
              summary="A point-in-time correct training set for a small entity frame (read_offline)")
    async def historical(body: HistoricalRequest, request: Request, audit: Audit = guard("historical")) -> Response:
        from featurestore.client import FeatureStore

        server.authorize(audit, "read_offline", server.requested_views(body.features, body.service))
        table = _entity_table(body)
        audit.entities = table.num_rows
        store = FeatureStore(settings=server.settings)
        result = await run_in_threadpool(
            store.get_historical_features, table, body.features, body.timestamp_column, body.full_feature_names, body.mode,
            body.service,
        )
        out = result.to_arrow()
        columns = {name: out.column(name).to_pylist() for name in out.column_names}
        server.finish(audit, 200)
        return Response(orjson.dumps({"columns": columns}, option=orjson.OPT_NAIVE_UTC), media_type=_JSON)

    @app.get("/v1/registry", responses=_ERRORS, summary="The views and services this token may read")
    async def registry(request: Request, audit: Audit = guard("registry")) -> Response:
        assert audit.token is not None
        token = audit.token
        readable = [
            v for v in server.plan.views
            if allowed(token, "read_online", v, v.name) or allowed(token, "read_offline", v, v.name)
        ]
        audit.views = [v.name for v in readable]
        if not readable:
            raise Refused(403, "forbidden", f"token '{token.name}' may read no feature view")
        names = set(audit.views)
        services = [s for s in server.plan.services if set(s.view_names) <= names]
        body = {
            "project": server.settings.project,
            "views": [_describe(v) for v in readable],
            "services": [s.model_dump(mode="json") for s in services],
        }
        server.finish(audit, 200)
        return Response(orjson.dumps(body), media_type=_JSON)

    @app.post("/v1/apply", response_model=ApplyAnswer, responses=_ERRORS,
              summary="Record a compiled plan as a new registry version (apply on every changed view)")
    async def apply(body: ApplyRequest, request: Request, audit: Audit = guard("apply")) -> Response:
        current = server.registry.latest()
        diff = diff_plans(current.plan if current else None, body.plan)
        touched: list[str] = []
        for change in diff.changes:
            if change.kind == "FeatureView":
                touched.append(change.name)
            elif change.kind == "FeatureService":
                svc = next((s for s in body.plan.services + (current.plan.services if current else []) if s.name == change.name))
                touched.extend(svc.view_names)
            else:
                touched.append("*")  # entities and sources: a grant on every view
        server.authorize(audit, "apply", touched or [v.name for v in body.plan.views])
        version = await run_in_threadpool(server.registry.apply, body.plan, body.note)
        server.finish(audit, 200)
        answer = {"version": version.version if version else None, "changes": diff.lines()}
        return Response(orjson.dumps(answer), media_type=_JSON)

    @app.get("/metrics", summary="Prometheus metrics of this server (admin)", responses=_ERRORS)
    async def prometheus(request: Request, audit: Audit = guard("metrics")) -> Response:
        server.authorize(audit, "admin", ["*"])
        server.finish(audit, 200)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _rows(entities: dict[str, list[Any]]) -> list[dict[str, Any]]:
    lengths = {len(v) for v in entities.values()}
    if len(lengths) > 1:
        raise FeatureRequestError(f"entity columns differ in length: {({k: len(v) for k, v in entities.items()})}")
    n = lengths.pop() if lengths else 0
    names = list(entities)
    cols = [entities[k] for k in names]
    return [{k: col[i] for k, col in zip(names, cols)} for i in range(n)]


def _count_values(query: OnlineQuery, results: Sequence[Any], t_ms: int) -> None:
    for req, res in zip(query.requests, results):
        counts: dict[str, int] = {}
        for state in res.states:
            counts[state] = counts.get(state, 0) + len(req.features)
        for state, n in counts.items():
            metrics.VALUES.labels(req.view.name, state).inc(n)
        metrics.STALENESS.observe_many((req.view.name,), [max(0.0, (t_ms - e) / 1000) for e in res.event_ms if e is not None])


def _entity_table(body: HistoricalRequest) -> pa.Table:
    rows = _rows(body.entities)
    if len(rows) > MAX_HISTORICAL_ROWS:
        raise FeatureRequestError(f"{len(rows):,} entity rows: at most {MAX_HISTORICAL_ROWS:,} over HTTP; use the SDK for more")
    ts = body.entities.get(body.timestamp_column)
    columns: dict[str, Any] = dict(body.entities)
    if ts is not None and ts and all(isinstance(x, int) and not isinstance(x, bool) for x in ts):
        columns[body.timestamp_column] = pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    try:
        return pa.table(columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise FeatureRequestError(f"entity columns: {exc}") from None


def _describe(view: ViewPlan) -> dict[str, Any]:
    features: list[dict[str, Any]] = [{"name": f.name, "kind": f.kind, "dtype": f.dtype} for f in view.row_features]
    features += [{"name": a.name, "kind": "aggregation", "function": a.function, "column": a.column, "window_ms": a.window_ms}
                 for a in view.aggregations]
    return {
        "name": view.name,
        "entities": view.entities,
        "join_keys": [k.model_dump() for k in view.join_keys],
        "features": features,
        "ttl_ms": view.ttl_ms,
        "owner": view.owner,
        "description": view.description,
        "tags": view.tags,
    }


def app_from_environment() -> FastOnlinePath:
    """App factory for `uvicorn --factory` and multi-worker serving: repo and auth from the environment."""
    repo = Path(os.environ.get("FEATURESTORE_REPO", "."))
    auth = os.environ.get("FEATURESTORE_SERVE_AUTH", "1") != "0"
    server = FeatureServer(load_settings(repo), auth=auth)
    return FastOnlinePath(create_app(server), server)
