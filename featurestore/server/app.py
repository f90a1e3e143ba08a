"""The feature server: online (and offline) features over HTTP, with tokens, an audit log and metrics.

Every request first passes the edge (`featurestore.server.edge`: trusted host, token
before body, size and content-type limits, one audit line with the final status), then is
authorized per feature view (403: deny by default). Online reads use the same resolution
and reader as the SDK, over an asyncio Redis client. A plan applied over HTTP is validated
as `compile` validates and may name no code the applied plan does not name.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import orjson
import pyarrow as pa
import redis
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from featurestore import metrics
from featurestore.client.guards import GuardWatch
from featurestore.client.http import ONLINE_PATH
from featurestore.client.online_query import OnlineQuery
from featurestore.client.request_time import RequestFeatureRunner, request_closure
from featurestore.client.responses import OnlineResponse
from featurestore.client.rollout_query import RolloutQuery, build_online_query
from featurestore.client.served_log import ServedLog
from featurestore.compile.diff import PlanDiff, diff_plans
from featurestore.config import Settings, load_settings
from featurestore.errors import ConfigError, FeatureRequestError, FeatureStoreError, RegistryError
from featurestore.online.connection import AsyncOnlineRedis
from featurestore.online.reader import OnlineReader
from featurestore.plan import Plan, RequestViewPlan, ViewPlan
from featurestore.plan.validate import code_refs, validate_plan
from featurestore.registry import FileRegistry, PlanWatch
from featurestore.server.audit import Audit, AuditLog, is_pii, logged_keys
from featurestore.server.auth import ANONYMOUS, TokenStore, allowed
from featurestore.server.console import add_console, console_error
from featurestore.server.edge import AUDIT_KEY, Edge, default_trusted_hosts, is_loopback
from featurestore.server.errors import Refused, answer_of, error_body
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
    413: {"model": ErrorAnswer, "description": "The body, entities or rows exceed the server's limits."},
    415: {"model": ErrorAnswer, "description": "The body is not application/json."},
    422: {"model": ErrorAnswer, "description": "The body does not match the schema."},
    503: {"model": ErrorAnswer, "description": "Redis or the offline store is unreachable."},
}
_PLAN_CHECK_S = 2.0
log = logging.getLogger(__name__)


class FeatureServer:
    """State shared by the requests of one server process."""

    def __init__(self, settings: Settings, auth: bool = True) -> None:
        self.settings = settings
        self.registry = FileRegistry(settings.paths.registry)
        self.tokens = TokenStore(settings.paths.tokens) if auth else None
        self.audit = AuditLog(settings.paths.audit_log)
        self.redis = settings.redis.async_client()
        self.online_redis = AsyncOnlineRedis(self.redis)
        self._watch = PlanWatch(self.registry, _PLAN_CHECK_S)
        self.guards = GuardWatch()
        self.served_log = ServedLog(settings)
        self._plan: Plan | None = None
        self._reader: OnlineReader | None = None
        self._runner: RequestFeatureRunner | None = None

    # -- plan ---------------------------------------------------------------------------
    @property
    def plan(self) -> Plan:
        """The applied plan, re-read when a version is applied or restored (checked every 2 s)."""
        try:
            plan = self._watch.plan()
        except RegistryError as exc:
            raise Refused(503, "no_plan", str(exc)) from None
        if plan is not self._plan:
            self._plan = plan
            self._reader = OnlineReader(None, self.settings.project, plan)
            self._runner = None
        return plan

    @property
    def runner(self) -> RequestFeatureRunner | None:
        """Computes the plan's request-time features (None when it has none; imported once per plan)."""
        plan = self.plan
        if self._runner is None and plan.request_views:
            self._runner = RequestFeatureRunner(plan, self.settings.paths.repo, self.settings.server.request_feature_budget_ms)
        return self._runner

    def views_read_by(self, view: RequestViewPlan) -> set[str]:
        """The views whose features a request-time view's features read (its own included)."""
        computed, stored = request_closure(self.plan, (f"{view.name}:{f}" for f in view.feature_names))
        return {ref.partition(":")[0] for ref in computed + stored}

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
        """403 unless the token may do `action` on every named view (unknown names: only `*`/admin
        grants). The message names only what the request named: the same for "no such view" and
        "not yours"."""
        assert audit.token is not None
        audit.views = list(dict.fromkeys(view_names))
        views: dict[str, ViewPlan | RequestViewPlan] = dict(self.plan.view_refs)
        views |= {v.name: v for v in self.plan.request_views}
        denied = [n for n in audit.views if not allowed(audit.token, action, views.get(n), n)]
        if denied:
            raise Refused(403, "forbidden", f"token '{audit.token.name}' may not {action} on {', '.join(denied)}")

    def authorize_apply(self, audit: Audit, old: Plan | None, new: Plan) -> PlanDiff:
        """403 unless the token may apply every change of the diff from `old` to `new`: each view
        added, removed or changed (its grant must cover the view before and after the change), the
        views a changed or removed service read before and read after, and every view for a
        change of an entity or a source. The refusal names nothing."""
        assert audit.token is not None
        diff = diff_plans(old, new)
        before = {v.name: v for v in old.views} if old else {}
        after = {v.name: v for v in new.views}
        services = {s.name: s for s in (old.services if old else [])}
        touched: list[str] = []
        for change in diff.changes:
            if change.kind == "FeatureView":
                touched.append(change.name)
            elif change.kind == "FeatureService":
                for plan_services in (services, {s.name: s for s in new.services}):
                    if change.name in plan_services:
                        touched.extend(plan_services[change.name].view_names)
            else:
                touched.append("*")  # entities and sources: a grant on every view
        touched = list(dict.fromkeys(touched or [v.name for v in new.views] or ["*"]))
        audit.views = touched
        token = audit.token
        ok = all(
            allowed(token, "apply", before.get(n), n) and (n not in after or allowed(token, "apply", after[n], n))
            for n in touched
        )
        if not ok:
            raise Refused(403, "forbidden",
                          f"token '{token.name}' may not apply this plan: it changes what the token's apply grants do not cover")
        return diff

    def requested_views(self, features: Sequence[str] | None, service: str | None) -> list[str]:
        """View names a request touches, before validating it (so refusals reveal nothing)."""
        if service is not None:
            try:
                refs = self.plan.service(service).all_refs
            except KeyError:
                return [f"service:{service}"]
        else:
            refs = [ref for ref in features or [] if isinstance(ref, str)]
        names = list(dict.fromkeys(ref.partition(":")[0] for ref in refs))
        computed, stored = request_closure(self.plan, refs)  # a request-time feature reveals what it reads
        names += [r.partition(":")[0] for r in computed + stored]
        return list(dict.fromkeys(names))

    # -- audit + metrics ------------------------------------------------------------------------
    def finish(self, audit: Audit, status: int) -> None:
        """Count, time and audit one answered request (the edge calls this once per request)."""
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
        if audit.reason:
            entry["reason"] = audit.reason
        self.audit.write(entry)

    def refusal(self, audit: Audit | None, exc: BaseException) -> tuple[int, bytes] | None:
        """The error answer for an expected failure, its reason noted for the audit; None for a bug."""
        answer = answer_of(exc, self.settings.redis.display)
        if answer is None:
            return None
        status, code, message = answer
        if audit is not None:
            # key values of pii views never reach the log, not even inside an error message
            audit.reason = f"{code} (details withheld: the request reads a pii view)" if self._reads_pii(audit) else message
        return status, error_body(code, message)

    def _reads_pii(self, audit: Audit) -> bool:
        if not audit.views:
            return False
        try:
            views = {v.name: v for v in self.plan.views}
        except Refused:
            return False
        return any(is_pii(views[n]) for n in audit.views if n in views)

    def note_entities(self, audit: Audit, query: OnlineQuery | RolloutQuery) -> None:
        for req in query.requests:
            audit.entities = max(audit.entities, len(req.keys))
            keys = logged_keys(req.view, list(req.keys))
            if keys is not None:
                audit.keys[req.view.name] = keys

    # -- online ---------------------------------------------------------------------------------
    async def online_body(self, audit: Audit, body: bytes) -> bytes:
        """Answer an online request from its raw JSON body (the edge's hot path)."""
        return await self.online(audit, OnlineRequest.model_validate_json(body))

    async def online(self, audit: Audit, body: OnlineRequest) -> bytes:
        """Answer an authenticated online request (authorize, read, encode)."""
        self.authorize(audit, "read_online", self.requested_views(body.features, body.service))
        n = _check_rows(body.entities, self.settings.server.max_online_entities, "entities", "max_online_entities")
        audit.entities = n
        query = build_online_query(self.plan, body.features, _rows(body.entities), body.service, body.full_feature_names,
                                   body.request_data, lambda: self.runner)
        self.note_entities(audit, query)
        t_ms = body.at_ms if body.at_ms is not None else int(time.time() * 1000)
        results = await self.reader.aread_results(self.online_redis, query.requests, t_ms, body.max_staleness_ms)
        response = query.response(results, t_ms)
        if isinstance(query, RolloutQuery) and query.service.guards:
            await self.check_guards(query, response)
        if body.service is not None:
            svc = next((s for s in self.plan.services if s.name == body.service), None)
            if svc is not None and svc.log_sample_rate > 0:
                self.served_log.log(self.plan, svc, response)
        features: dict[str, Any] = {}
        for name in response.feature_names:
            events = response.event_time_ms(name)
            features[name] = {
                "values": response.column(name),
                "statuses": response.status(name),
                "event_time_ms": events,
                "staleness_ms": [None if e is None else t_ms - e for e in events],
            }
            if "error" in features[name]["statuses"]:
                features[name]["details"] = response.status_detail(name)
        _count_values(query, results, t_ms)
        entities = {k: response.column(k) for k in response.column_names if k not in features}
        answer: dict[str, Any] = {"read_at_ms": t_ms, "entities": entities, "features": features}
        if response.variants is not None:
            answer["variants"] = response.variants
        return orjson.dumps(answer)

    async def check_guards(self, query: RolloutQuery, response: OnlineResponse) -> None:
        """Count what the rollout served; a guard crossed over its window moves the split back."""
        now = time.monotonic()
        self.guards.observe(query.service, response, query.mismatches, now)
        crossed = self.guards.crossed(query.service, now)
        if crossed is not None:
            await run_in_threadpool(self.roll_back, query.service.name, crossed[0].metric, crossed[1])

    def roll_back(self, service: str, metric: str, reason: str) -> None:
        """Record a registry version whose split sends every entity of `service` to its control."""
        self.guards.reset(service)
        latest = self.registry.latest()
        if latest is None:
            return
        try:
            svc = latest.plan.service(service)
        except KeyError:
            return
        if not any(svc.split.values()):
            return  # already rolled back (by another worker)
        back = svc.model_copy(update={"split": {v: 0.0 for v in svc.split}})
        plan = latest.plan.model_copy(update={"services": [back if s.name == service else s for s in latest.plan.services]})
        try:
            version = self.registry.apply(plan, note=f"automatic rollback of {service}: {reason}")
        except RegistryError as exc:  # another worker applied meanwhile: its version stands
            log.warning("automatic rollback of %s not recorded: %s", service, exc)
            return
        metrics.ROLLBACKS.labels(service, metric).inc()
        log.warning("automatic rollback of %s (registry version %s): %s", service, version.version if version else "?", reason)
        self._watch.check_now()

    async def close(self) -> None:
        await run_in_threadpool(self.served_log.close)
        await self.online_redis.aclose()
        await self.redis.aclose()
        self.audit.close()


def create_app(server: FeatureServer, trusted_hosts: Sequence[str] = ("*",)) -> Edge:
    """The feature server's ASGI application: the edge (limits, auth, audit) before the FastAPI app."""
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
        docs_url=None,  # the Swagger and ReDoc pages load scripts from a CDN: /openapi.json only
        redoc_url=None,
    )
    app.state.server = server

    def guard(endpoint: str) -> Any:
        def dependency(request: Request) -> Audit:
            audit = request.scope.get(AUDIT_KEY)
            if audit is None:  # served without the edge: authenticate here (the body is already read)
                audit = Audit(endpoint, time.perf_counter(), request.method, request.url.path)
                request.scope[AUDIT_KEY] = audit
                server.authenticate(request.headers.get("authorization", ""), audit)
            return cast(Audit, audit)

        return Depends(dependency)

    async def _refused(request: Request, exc: Exception) -> Response:
        answer = server.refusal(request.scope.get(AUDIT_KEY), exc)
        if answer is None:
            raise exc
        if request.url.path.startswith("/ui/") and request.method == "GET":  # a page: said as a page
            message = orjson.loads(answer[1])["error"]["message"]
            return console_error(answer[0], message)
        return Response(answer[1], answer[0], media_type=_JSON)

    for kind in (FeatureStoreError, RequestValidationError, StarletteHTTPException, redis.RedisError):
        app.add_exception_handler(kind, _refused)

    add_console(app, server, guard)

    @app.get("/v1/health", summary="Liveness (no token needed; says nothing but ok)")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/ready", summary="Readiness: a plan is applied and Redis answers (no token needed; says only ready or not)",
             responses={503: {"model": ErrorAnswer}})
    async def ready() -> Response:
        try:
            server.plan  # noqa: B018
            await server.redis.ping()
        except (Refused, redis.RedisError) as exc:
            log.warning("not ready: %s", exc)
            return Response(error_body("not_ready", "not ready"), 503, media_type=_JSON)
        return Response(b'{"status":"ready"}', media_type=_JSON)

    @app.post(ONLINE_PATH, response_model=OnlineAnswer, responses=_ERRORS,
              summary="Online feature values with status, event time and staleness per value (read_online)")
    async def online(body: OnlineRequest, audit: Audit = guard("online")) -> Response:
        return Response(await server.online(audit, body), media_type=_JSON)

    @app.post("/v1/features/historical", response_model=HistoricalAnswer, responses=_ERRORS,
              summary="A point-in-time correct training set for a small entity frame (read_offline)")
    async def historical(body: HistoricalRequest, audit: Audit = guard("historical")) -> Response:
        from featurestore.client import FeatureStore

        server.authorize(audit, "read_offline", server.requested_views(body.features, body.service))
        audit.entities = _check_rows(body.entities, server.settings.server.max_historical_rows, "entity rows", "max_historical_rows")
        table = _entity_table(body)
        store = FeatureStore(server.settings.paths.repo, settings=server.settings)
        result = await run_in_threadpool(
            store.get_historical_features, table, body.features, body.timestamp_column, body.full_feature_names, body.mode,
            body.service,
        )
        out = result.to_arrow()
        columns = {name: out.column(name).to_pylist() for name in out.column_names}
        return Response(orjson.dumps({"columns": columns}, option=orjson.OPT_NAIVE_UTC), media_type=_JSON)

    @app.get("/v1/registry", responses=_ERRORS, summary="The views and services this token may read")
    async def registry(audit: Audit = guard("registry")) -> Response:
        assert audit.token is not None
        token = audit.token
        readable = [
            v for v in server.plan.views
            if allowed(token, "read_online", v, v.name) or allowed(token, "read_offline", v, v.name)
        ]
        audit.views = [v.name for v in readable]
        if not readable:
            raise Refused(403, "forbidden", f"token '{token.name}' may read no feature view")
        names = set(audit.views) | {v.base_name for v in readable}
        request_views = [v for v in server.plan.request_views
                         if allowed(token, "read_online", v, v.name) and server.views_read_by(v) <= names | {v.name}]
        names |= {v.name for v in request_views}
        services = [s for s in server.plan.services if set(s.view_names) <= names]
        body = {
            "project": server.settings.project,
            "views": [_describe(v, server.plan) for v in readable],
            "request_views": [v.model_dump(mode="json") for v in request_views],
            "services": [s.model_dump(mode="json") for s in services],
        }
        return Response(orjson.dumps(body), media_type=_JSON)

    @app.post("/v1/apply", response_model=ApplyAnswer, responses=_ERRORS,
              summary="Record a plan as a new registry version: validated like `compile`, no new code, "
                      "apply on every view it changes")
    async def apply(body: ApplyRequest, audit: Audit = guard("apply")) -> Response:
        current = server.registry.latest()
        old = current.plan if current else None
        problems = validate_plan(body.plan)
        if problems:
            raise Refused(422, "invalid_plan", f"{len(problems)} problem(s): " + "; ".join(str(p) for p in problems[:10]))
        new_code = sorted(code_refs(body.plan) - (code_refs(old) if old else set()))
        if new_code:
            raise Refused(422, "new_code", f"the plan names code the applied plan does not ({', '.join(new_code[:5])}): code "
                          "arrives with the repository; deploy it and run `featurestore apply` there")
        diff = server.authorize_apply(audit, old, body.plan)
        version = await run_in_threadpool(server.registry.apply, body.plan, body.note, body.in_place)
        answer = {"version": version.version if version else None, "changes": diff.lines()}
        return Response(orjson.dumps(answer), media_type=_JSON)

    @app.get("/metrics", summary="Prometheus metrics of this server (admin)", responses=_ERRORS)
    async def prometheus(audit: Audit = guard("metrics")) -> Response:
        server.authorize(audit, "admin", ["*"])
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Edge(app, server, trusted_hosts)


def _check_rows(columns: dict[str, list[Any]], limit: int, what: str, setting: str) -> int:
    """The number of rows of a column-wise frame, refused (413) past `limit` before any row is built."""
    n = max((len(v) for v in columns.values()), default=0)
    if n > limit:
        raise Refused(413, "too_large", f"{n:,} {what}: at most {limit:,} per request ({setting}); split the request")
    return n


def _rows(entities: dict[str, list[Any]]) -> list[dict[str, Any]]:
    lengths = {len(v) for v in entities.values()}
    if len(lengths) > 1:
        raise FeatureRequestError(f"entity columns differ in length: {({k: len(v) for k, v in entities.items()})}")
    n = lengths.pop() if lengths else 0
    names = list(entities)
    cols = [entities[k] for k in names]
    return [{k: col[i] for k, col in zip(names, cols)} for i in range(n)]


def _count_values(query: OnlineQuery | RolloutQuery, results: Sequence[Any], t_ms: int) -> None:
    for req, res in zip(query.requests, results):
        counts: dict[str, int] = {}
        for state in res.states:
            counts[state] = counts.get(state, 0) + len(req.features)
        for state, n in counts.items():
            metrics.VALUES.labels(req.view.name, state).inc(n)
        metrics.STALENESS.observe_many((req.view.name,), [max(0.0, (t_ms - e) / 1000) for e in res.event_ms if e is not None])


def _entity_table(body: HistoricalRequest) -> pa.Table:
    _rows(body.entities)  # equal lengths
    ts = body.entities.get(body.timestamp_column)
    columns: dict[str, Any] = dict(body.entities)
    if ts is not None and ts and all(isinstance(x, int) and not isinstance(x, bool) for x in ts):
        columns[body.timestamp_column] = pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    try:
        return pa.table(columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise FeatureRequestError(f"entity columns: {exc}") from None


def _describe(view: ViewPlan, plan: Plan) -> dict[str, Any]:
    features: list[dict[str, Any]] = [{"name": f.name, "kind": f.kind, "dtype": f.dtype} for f in view.row_features]
    features += [{"name": a.name, "kind": "aggregation", "function": a.function, "column": a.column, "window_ms": a.window_ms}
                 for a in view.aggregations]
    return {
        "name": view.name,
        "view": view.base_name,
        "version": view.version,
        "serving": plan.serving_version(view.base_name) == view.version,
        "entities": view.entities,
        "join_keys": [k.model_dump() for k in view.join_keys],
        "features": features,
        "ttl_ms": view.ttl_ms,
        "owner": view.owner,
        "description": view.description,
        "tags": view.tags,
    }


class ServeOptions(BaseModel):
    """How `featurestore serve` runs the app; handed to each worker process as JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repo: Path
    host: str = "127.0.0.1"
    auth: bool = True
    insecure: bool = False
    trusted_hosts: list[str] = []

    def check(self) -> None:
        """Refuse to serve without tokens on a non-loopback address unless `insecure` (the rule
        `serve` applies to its flags, applied again where the app is built)."""
        if not self.auth and not is_loopback(self.host) and not self.insecure:
            raise ConfigError(
                f"refusing to serve without authentication on {self.host}: use tokens, a loopback address, or --insecure"
            )


def build_app(options: ServeOptions) -> Edge:
    """The feature server's ASGI app for a repository, configured by `options` (checked again here)."""
    options.check()
    server = FeatureServer(load_settings(options.repo), auth=options.auth)
    return create_app(server, options.trusted_hosts or default_trusted_hosts(options.host))


#: How `serve --workers N` (N > 1) hands its options to uvicorn's worker processes, which can
#: only import the app by name: the one place the app's configuration crosses the environment.
SERVE_OPTIONS_ENV = "FEATURESTORE_SERVE_OPTIONS"


def app_from_environment() -> Edge:
    """App factory for `uvicorn --factory` in worker processes: `build_app` with the options
    `serve` serialised into FEATURESTORE_SERVE_OPTIONS (or the repository FEATURESTORE_REPO names)."""
    raw = os.environ.get(SERVE_OPTIONS_ENV)
    options = ServeOptions.model_validate_json(raw) if raw else ServeOptions(repo=Path(os.environ.get("FEATURESTORE_REPO", ".")))
    return build_app(options)
