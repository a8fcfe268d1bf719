"""Multi-device training through Lightning's DDP, on 2 CPU processes (gloo): after a step both
ranks hold the same weights, and only rank 0 writes into the run folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import make_base, make_store

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_ddp_keeps_the_ranks_in_step_and_only_rank_0_writes(tmp_path):
    make_base(tmp_path / "base")
    make_store(tmp_path / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"), "PL_DISABLE_FORK": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "ddp_run.py"), str(tmp_path), "2"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world_size"], r["step"]) for r in ranks] == [(0, 2, 2), (1, 2, 2)]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients all-reduced: the replicas agree
    assert ranks[1]["written"] == []
    for name in ("model.safetensors", "config.yaml", "last.ckpt", "metrics.csv"):  # (atomic writes: via temp files)
        assert any(name in p for p in ranks[0]["written"]), (name, ranks[0]["written"])
    assert (tmp_path / "run" / "model.safetensors").exists()
