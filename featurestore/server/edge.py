"""The edge of the feature server: what every request passes before any work is done.

In this order, for every HTTP request:
1. the Host header must name a trusted host (421 otherwise: DNS rebinding cannot reach a
   loopback server through a browser);
2. every path but `/v1/health`, `/v1/ready` and `/openapi.json` needs a valid token (401),
   checked before a byte of the body is read;
3. a body must be `application/json` (415: no cross-site form posts) and at most
   `max_request_bytes` long (413), counted as it arrives;
4. the request is answered: `POST /v1/features/online` here directly (the hot path skips
   the framework's routing), everything else by the FastAPI app;
5. one audit line and the request metrics are written with the final status as the
   answer starts (before the client can see it), whatever happened: refusals, parse
   errors and unexpected failures (a 500) included.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from featurestore.client.http import ONLINE_PATH
from featurestore.server.audit import Audit
from featurestore.server.errors import Refused, error_body

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Paths answered without a token (they reveal nothing but "ok", or the console's sign-in page).
PUBLIC_PATHS = frozenset({"/v1/health", "/v1/ready", "/openapi.json", "/ui/login", "/ui/login.js"})
#: The web console: a browser's token comes in a cookie (`featurestore.server.console`).
CONSOLE_PREFIX = "/ui"
CONSOLE_COOKIE = "fs_token"
#: The audit's endpoint label of each path (others: "other").
ENDPOINTS = {
    ONLINE_PATH: "online", "/v1/features/historical": "historical", "/v1/registry": "registry", "/v1/apply": "apply",
    "/metrics": "metrics", "/v1/health": "health", "/v1/ready": "ready", "/openapi.json": "openapi",
}
#: Where the edge leaves the request's audit record for the routes.
AUDIT_KEY = "featurestore.audit"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def default_trusted_hosts(bound_host: str) -> list[str]:
    """The bound host and the loopback names; any host when bound to every interface."""
    if bound_host in ("0.0.0.0", "::", ""):
        return ["*"]
    return list(dict.fromkeys([bound_host, "localhost", "127.0.0.1", "::1"]))


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """The host part of a Host header (`name:port`, `[v6]:port`), lower-cased."""
    if header.startswith("["):
        return header[1:].partition("]")[0].lower()
    host, sep, port = header.rpartition(":")
    return (host if sep and port.isdigit() else header).lower()


class Edge:
    """ASGI application wrapping the FastAPI app of a feature server (see the module docstring)."""

    def __init__(self, app: Any, server: Any, trusted_hosts: Iterable[str]) -> None:
        self.app = app
        self.server = server
        self.trusted = {h.lower().strip("[]") for h in trusted_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan
            return
        path, method = scope["path"], scope["method"]
        client = scope.get("client")
        audit = Audit(ENDPOINTS.get(path, "other"), time.perf_counter(), method, path, client[0] if client else None)
        sent = {"status": 500, "started": False}
        body_read = {"done": method not in _BODY_METHODS}

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"], sent["started"] = message["status"], True
                self.server.finish(audit, message["status"])  # before the client can see the answer
            await send(message)

        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            self._check_host(headers.get("host", ""))
            console = path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")
            if console:
                audit.endpoint = "console"
            if path not in PUBLIC_PATHS:
                authorization = headers.get("authorization", "")
                if console and not authorization:
                    cookie = _cookie(headers.get("cookie", ""), CONSOLE_COOKIE)
                    if cookie is None and method == "GET":  # a browser not signed in yet
                        await _redirect(tracked, "/ui/login")
                        return
                    authorization = f"Bearer {cookie}" if cookie else ""
                self.server.authenticate(authorization, audit)
            if method in _BODY_METHODS:
                receive = self._limited_body(headers, receive, body_read)
            if path == ONLINE_PATH and method == "POST":
                await respond(tracked, 200, await self.server.online_body(audit, await read_body(receive)))
            else:
                scope[AUDIT_KEY] = audit
                await self.app(scope, receive, tracked)
        except Exception as exc:
            if sent["started"]:  # the app already answered (its own 500): only the log is left to tell
                log.exception("%s %s failed after its response started", method, path)
            else:
                answer = self.server.refusal(audit, exc)
                if answer is None:
                    log.exception("%s %s failed", method, path)
                    audit.reason = f"internal error: {type(exc).__name__}"
                    answer = (500, error_body("internal", "internal error; the server log has the details"))
                # refused before its body was read: close rather than drain the rest of it
                status, payload = answer
                await respond(tracked, status, payload, close=not body_read["done"])
        finally:
            if not sent["started"]:  # no answer could be sent at all
                self.server.finish(audit, sent["status"])

    def _check_host(self, header: str) -> None:
        if "*" not in self.trusted and host_of(header) not in self.trusted:
            raise Refused(421, "untrusted_host", "the Host header names a host this server does not serve (see --trusted-host)")

    def _limited_body(self, headers: dict[str, str], receive: Receive, read: dict[str, bool]) -> Receive:
        """`receive`, refusing bodies that are not JSON or too large; `read["done"]` once all arrived."""
        limit = self.server.settings.max_request_bytes
        ctype = headers.get("content-type", "").partition(";")[0].strip().lower()
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise Refused(413, "too_large", f"request bodies are limited to {limit:,} bytes (max_request_bytes)")
        if ctype != "application/json" and (length is None or length != "0"):
            raise Refused(415, "unsupported_media_type", "send the body as Content-Type: application/json")
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            read["done"] = not message.get("more_body", False)
            if seen > limit:
                raise Refused(413, "too_large", f"request bodies are limited to {limit:,} bytes (max_request_bytes)")
            return message

        return limited


def _cookie(header: str, name: str) -> str | None:
    """The value of cookie `name` in a Cookie header."""
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


async def _redirect(send: Send, location: str) -> None:
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode()), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


async def read_body(receive: Receive) -> bytes:
    """The whole request body (through the edge's size limit)."""
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def respond(send: Send, status: int, payload: bytes, close: bool = False) -> None:
    """Send a whole JSON response (`close`: and end the connection after it)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
