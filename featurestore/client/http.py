"""The SDK's HTTP transport: online reads through a feature server (`featurestore serve`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import urllib3

from featurestore.client.responses import OnlineResponse
from featurestore.errors import StoreUnavailable, error_of_status
from featurestore.plan.windows import to_epoch_ms

ONLINE_PATH = "/v1/features/online"


class FeatureServerClient:
    """Keep-alive HTTP client of one feature server; thread-safe (a pool of connections)."""

    def __init__(
        self, url: str, token: str | None = None, timeout_s: float = 10.0, pool_size: int = 8, ca_certs: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._pool = urllib3.PoolManager(maxsize=pool_size, timeout=urllib3.Timeout(total=timeout_s), retries=False,
                                         ca_certs=ca_certs)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request; return the decoded JSON answer or raise the matching FeatureStoreError."""
        data = None if body is None else orjson.dumps(body)
        try:
            resp = self._pool.request(method, self.url + path, body=data, headers=self._headers)
        except urllib3.exceptions.HTTPError as exc:
            raise StoreUnavailable(f"feature server {self.url}: {exc}") from None
        try:
            payload = orjson.loads(resp.data) if resp.data else {}
        except orjson.JSONDecodeError:
            payload = {"error": {"message": resp.data[:200].decode(errors="replace")}}
        if resp.status < 300:
            return payload
        message = payload.get("error", {}).get("message") or f"HTTP {resp.status}"
        if resp.status in (401, 403):
            message = f"feature server {self.url}: {message}"
        elif not 400 <= resp.status < 500:
            message = f"feature server {self.url}: HTTP {resp.status}: {message}"
        raise error_of_status(resp.status, message)

    def online(
        self,
        features: Sequence[str] | None,
        entity_rows: Sequence[Mapping[str, Any]],
        service: str | None = None,
        full_feature_names: bool = False,
        at: dt.datetime | None = None,
        max_staleness: dt.timedelta | None = None,
        request_data: Mapping[str, Any] | None = None,
    ) -> OnlineResponse:
        """Online features over HTTP; the same answer as a direct read (datetimes arrive as ISO strings)."""
        names: dict[str, None] = {}
        for row in entity_rows:
            names.update(dict.fromkeys(row))
        given = {k: [row.get(k) for row in entity_rows] for k in names}
        # join keys (ints, strings) go as entities; other columns are request fields
        keys = {k: v for k, v in given.items() if all(isinstance(x, (int, str)) and not isinstance(x, bool) for x in v)}
        fields = {k: v for k, v in given.items() if k not in keys}
        if fields:
            request_data = {**fields, **(request_data or {})}
        body = {
            "features": None if features is None else list(features),
            "service": service,
            "entities": keys,
            "full_feature_names": full_feature_names,
            "at_ms": None if at is None else to_epoch_ms(at),
            "max_staleness_ms": None if max_staleness is None else int(max_staleness.total_seconds() * 1000),
        }
        if request_data:
            body["request_data"] = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in request_data.items()}
        answer = self.request("POST", ONLINE_PATH, body)
        columns: dict[str, list[Any]] = dict(answer["entities"])
        statuses: dict[str, list[str]] = {}
        event_ms: dict[str, list[int | None]] = {}
        details: dict[str, list[str | None]] = {}
        for name, feat in answer["features"].items():
            columns[name] = feat["values"]
            statuses[name] = feat["statuses"]
            event_ms[name] = feat["event_time_ms"]
            if feat.get("details"):
                details[name] = feat["details"]
        return OnlineResponse(columns, statuses, event_ms, answer["read_at_ms"], details, variants=answer.get("variants"))

    def close(self) -> None:
        self._pool.clear()
