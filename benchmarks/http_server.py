"""The feature server over loopback TCP: open-loop latency at a fixed request rate.

Requests start at fixed intervals whatever the answers do (open loop), over a pool of
keep-alive connections, and are timed from their start, so waiting for a connection busy
with a slow answer counts (no coordinated omission); the client's timer jitter (asyncio
sleeps have ~1 ms resolution) does not. Tokens, the audit log and
metrics are on, as in production.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import orjson

from featurestore import FeatureStore
from featurestore.server.auth import Permission, TokenStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(ctx: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str, str]:
    settings = ctx["ingest_settings"]
    token, _ = TokenStore(settings.tokens_file).create("bench", [Permission.parse("read_online:*")])
    port = _free_port()
    env = {
        **os.environ,
        "FEATURESTORE_PROJECT": settings.project,
        "FEATURESTORE_REDIS_URL": settings.redis_url,
        "FEATURESTORE_REGISTRY_PATH": str(settings.registry_root),
        "FEATURESTORE_OFFLINE_PATH": str(settings.offline_root),
        "FEATURESTORE_TOKENS_PATH": str(settings.tokens_file),
        "FEATURESTORE_AUDIT_LOG_PATH": str(settings.audit_log_file),
    }
    proc = subprocess.Popen([sys.executable, "-m", "featurestore", "serve", "--repo", str(ctx["repo"]), "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"feature server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/v1/ready")
            if conn.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}", token


def open_loop(port: int, token: str, body: bytes, rate: float, seconds: float, connections: int = 8) -> list[float]:
    """Latencies (ms) of requests started `rate` per second for `seconds`, whatever the answers do.

    One asyncio loop (uvloop) drives keep-alive connections with minimal HTTP/1.1 framing, so
    the load generator costs little next to the server it measures; a request waiting for
    a free connection counts that wait."""
    import asyncio

    import uvloop

    request = (
        f"POST /v1/features/online HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def run() -> list[float]:
        pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        for _ in range(connections):
            pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
        lat: list[float] = []
        errors: list[bytes] = []

        async def one() -> None:
            at = time.perf_counter()  # the task starts on schedule (open loop); only timer jitter is excluded
            reader, writer = await pool.get()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            lat.append((time.perf_counter() - at) * 1000)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n")[0])
            pool.put_nowait((reader, writer))

        tasks = []
        start = time.perf_counter()  # uvloop's loop.time() ticks in whole milliseconds
        for i in range(int(rate * seconds)):
            at = start + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        while not pool.empty():
            pool.get_nowait()[1].close()
        if errors:
            raise RuntimeError(f"{len(errors)} failed requests (e.g. {errors[0]!r})")
        return lat

    return uvloop.run(run())


def bench_http(b: Any, ctx: dict[str, Any], features: list[str]) -> None:
    proc, url, token = start_server(ctx)
    port = int(url.rsplit(":", 1)[1])
    users = sorted({r.event["user_id"] for r in ctx["records"] if r.event})
    direct = FeatureStore(ctx["repo"], settings=ctx["ingest_settings"])
    remote = FeatureStore(ctx["repo"], settings=ctx["ingest_settings"], server_url=url, token=token)
    try:
        at = ctx["end"]
        rows = [{"user_id": u} for u in users[:100]]
        b.check(remote.get_online_features(features, rows, at=at).to_dict() == direct.get_online_features(features, rows, at=at).to_dict(),
                "HTTP answers differ from direct SDK reads")
        seconds = 5 if b.args.quick else 10
        for n_ent, rate in ((1, 200.0), (100, 10.0)):
            body = orjson.dumps({"features": features, "entities": {"user_id": users[:n_ent]}})
            open_loop(port, token, body, rate, 1.0)  # warm up
            label = f"online {n_ent}x10"
            who = f"feature server HTTP, open loop {rate:.0f} req/s"
            runs: dict[str, list[list[float]]] = {"http": [], "sdk": []}
            for _ in range(b.args.reps):
                runs["http"].append(open_loop(port, token, body, rate, seconds))
                sdk = []
                for i in range(50 if b.args.quick else 300):
                    t0 = time.perf_counter()
                    remote.get_online_features(features, rows[:n_ent])
                    sdk.append((time.perf_counter() - t0) * 1000)
                runs["sdk"].append(sdk)
            b.record_latency(label, who, runs["http"])
            b.record_latency(label, "SDK via feature server (closed loop)", runs["sdk"])
    finally:
        remote.close()
        direct.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
