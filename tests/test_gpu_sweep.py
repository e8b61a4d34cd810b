"""`scripts/gpu_sweep.py --cpu`: the GPU sweep's matrix, tiny and on the CPU, end to end.

The GPU figures need a GPU host; this runs the same code path (a worker per K started with
`hpoq worker --slots K`, warm-up, one variant per cell, length grouping off and on) so the
script is known to work before a GPU's minutes are spent on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_sweep.py"


@pytest.mark.timeout(660)  # the sweep's own bound (subprocess timeout below) decides
def test_the_cpu_sweep_writes_its_json_and_log(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPOQ_", "MLFLOW_", "OUT"))}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu", "--out", str(out), "--timeout", "400"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((out / "gpu_sweep.json").read_text(encoding="utf-8"))
    assert json.loads(done.stdout.strip().splitlines()[-1]) == report
    assert report["complete"] and report["error"] is None
    assert report["device"] == "cpu"
    cells = {c["cell"]: c for c in report["cells"]}
    assert set(cells) == {
        "tiny-fp32-shuffled-k1",
        "tiny-fp32-grouped-k1",
        "tiny-fp32-shuffled-k2",
        "tiny-fp32-grouped-k2",
    }
    for cell in cells.values():
        assert cell["trials_completed"] == cell["trials_requested"] == cell["slots"]
        assert cell["trials_per_hour"] > 0
        assert cell["gpu_busy_pct"] is None  # no GPU here: not measured, not made up
    # Two slots ran their trials side by side; one slot one at a time.
    assert cells["tiny-fp32-shuffled-k2"]["max_concurrent_trials"] == 2
    assert cells["tiny-fp32-grouped-k1"]["max_concurrent_trials"] == 1
    # Grouping cut the training batches' padding (tweet-like lengths).
    for k in (1, 2):
        grouped, shuffled = cells[f"tiny-fp32-grouped-k{k}"], cells[f"tiny-fp32-shuffled-k{k}"]
        assert grouped["padding_fraction"] < shuffled["padding_fraction"]
    target = report["targets"]["fp32"]
    assert target["gpu_busy_met"] is None
    assert target["k1_before_trials_per_hour"] == cells["tiny-fp32-shuffled-k1"]["trials_per_hour"]
    log = (out / "gpu_sweep.log").read_text(encoding="utf-8")
    assert "tiny-fp32-grouped-k2" in log and "target [tiny fp32]" in log
    assert (out / "gpu_sweep_logs" / "worker-k2.log").is_file()
