"""docs/first-repository.md, run as a new user would: its bash blocks verbatim, in order, in
one shell on a fresh folder, with nothing of the test environment exported."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "first-repository.md"
STEP = "### step "


def page_script() -> tuple[str, int]:
    """The page's bash blocks as one script, each block announced on stdout; and how many."""
    blocks = re.findall(r"```bash\n(.*?)```", PAGE.read_text(), flags=re.S)
    parts = ["set -euo pipefail"]
    for i, block in enumerate(blocks, 1):
        parts += [f"echo '{STEP}{i}'", block]
    return "\n".join(parts) + "\n", len(blocks)


def test_the_first_repository_page_runs_as_written(tmp_path: Path) -> None:
    script, steps = page_script()
    assert steps == 9, "the page's steps changed: update the checks below"
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "featurestore").exists(), "the featurestore command is not installed beside this Python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
    env |= {"PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "COLUMNS": "200"}
    proc = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    finally:  # whatever happened: the server (same session) and the dev services
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if (tmp_path / "rides").is_dir():
            subprocess.run([str(bin_dir / "featurestore"), "dev", "stop", "--repo", str(tmp_path / "rides")],
                           env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in out + err
    step = dict(enumerate(out.split(f"{STEP}")[1:], 1))
    step = {int(text.split("\n", 1)[0]): text.split("\n", 1)[1] for text in step.values()}
    repo = tmp_path / "rides"

    assert (repo / "features.py").is_file() and "featurestore apply" in (repo / "README.md").read_text()
    assert step[2] == "", "stdout of dev --detach is only the exports, which eval consumed"
    assert "+ FeatureView driver_trips" in step[3] and "Applied version 1" in step[3]
    assert any(line.split()[:2] == ["trips_1h", "int"] for line in step[3].splitlines())
    assert "Sent 5,000 events (fake) over the last 2h to 'trips'" in step[4] and "keyed by driver_id" in step[4]
    assert "Done: 5,000 events applied, 0 dead-lettered" in step[5]

    online = _table(step[6])
    assert [row["driver_id"] for row in online] == ["1", "2"]
    assert all(int(row["trips_1h"]) > 0 and row["last_city"].startswith("city-") for row in online)
    # the same sums from the history by DuckDB, as of the same moment (every event is < 1 day old)
    train = pq.read_table(repo / "train.parquet").to_pylist()
    assert "Wrote 2 rows" in step[7]
    assert [f"{r['fare_sum_1d']:,.2f}" for r in train] == [row["fare_sum_1d"] for row in online]
    served = json.loads(step[8].strip().splitlines()[-1])
    assert served["entities"] == {"driver_id": [1, 2]}
    assert served["features"]["trips_1d"]["statuses"] == ["present", "present"]
    assert served["features"]["trips_1d"]["values"] == [r["trips_1d"] for r in train]
    assert "Stopped broker" in step[9]


def _table(text: str) -> list[dict[str, str]]:
    """The rows of a rich table printed by the CLI."""
    lines = [line for line in text.splitlines() if line.startswith(("┃", "│"))]
    header = [c.strip() for c in lines[0].strip("┃").split("┃")]
    return [dict(zip(header, (c.strip() for c in line.strip("│").split("│")))) for line in lines[1:]]
