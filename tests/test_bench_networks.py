"""``avid bench --preset``: a size preset's networks timed alone, train step and prediction step."""

import torch

from avid.pipelines.bench_networks import Entry, Shape, format_rows, preset_networks, steps, time_steps
from avid.nn import count_parameters
from avid.precision import resolve_precision


def test_preset_networks_have_the_avid_layout_and_the_width_asked_for():
    base, adapter = preset_networks("paper-22m", width=8)
    assert (base.cfg.in_channels, base.cfg.out_channels, base.cfg.action_kind) == (9, 3, "none")
    assert (adapter.cfg.in_channels, adapter.cfg.out_channels, adapter.cfg.action_kind) == (12, 4, "discrete")
    assert base.cfg.base_channels == adapter.cfg.base_channels == 8 and base.cfg.blocks == "paper"
    assert adapter.cfg.cond_dim == round(176 * 8 / 50) and base.cfg.cond_dim == round(512 * 8 / 100)


def test_a_train_step_moves_the_adapter_only_and_a_prediction_step_moves_nothing():
    torch.manual_seed(0)
    entry = Entry("tiny", *preset_networks("paper-22m", width=8))
    train, predict = steps(entry, Shape(1, 2, 16), resolve_precision("fp32"), torch.device("cpu"))
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (entry.base, entry.adapter)]
    predict()
    assert all(torch.equal(v, m.state_dict()[k]) for m, b in zip((entry.base, entry.adapter), before) for k, v in b.items())
    train()
    assert all(torch.equal(v, entry.base.state_dict()[k]) for k, v in before[0].items())
    assert any(not torch.equal(v, entry.adapter.state_dict()[k]) for k, v in before[1].items())


def test_rows_name_what_was_timed():
    torch.manual_seed(0)
    entries = [Entry("a", *preset_networks("paper-22m", width=8)), Entry("b", *preset_networks("cpu-small", width=8))]
    rows = time_steps(entries, Shape(1, 2, 16), warmup=1, repeats=1)
    assert [r["name"] for r in rows] == ["a", "b"]
    assert rows[0]["adapter_parameters"] == count_parameters(entries[0].adapter)
    assert all(r["train_step_s"] > 0 and r["predict_step_s"] > 0 and r["frames"] == 2 for r in rows)
    assert "base / adapter params" in format_rows(rows)
