"""The web console, `/ui` on the feature server: read-only pages rendered here as HTML with
inline SVG plots (no script or style from anywhere else: it works without internet).

A browser signs in at `/ui/login` with an API token, kept in an HttpOnly, SameSite=Strict
cookie; every page shows only the views the token may read (`read_online` or
`read_offline`), like `GET /v1/registry`. Pages: the registry (views and versions, features,
owners, tags, lineage from topic to services; for admins, the last registry versions and
their diffs),
one view (its features, versions, newest events, repairs, freshness objective, a consistency
check on demand), one feature (its current online distribution over sampled entities, and
against `console_reference`, a training set, with PSI and KS), and the services (variants,
split, guards, served-value log).
"""

from __future__ import annotations

import html
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from featurestore.online.keys import parse_newest_field, project_key
from featurestore.plan import Plan, ServicePlan, ViewPlan
from featurestore.server.auth import allowed
from featurestore.server.errors import Refused

if TYPE_CHECKING:
    from featurestore.server.app import FeatureServer
    from featurestore.server.audit import Audit

COOKIE = "fs_token"
SAMPLE = 500
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:center}
header a{color:#cfe0ff;text-decoration:none}main{padding:16px 24px;max-width:1200px}
table{border-collapse:collapse;background:#fff;margin:8px 0 20px}td,th{border:1px solid #dde1e8;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#eef1f5}h1{font-size:20px}h2{font-size:16px;margin-top:24px}
.muted{color:#6b7385}.ok{color:#11774b}.bad{color:#b3261e}code{background:#eef1f5;padding:0 3px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: str, who: str = "") -> HTMLResponse:
    nav = ('<a href="/ui">Registry</a><a href="/ui/services">Services</a>'
           + (f'<span class="muted">{_e(who)}</span><a href="/ui/logout">Sign out</a>' if who else ""))
    text = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)} · featurestore</title>"
            f"<style>{_STYLE}</style></head><body><header><strong>featurestore</strong>{nav}</header>"
            f"<main><h1>{_e(title)}</h1>{body}</main></body></html>")
    return HTMLResponse(text, headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
                                       "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def console_error(status: int, message: str) -> HTMLResponse:
    """A refusal as a page."""
    page = _page(f"{status}", f'<p class="bad">{_e(message)}</p><p><a href="/ui">Back to the registry</a></p>')
    page.status_code = status
    return page


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table; cells are HTML already (escape text with `_e`)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _ago(ms: int | None) -> str:
    if not ms:
        return "none yet"
    s = max(0.0, time.time() - ms / 1000)
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago" if s < 7200 else f"{s / 3600:.1f} h ago"


def readable_views(server: FeatureServer, audit: Audit) -> list[ViewPlan]:
    """The views (versions) the token may read online or offline."""
    token = audit.token
    return [v for v in server.plan.views
            if allowed(token, "read_online", v, v.name) or allowed(token, "read_offline", v, v.name)]


def _readable_services(plan: Plan, names: set[str]) -> list[ServicePlan]:
    return [s for s in plan.services if set(s.view_names) <= names]


def histogram_svg(series: dict[str, list[float]], width: int = 640, height: int = 220, bins: int = 20) -> str:
    """Bars of each series' share per bin over their common range (the first series filled,
    the others outlined): an inline SVG."""
    values = [v for vs in series.values() for v in vs]
    if not values:
        return '<p class="muted">no values to plot</p>'
    lo, hi = min(values), max(values)
    if hi == lo:
        hi = lo + 1
    edges = np.linspace(lo, hi, bins + 1)
    colors = ["#3b6fd8", "#d87a3b", "#2e9d6a"]
    plot_h, bar_w = height - 30, width / bins
    shapes: list[str] = []
    legend: list[str] = []
    shares = {name: np.histogram(vs, bins=edges)[0] / max(1, len(vs)) for name, vs in series.items()}
    top = max(float(s.max()) for s in shares.values()) or 1.0
    for i, (name, share) in enumerate(shares.items()):
        color = colors[i % len(colors)]
        for b, value in enumerate(share):
            h = plot_h * float(value) / top
            fill = f'fill="{color}" fill-opacity="0.55"' if i == 0 else f'fill="none" stroke="{color}" stroke-width="2"'
            shapes.append(f'<rect x="{b * bar_w + 1:.1f}" y="{plot_h - h:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" {fill}/>')
        legend.append(f'<tspan fill="{color}">■ {_e(name)} ({len(series[name]):,})</tspan> ')
    axis = (f'<text x="0" y="{height - 8}" font-size="11">{lo:.4g}</text>'
            f'<text x="{width}" y="{height - 8}" font-size="11" text-anchor="end">{hi:.4g}</text>'
            f'<text x="{width / 2}" y="{height - 8}" font-size="11" text-anchor="middle">{"".join(legend)}</text>')
    return (f'<svg class="histogram" role="img" aria-label="distribution" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{"".join(shapes)}{axis}</svg>')


def add_console(app: FastAPI, server: FeatureServer, guard: Any) -> None:
    """The console's routes on the server's app (`guard`: the app's authentication dependency)."""

    @app.get("/ui/login", include_in_schema=False)
    async def login_page() -> HTMLResponse:
        form = ('<form id="login"><p>Sign in with an API token (<code>featurestore tokens create NAME --grant '
                'read_online:*</code>).</p><input id="token" type="password" size="60" autocomplete="off" '
                'placeholder="fst_..."> <button type="submit">Sign in</button><p id="error" class="bad"></p></form>'
                '<script src="/ui/login.js"></script>')
        return _page("Sign in", form)

    @app.get("/ui/login.js", include_in_schema=False)
    async def login_script() -> Response:
        js = ("document.getElementById('login').addEventListener('submit',async e=>{e.preventDefault();"
              "const r=await fetch('/ui/login',{method:'POST',headers:{'Content-Type':'application/json'},"
              "body:JSON.stringify({token:document.getElementById('token').value})});"
              "if(r.ok){location.href='/ui'}else{document.getElementById('error').textContent='invalid, unknown or revoked token'}});")
        return Response(js, media_type="text/javascript", headers={"Cache-Control": "no-store"})

    @app.post("/ui/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            raise Refused(400, "bad_request", 'send {"token": "..."} as JSON') from None
        token = body.get("token") if isinstance(body, dict) else None
        if server.tokens is not None and (not isinstance(token, str) or server.tokens.authenticate(token) is None):
            raise Refused(401, "unauthenticated", "invalid, unknown or revoked token")
        response = Response(b'{"status":"signed in"}', media_type="application/json")
        response.set_cookie(COOKIE, token or "", httponly=True, samesite="strict", path="/ui",
                            secure=request.url.scheme == "https")
        return response

    @app.get("/ui/logout", include_in_schema=False)
    async def logout() -> Response:
        response = Response(status_code=303, headers={"Location": "/ui/login"})
        response.delete_cookie(COOKIE, path="/ui")
        return response

    @app.get("/ui", include_in_schema=False)
    async def overview(audit: Audit = guard("console")) -> HTMLResponse:
        plan = server.plan
        views = readable_views(server, audit)
        audit.views = [v.name for v in views]
        names = {v.name for v in views} | {v.base_name for v in views}
        per_partition, _ = await _project_marker(server)
        newest = {view: max(parts.values()) for view, parts in per_partition.items()}
        rows = []
        for v in views:
            serving = plan.serving_version(v.base_name) == v.version
            slo = f"{v.freshness_slo_ms / 1000:g} s" if v.freshness_slo_ms else "-"
            rows.append([f'<a href="/ui/views/{_e(v.name)}">{_e(v.name)}</a>', str(v.version) + (" (serving)" if serving else ""),
                         _e(", ".join(v.entities)), f"<code>{_e(plan.source(v.source).topic)}</code>", str(len(v.feature_names)),
                         _e(v.owner), _e(", ".join(f"{k}={t}" for k, t in v.tags.items())), slo, _ago(newest.get(v.name))])
        body = _table(["view", "version", "entities", "topic", "features", "owner", "tags", "freshness objective",
                       "newest event online"], rows) if rows else '<p class="muted">this token may read no view</p>'
        lineage = []
        for source in plan.sources:
            fed = [v for v in views if v.source == source.name]
            if fed:
                svc = [s.name for s in _readable_services(plan, names) if {v.base_name for v in fed} & set(s.view_names)]
                lineage.append([f"<code>{_e(source.topic)}</code>", _e(", ".join(v.name for v in fed)), _e(", ".join(svc) or "-")])
        body += "<h2>Lineage</h2>" + _table(["source topic", "views", "services"], lineage)
        if not allowed(audit.token, "admin", None, "*"):  # diffs and notes name views of every owner
            return _page("Registry", body, audit.token.name if audit.token else "")
        versions = await run_in_threadpool(lambda: server.registry.versions()[-10:])
        body += "<h2>Registry versions</h2>" + _table(
            ["version", "applied", "note", "changes"],
            [[str(r.version), _e(f"{r.applied_at:%Y-%m-%d %H:%M} UTC"), _e(r.note),
              "<br>".join(_e(line.splitlines()[0]) for line in r.diff[:8]) + ("<br>…" if len(r.diff) > 8 else "")]
             for r in reversed(versions)])
        return _page("Registry", body, audit.token.name if audit.token else "")

    @app.get("/ui/services", include_in_schema=False)
    async def services(audit: Audit = guard("console")) -> HTMLResponse:
        views = readable_views(server, audit)
        audit.views = [v.name for v in views]
        names = {v.name for v in views} | {v.base_name for v in views}
        rows = []
        for s in _readable_services(server.plan, names):
            variants = "<br>".join(f"{_e(k)}: {_e(', '.join(r))}" + (f" ({s.split[k]:.0%})" if k in s.split else " (control)")
                                   for k, r in s.variants.items()) or _e(", ".join(s.features))
            guards = "<br>".join(_e(f"{g.metric} ≤ {g.max:g}" + (f" of {g.feature}" if g.feature else "")) for g in s.guards) or "-"
            rows.append([_e(s.name), variants, guards, f"{s.log_sample_rate:.0%}" if s.log_sample_rate else "-", _e(s.owner)])
        body = _table(["service", "features / variants", "guards", "served-value log", "owner"], rows) if rows else \
            '<p class="muted">no service reads only views this token may read</p>'
        return _page("Services", body, audit.token.name if audit.token else "")

    def _view(name: str, audit: Audit) -> ViewPlan:
        for v in readable_views(server, audit):
            if v.name == name:
                audit.views = [v.name]
                return v
        audit.views = [name]
        raise Refused(404, "not_found", f"no view {name!r} this token may read")

    @app.get("/ui/views/{name}", include_in_schema=False)
    async def view_page(name: str, audit: Audit = guard("console")) -> HTMLResponse:
        v = _view(name, audit)
        plan = server.plan
        feats = [[f'<a href="/ui/views/{_e(v.name)}/features/{_e(f.name)}">{_e(f.name)}</a>', _e(f.kind),
                  _e(f.column or f.udf_ref or ""), "-", _e(f.dtype)] for f in v.row_features]
        feats += [[f'<a href="/ui/views/{_e(v.name)}/features/{_e(a.name)}">{_e(a.name)}</a>', _e(a.function),
                   _e(a.column + (f" where {a.where}" if a.where else "")),
                   "lifetime" if a.window_ms is None else f"{a.window_ms / 1000:g} s", _e(a.dtype)] for a in v.aggregations]
        per_partition, repaired = await _project_marker(server)
        parts = [[str(p), _ago(ms)] for p, ms in sorted(per_partition.get(v.name, {}).items())]
        repairs = repaired.get(v.name, 0)
        source = plan.source(v.source)
        lag = await run_in_threadpool(_lag, server, [source.topic, source.dead_letter_topic])
        lag_rows = [[f"<code>{_e(p.topic)}</code>", str(p.partition), "none" if p.committed is None else f"{p.committed:,}",
                     f"{p.high:,}", f"{p.lag:,}"] for p in lag if p.topic == source.topic]
        dead = sum(p.high - p.low for p in lag if p.topic == source.dead_letter_topic)
        versions = [[f'<a href="/ui/views/{_e(o.name)}">{_e(o.name)}</a>',
                     "serving" if plan.serving_version(o.base_name) == o.version else "live"]
                    for o in plan.versions(v.base_name)]
        slo = f"{v.freshness_slo_ms / 1000:g} s" if v.freshness_slo_ms else "none"
        body = (f"<p>{_e(v.description)}</p><p>Source <code>{_e(plan.source(v.source).topic)}</code>, entities "
                f"{_e(', '.join(v.entities))}, TTL {_e(f'{v.ttl_ms / 1000:g} s' if v.ttl_ms else 'none')}, freshness "
                f"objective {_e(slo)}, online repairs {repairs}. "
                f'<a href="/ui/views/{_e(v.name)}/consistency">Check online against offline</a> (50 entities).</p>'
                + "<h2>Features</h2>" + _table(["feature", "kind", "of", "window", "type"], feats)
                + "<h2>Versions</h2>" + _table(["version", "state"], versions)
                + "<h2>Newest event online, per source partition</h2>" + _table(["partition", "newest event"], parts)
                + "<h2>Processing</h2>" + (_table(["topic", "partition", "committed", "end", "lag (records)"], lag_rows)
                                             if lag_rows else '<p class="muted">the broker did not answer</p>')
                + f"<p>Dead letters kept in <code>{_e(source.dead_letter_topic)}</code>: {dead:,}.</p>")
        return _page(f"View {v.name}", body, audit.token.name if audit.token else "")

    @app.get("/ui/views/{name}/consistency", include_in_schema=False)
    async def consistency_page(name: str, audit: Audit = guard("console")) -> HTMLResponse:
        v = _view(name, audit)
        report = await run_in_threadpool(_consistency, server, v)
        rows = [[_e(r["feature"]), f"{r['checked']:,}", f"{r['mismatch_rate']:.1%}",
                 '<span class="ok">equal</span>' if not r["mismatches"] else '<span class="bad">differs</span>']
                for r in report]
        return _page(f"Consistency of {v.name}", _table(["feature", "entities", "mismatch rate", ""], rows),
                     audit.token.name if audit.token else "")

    @app.get("/ui/views/{name}/features/{feature}", include_in_schema=False)
    async def feature_page(name: str, feature: str, audit: Audit = guard("console")) -> HTMLResponse:
        v = _view(name, audit)
        if feature not in v.feature_names:
            raise Refused(404, "not_found", f"view {v.name} has no feature {feature!r}")
        keys = await run_in_threadpool(_sample_keys, server, v)
        current: list[Any] = []
        if keys:
            from featurestore.online.reader import ViewRequest

            got = await server.reader.aread_results(server.online_redis, [ViewRequest(v, [feature], keys)],
                                                    int(time.time() * 1000), None)
            current = got[0].values[feature]
        series = {"online now": [float(x) for x in current if isinstance(x, (int, float)) and not isinstance(x, bool)]}
        drift = ""
        reference = await run_in_threadpool(_reference_column, server, feature)
        if reference is not None:
            from featurestore.offline.drift import feature_drift

            series["reference"] = [float(x) for x in reference if isinstance(x, (int, float)) and not isinstance(x, bool)]
            d = feature_drift(feature, reference, current)
            psi = "-" if d.psi is None else f"{d.psi:.3f}"
            ks = "-" if d.ks is None else f"{d.ks:.3f}"
            name = server.settings.paths.console_reference.name if server.settings.paths.console_reference else ""
            drift = (f"<p>Against the reference <code>{_e(name)}</code>: PSI "
                     f"<strong class=\"{'bad' if d.psi and d.psi > 0.25 else 'ok'}\">{psi}</strong>, KS {ks}, null rate "
                     f"{d.null_rate_reference:.1%} → {d.null_rate_current:.1%}.</p>")
        missing = sum(x is None for x in current)
        body = (f"<p>{len(current):,} sampled entities, {missing:,} without a value.</p>{drift}"
                + (histogram_svg(series) if any(series.values()) else _table(
                    ["value", "entities"], [[_e(k), str(c)] for k, c in _top(current)])))
        return _page(f"{v.name}:{feature}", body, audit.token.name if audit.token else "")


async def _project_marker(server: FeatureServer) -> tuple[dict[str, dict[int, int]], dict[str, int]]:
    """From the project's hash in Redis: per view, the newest event time stored per source
    partition, and how many times its online data was repaired."""
    marker = await server.redis.hgetall(project_key(server.settings.project))
    newest: dict[str, dict[int, int]] = {}
    repairs: dict[str, int] = {}
    for field, value in marker.items():
        text = field.decode()
        parsed = parse_newest_field(text)
        if parsed is not None:
            newest.setdefault(parsed[0], {})[parsed[1]] = int(value)
        elif text.startswith("repairs|"):
            repairs[text.partition("|")[2]] = int(value)
    return newest, repairs


def _top(values: list[Any], n: int = 20) -> list[tuple[Any, int]]:
    from collections import Counter

    return Counter(tuple(x) if isinstance(x, list) else x for x in values if x is not None).most_common(n)


def _sample_keys(server: FeatureServer, view: ViewPlan) -> list[tuple[Any, ...]]:
    """Up to SAMPLE entity keys of the view, from its history."""
    import duckdb

    from featurestore.offline.history import has_history
    from featurestore.offline.sql import identifier, read_history

    if not has_history(server.settings.paths.offline, view.name):
        return []
    cols = ", ".join(identifier(k.name) for k in view.join_keys)
    rows = duckdb.connect().execute(f"SELECT DISTINCT {cols} FROM {read_history(server.settings.paths.offline, view.name)}").fetchall()
    return [tuple(r) for r in random.Random(0).sample(rows, min(SAMPLE, len(rows)))]


def _reference_column(server: FeatureServer, feature: str) -> list[Any] | None:
    """The feature's column of the configured reference training set, if it has one."""
    path = server.settings.paths.console_reference
    if path is None or not path.is_file():
        return None
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return table[feature].to_pylist() if feature in table.column_names else None


def _lag(server: FeatureServer, topics: list[str]) -> list[Any]:
    """Lag per partition of the topics (empty when the broker does not answer within seconds)."""
    from featurestore.runtime.kafka import group_lag

    try:
        return group_lag(server.settings, topics, timeout_s=3.0)
    except Exception:  # the page shows what it can
        return []


def _consistency(server: FeatureServer, view: ViewPlan) -> list[dict[str, Any]]:
    from featurestore.client.consistency import check_consistency
    from featurestore.online.reader import OnlineReader

    client = server.settings.redis.client()
    try:
        plan = server.plan.model_copy(update={"views": [view]})
        report = check_consistency(OnlineReader(client, server.settings.project, plan), server.settings.paths.offline, plan,
                                   int(time.time() * 1000), 50)
        return report.rows()
    finally:
        client.close()
