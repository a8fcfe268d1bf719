"""Training runs never overwrite what is not theirs, apply a changed learning rate on resume,
catch non-finite weights before a checkpoint holds them, and resume exactly (data order, noise)."""

import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from avid.cli import main
from avid.train import train
from avid.train.module import MethodModule, NonFiniteWeights
from avid.locks import FolderBusy
from tests.conftest import make_base, make_store
from tests.test_bad_input import fails
from tests.test_data_verify import hold_lock
from tests.test_train import run_config


@pytest.fixture
def setup(tmp_path):
    return make_base(tmp_path / "base"), make_store(tmp_path / "data").root


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != ".avid.lock"}


def test_training_refuses_a_base_model_folder_and_leaves_it_as_it_was(tmp_path, setup):
    base, data = setup
    target = tmp_path / "base-copy"
    shutil.copytree(base, target)
    before = snapshot(target)
    for method in ("avid", "pretrain"):  # pretraining writes the same kind, but this folder is no run
        cfg = run_config(tmp_path, base, data, steps=2, method=method)
        cfg.out = str(target)
        with pytest.raises(ValueError, match="choose a new or empty `out` folder"):
            train(cfg)
    assert snapshot(target) == before


def test_training_refuses_a_classifier_an_export_a_dataset_and_a_run_of_another_base(tmp_path, setup, capsys):
    base, data = setup
    run = train(run_config(tmp_path, base, data, steps=1))
    main(["export", "--run", str(run), "--out", str(tmp_path / "shipped")])
    clf = tmp_path / "clf"
    clf.mkdir()
    (clf / "config.yaml").write_text("kind: avid-action-classifier\n")
    (clf / "run.yaml").write_text("out: clf\ndata: d\n")
    cases = {tmp_path / "shipped": "no run.yaml", clf: "model of kind 'avid-action-classifier'",
             data: "files no training run of avid made"}
    for folder, why in cases.items():
        before = snapshot(folder)
        cfg = run_config(tmp_path, base, data, steps=1)
        cfg.out = str(folder)
        with pytest.raises(ValueError, match=why):
            train(cfg)
        assert snapshot(folder) == before
    other = make_base(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="holds a run with another base"):
        train(run_config(tmp_path, other, data, steps=2))
    cfg = tmp_path / "c.yaml"  # the same refusal through the command line: one line, exit code 2
    cfg.write_text(yaml.safe_dump({**run_config(tmp_path, base, data).to_dict(), "out": str(tmp_path / "shipped")}))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("avid: error:") and len(err.strip().splitlines()) == 1


def test_one_writer_per_run_folder_and_report_folder(tmp_path, setup):
    from avid.config import SampleConfig
    from avid.pipelines.evaluate import evaluate

    base, data = setup
    holder = hold_lock(tmp_path / "run")
    try:
        with pytest.raises(FolderBusy, match="in use by another avid process"):
            train(run_config(tmp_path, base, data, steps=1))
        assert not (tmp_path / "run" / "run.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    holder = hold_lock(tmp_path / "report")
    try:
        with pytest.raises(FolderBusy):
            evaluate({}, None, SampleConfig(), tmp_path / "report")
    finally:
        holder.kill()
        holder.wait()


def test_a_changed_learning_rate_is_applied_and_recorded_on_resume(tmp_path, setup):
    base, data = setup
    train(run_config(tmp_path, base, data, steps=2, lr=1e-3))
    orphans = [tmp_path / "run" / ".model.safetensors.k1.tmp", tmp_path / "run" / "checkpoints" / ".last.ckpt.k2.tmp"]
    for p in orphans:  # left by a run killed while writing
        p.write_bytes(b"partial")
    out = train(run_config(tmp_path, base, data, steps=4, lr=1e-5))
    assert not any(p.exists() for p in orphans)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    assert [g["lr"] for g in ckpt["optimizer_states"][0]["param_groups"]] == [1e-5]
    assert yaml.safe_load((out / "run.yaml").read_text())["train"]["lr"] == 1e-5
    logged = (out / "logs" / "version_1" / "metrics.csv").read_text().splitlines()
    col = logged[0].split(",").index("train/lr")
    assert all(float(r.split(",")[col]) == pytest.approx(1e-5) for r in logged[1:] if r.split(",")[col])
    assert logged[1:], "no steps logged"


def test_non_finite_weights_stop_training_before_any_checkpoint_holds_them(tmp_path, setup, monkeypatch):
    """An optimiser step that leaves a NaN weight (as an overflow in the update does) while that
    step's loss was finite: the run stops there, and the last checkpoint and export stay good."""
    import lightning as L

    base, data = setup
    out = train(run_config(tmp_path, base, data, steps=2))
    good = snapshot(out / "checkpoints"), (out / "model.safetensors").read_bytes()
    step = L.LightningModule.optimizer_step

    def overflowing(self, *args, **kwargs):
        step(self, *args, **kwargs)
        with torch.no_grad():
            next(self.method.adapter.parameters()).view(-1)[0] = float("nan")

    monkeypatch.setattr(L.LightningModule, "optimizer_step", overflowing)
    with pytest.raises(NonFiniteWeights, match="non-finite weights after optimiser step 3"):
        train(run_config(tmp_path, base, data, steps=4, ckpt_every=1))
    assert (snapshot(out / "checkpoints"), (out / "model.safetensors").read_bytes()) == good
    assert all(torch.isfinite(v).all() for v in load_file(out / "model.safetensors").values())


def test_weights_that_give_a_non_finite_loss_are_never_checkpointed(tmp_path, setup):
    """Issue 11: lr 1e6 left finite weights of size ~1e6 in the step-1 checkpoint, so every resume,
    at any learning rate, hit NaN again at once. A checkpoint now holds only weights whose loss on
    the batch just trained is finite, and a rerun at a sane rate trains."""
    base, data = setup
    with pytest.raises(NonFiniteWeights, match="the last good checkpoint is untouched"):
        train(run_config(tmp_path, base, data, steps=4, ckpt_every=1, lr=1e6))
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()  # no step was good to keep
    out = train(run_config(tmp_path, base, data, steps=4, ckpt_every=1, lr=1e-3))
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    assert max(float(v.abs().max()) for v in load_file(out / "model.safetensors").values()) < 100
    assert yaml.safe_load((out / "run.yaml").read_text())["train"]["lr"] == 1e-3


def test_export_writes_only_into_a_new_folder_or_over_an_earlier_export_of_the_same_kind(tmp_path, setup, capsys):
    """`avid export --out` onto a base model, onto the run itself or into a dataset replaced or cast
    what was there; it now refuses them and leaves them as they were."""
    base, data = setup
    run = train(run_config(tmp_path, base, data, steps=2))
    for folder in (base, run, data):
        before = snapshot(folder)
        fails(["export", "--run", str(run), "--out", str(folder)], capsys, "export would overwrite it")
        assert snapshot(folder) == before
    shipped = tmp_path / "shipped"
    main(["export", "--run", str(base), "--out", str(shipped)])
    main(["export", "--run", str(base), "--out", str(shipped), "--dtype", "fp32"])  # re-export: replaced
    assert yaml.safe_load((shipped / "config.yaml").read_text())["stored_dtype"] == "fp32"
    fails(["export", "--run", str(run), "--out", str(shipped)], capsys, "holds a model of kind 'avid-base-model'")


class Killed(Exception):
    pass


def test_a_killed_and_resumed_run_matches_an_uninterrupted_one_bit_for_bit(tmp_path, setup, monkeypatch):
    """Same batches (the data order resumes mid-epoch) and the same diffusion steps and noise."""
    base, data = setup
    losses, crash = {}, {"at": None}
    step = MethodModule.training_step

    def recorded(self, batch, batch_idx):
        if self.global_step == crash["at"]:
            crash["at"] = None
            raise Killed  # like a kill: no end-of-training hooks, no checkpoint
        loss = step(self, batch, batch_idx)
        losses[self.global_step + 1] = float(loss.detach())
        return loss

    def config(folder):
        cfg = run_config(folder, base, data, steps=6, ckpt_every=3)
        cfg.data.train_limit = 10  # 10 windows, batches of 4: 2 per epoch; the checkpoint falls mid-epoch
        return cfg

    monkeypatch.setattr(MethodModule, "training_step", recorded)
    (tmp_path / "straight").mkdir()
    straight = train(config(tmp_path / "straight"))
    want = dict(losses)
    losses.clear()
    crash["at"] = 4  # dies in step 5, after the checkpoint of step 3
    with pytest.raises(Killed):
        train(config(tmp_path))
    assert sorted(losses) == [1, 2, 3, 4]
    losses.clear()
    out = train(config(tmp_path))
    assert sorted(losses) == [4, 5, 6]
    assert all(losses[s] == want[s] for s in (4, 5, 6)), (losses, want)
    a, b = load_file(out / "model.safetensors"), load_file(straight / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
