"""The web console in a real browser (Debian's chromium driven by Playwright): sign in with a
token, the registry, a view, a feature's distribution plotted against a reference training
set, the services; a narrow token sees only its views.

Screenshots go to $FEATURESTORE_SCREENSHOTS (docs/screenshots/ holds the committed ones) or
the test's temporary folder."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import urllib3

from featurestore import FeatureStore
from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo import payment_events, produce_records
from featurestore.registry import FileRegistry
from featurestore.runtime import StreamProcessor
from featurestore.runtime.kafka import ensure_topics, producer_config
from tests.integration.server_harness import create_token, free_port, server_answers, wait_for

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def test_the_console_in_a_browser(example_repo: Path, services: Any, overrides: dict[str, Any], tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("no chromium (Debian: chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    views = example_repo / "views.py"
    views.write_text(views.read_text().replace('    allowed_lateness=timedelta(hours=1),\n',
                                               '    allowed_lateness=timedelta(hours=1),\n    freshness_slo=timedelta(seconds=5),\n', 1))
    settings = load_settings(example_repo, **overrides)
    plan = compile_repo(example_repo)
    FileRegistry(settings.registry_root).apply(plan)
    topic = plan.source("payments").topic
    ensure_topics(settings, [topic], partitions=2)
    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    produce_records(producer_config(settings), topic, payment_events(3000, end=end, span=dt.timedelta(hours=6), users=120, seed=5))
    StreamProcessor(plan, settings).run(until_caught_up=True)
    reference = tmp_path / "reference.parquet"
    entity = pd.DataFrame({"user_id": list(range(1, 121)), "event_timestamp": [end - dt.timedelta(hours=3)] * 120})
    FeatureStore(example_repo, settings=settings).get_historical_features(entity, ["user_payments:amount_sum_1d"]).to_parquet(reference)

    env = {**services.env(), "FEATURESTORE_PROJECT": settings.project, "FEATURESTORE_REGISTRY_PATH": str(settings.registry_root),
           "FEATURESTORE_OFFLINE_PATH": str(settings.offline_root), "FEATURESTORE_CONSOLE_REFERENCE": str(reference)}
    admin, _ = create_token(example_repo, env, "console-admin", "admin")
    narrow, _ = create_token(example_repo, env, "merchants-only", "read_online:view=merchant_payments")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "featurestore", "serve", "--repo", str(example_repo), "--port", str(port)],
                              env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    shots = Path(os.environ.get("FEATURESTORE_SCREENSHOTS", str(tmp_path)))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        http = urllib3.PoolManager(retries=False)
        wait_for(lambda: server_answers(server, http, url), 30, "the feature server")
        # hostile or lost visitors: refused clearly, no page without a token
        json_type = {"Content-Type": "application/json"}
        assert http.request("POST", url + "/ui/login", body=b"{not json", headers=json_type).status == 400
        assert http.request("POST", url + "/ui/login", body=b'{"token": "fst_x_y"}', headers=json_type).status == 401
        assert http.request("POST", url + "/ui/login", body=b"token=x",
                            headers={"Content-Type": "application/x-www-form-urlencoded"}).status == 415
        lost = http.request("GET", url + "/ui/views/user_payments", redirect=False)
        assert lost.status == 303 and lost.headers["Location"] == "/ui/login"
        forged = http.request("GET", url + "/ui", headers={"Cookie": "fs_token=fst_forged_token"}, redirect=False)
        assert forged.status == 401
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def sign_in(token: str) -> None:
                page.goto(url + "/ui")
                assert page.url.endswith("/ui/login"), "not signed in: the sign-in page"
                page.fill("#token", token)
                page.click("button[type=submit]")
                page.wait_for_url(url + "/ui")

            sign_in(admin)
            text = page.inner_text("main")
            assert "user_payments" in text and "merchant_payments" in text and "5 s" in text  # the freshness objective
            assert "Lineage" in text and "Registry versions" in text
            page.screenshot(path=str(shots / "console-registry.png"), full_page=True)

            page.click("text=user_payments")
            view_text = page.inner_text("main")
            assert "amount_sum_1d" in view_text and "lag (records)" in view_text and "Dead letters" in view_text
            page.click("text=amount_sum_1d")
            bars = page.locator("svg.histogram rect")
            assert bars.count() >= 20, "the distribution plot renders (online and reference bars)"
            assert "PSI" in page.inner_text("main")
            page.screenshot(path=str(shots / "console-feature.png"), full_page=True)

            page.goto(url + "/ui/services")
            assert "fraud_model_v1" in page.inner_text("main")
            page.screenshot(path=str(shots / "console-services.png"), full_page=True)

            page.goto(url + "/ui/views/user_payments/consistency")
            assert "equal" in page.inner_text("main") and "differs" not in page.inner_text("main")

            page.goto(url + "/ui/logout")
            sign_in(narrow)
            text = page.inner_text("main")
            assert "merchant_payments" in text and "user_payments" not in text, "a token sees only the views it may read"
            answer = page.goto(url + "/ui/views/user_payments")
            assert answer is not None and answer.status == 404 and "no view" in page.inner_text("main")
            browser.close()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    audit = [json.loads(line) for line in settings.audit_log_file.read_text().splitlines()]
    assert any(a["path"] == "/ui" and a["status"] == 200 and a["token_name"] == "merchants-only" for a in audit)
