"""How a run shows progress and stops: one resumable last.ckpt, the time cap said in one line,
Ctrl-C / SIGTERM saved after the current step, progress bars with honest totals."""

import logging
import os
import signal
from types import SimpleNamespace

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Timer

from avid.config import SampleConfig
from avid.rollout import sample_videos
from avid.train import load_method, train
from avid.train.callbacks import StepProgressBar, forecast
from avid.train.module import MethodModule
from tests.conftest import make_base, make_store
from tests.test_train import run_config


@pytest.fixture
def setup(tmp_path):
    return make_base(tmp_path / "base"), make_store(tmp_path / "data").root


def checkpoints(tmp_path):
    return sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())


def saved_step(tmp_path):
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    return ckpt["global_step"], yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["step"]


def test_forecast_takes_the_time_cap_into_account():
    assert forecast(10, 500, None, 60.0).eta_s is None  # no rate yet: no made-up ETA
    free = forecast(10, 500, 2.0, None)
    assert (free.total, free.eta_s, free.capped) == (500, 245.0, False)
    capped = forecast(10, 500, 2.0, 60.0)  # 490 steps would take 245 s; the cap leaves 60
    assert capped.capped and capped.total == 130 and capped.eta_s == 60.0
    assert forecast(10, 500, 2.0, 1000.0).total == 500  # a cap that does not bind changes nothing


def test_progress_bar_total_and_eta_follow_the_cap(monkeypatch):
    timer = Timer(duration={"minutes": 8})
    monkeypatch.setattr(timer, "time_remaining", lambda stage=None: 100.0)
    trainer = SimpleNamespace(global_step=0, max_steps=500, callbacks=[timer], loggers=[],
                              progress_bar_metrics={"train/loss": 0.25})
    bar = StepProgressBar("train t", max_minutes=8)
    bar.disable()  # a tqdm that writes nothing, same bookkeeping
    bar.on_train_start(trainer, None)
    clock = iter([0.0, 10.0])
    bar.clock = lambda: next(clock)
    trainer.global_step = 1
    bar.on_train_batch_end(trainer, None, None, None, 0)  # first step: set-up excluded from the rate
    assert bar.bar.total == 500
    trainer.global_step = 21
    bar.on_train_batch_end(trainer, None, None, None, 1)  # 2 steps/s, 100 s left: stops near step 221
    assert bar.bar.total == 221 and bar.bar.n == 21
    assert "01:40 left" in bar.bar.postfix and "stops near step 221 of 500" in bar.bar.postfix
    assert "loss 0.25" in bar.bar.postfix


def test_time_cap_says_where_it_stopped_and_keeps_one_resumable_last_ckpt(tmp_path, setup, caplog):
    base, data = setup
    with caplog.at_level(logging.WARNING, logger="avid"):
        train(run_config(tmp_path, base, data, steps=5, max_minutes=1e-4))  # 6 ms: stops after step 1
    notes = [r.getMessage() for r in caplog.records if "time cap" in r.getMessage()]
    assert len(notes) == 1 and "at step 1 of 5" in notes[0] and "train.max_minutes" in notes[0]
    assert checkpoints(tmp_path) == ["last.ckpt"] and saved_step(tmp_path) == (1, 1)
    caplog.clear()
    train(run_config(tmp_path, base, data, steps=4, max_minutes="null"))  # saves at 2 and 4 (ckpt_every=2)
    assert checkpoints(tmp_path) == ["last.ckpt"] and saved_step(tmp_path) == (4, 4)
    assert not [r for r in caplog.records if "time cap" in r.getMessage()]


@pytest.mark.parametrize("sig,raised", [(signal.SIGTERM, SystemExit), (signal.SIGINT, KeyboardInterrupt)])
def test_a_signal_stops_after_the_current_step_with_everything_saved(tmp_path, setup, monkeypatch, sig, raised,
                                                                      caplog):
    base, data = setup
    step = MethodModule.training_step

    def signalled_step(self, batch, batch_idx):
        if self.global_step == 1:  # arrives during the second step
            os.kill(os.getpid(), sig)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(MethodModule, "training_step", signalled_step)
    before = signal.getsignal(sig)
    with caplog.at_level(logging.WARNING, logger="avid"), pytest.raises(raised) as e:
        train(run_config(tmp_path, base, data, steps=50, ckpt_every=50))
    if raised is SystemExit:
        assert e.value.code == 128 + sig
    assert signal.getsignal(sig) is before  # the handler is put back
    assert saved_step(tmp_path) == (2, 2) and checkpoints(tmp_path) == ["last.ckpt"]
    assert any(f"stopped at step 2 of 50" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(MethodModule, "training_step", step)
    train(run_config(tmp_path, base, data, steps=3, ckpt_every=50))  # the same command resumes
    assert saved_step(tmp_path) == (3, 3)


def test_training_and_sampling_bars_count_optimiser_and_denoising_steps(tmp_path, setup, capsys):
    base, data = setup
    train(run_config(tmp_path, base, data, steps=3, progress="true"))
    err = capsys.readouterr().err
    assert "train avid" in err and "3/3 steps" in err
    method, _ = load_method(tmp_path / "run", precision="fp32")
    first, actions = torch.rand(3, 3, 2, 16, 16) * 2 - 1, torch.randint(0, 5, (3, 4))
    sample_videos(method, first, actions, SampleConfig(steps=4, batch_size=2))
    err = capsys.readouterr().err
    assert "3 videos: 2 batches x 4 ddim steps" in err and "8/8" in err
