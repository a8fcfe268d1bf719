"""One typed config tree, one merge rule: every config (a method's run, the base model's
pretraining, the action classifier, an experiment, the scaling ladder) is loaded by
``avid.config.load``: defaults, the YAML file, ``--set``, then the command's flags; unknown keys
are refused at any depth with the valid ones; flags go in as values, never as YAML text."""

from pathlib import Path

import pytest
import yaml

from avid.checkpoint import REPO_ROOT
from avid.config import RunConfig, TrainConfig, load, load_run_config
from avid.pipelines.classifier_train import ClassifierRunConfig, classifier_run_config
from avid.pipelines.experiment_config import ExperimentConfig, load_experiment
from avid.pipelines.scaling import ScalingConfig, load_scaling
from avid.train.codec import codec_run_config

LOADERS = {"procgen": load_run_config, "coinrun": load_run_config, "robot": load_run_config,
           "classifier": classifier_run_config}


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "configs").glob("*/*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_file_loads(path: Path):
    if path.parent.name in ("sizes", "unet"):  # presets read by avid.methods.sizes, not configs
        return
    if "codec" in path.stem:
        loader = codec_run_config
    else:
        loader = LOADERS.get(path.parent.name) or (load_scaling if "scaling" in path.stem else load_experiment)
    assert loader(path) is not None


@pytest.mark.parametrize("cls, key, valid", [
    (RunConfig, "train.max_stepz", "max_steps"), (ClassifierRunConfig, "train.max_stepz", "max_steps"),
    (ExperimentConfig, "run.train.max_stepz", "max_steps"), (ScalingConfig, "run.data.framez", "frames"),
    (RunConfig, "diffusion.num_step", "num_steps"), (ClassifierRunConfig, "classifier.hiden", "hidden")])
def test_an_unknown_key_at_any_depth_is_refused_with_the_valid_ones(cls, key, valid):
    section, _, name = key.rpartition(".")
    expected = rf"unknown key\(s\) \['{name}'\] in .*section '{section}'; valid: \[.*'{valid}'"
    with pytest.raises(ValueError, match=expected):
        load(cls, None, [f"{key}=1"])


def test_files_merge_key_by_key_at_every_depth_and_flags_win(tmp_path):
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump({"run": {"train": {"batch_size": 3}}, "steps": 9}))
    exp = load_experiment(exp_file, ["run.train.lr=1e-3", "steps=10"], {"steps": 11, "eval_size": None})
    assert (exp.run.train.batch_size, exp.run.train.lr, exp.steps) == (3, 1e-3, 11)  # file, --set, flag
    assert exp.run.train.max_steps == TrainConfig().max_steps and exp.eval_size == ExperimentConfig().eval_size
    # the classifier's own training defaults stay where its file does not speak
    clf_file = tmp_path / "clf.yaml"
    clf_file.write_text(yaml.safe_dump({"train": {"lr": 0.5}}))
    clf = classifier_run_config(clf_file)
    assert clf.train.lr == 0.5 and clf.train.max_steps == ClassifierRunConfig().train.max_steps == 4000


def test_flags_go_in_as_values_not_as_yaml_text():
    exp = load_experiment(None, None, {"methods": ["avid", "poe"], "seeds": [1, 2], "name": "a: [b"})
    assert (exp.methods, exp.seeds, exp.name) == (["avid", "poe"], [1, 2], "a: [b")  # as YAML text: a mapping
    run = load_run_config(None, ["train.lr=2e-4"], {"train.precision": "fp32", "out": "runs/x"})
    assert (run.train.lr, run.train.precision, run.out) == (2e-4, "fp32", "runs/x")


def test_methods_and_the_classifier_share_one_training_config():
    assert type(ClassifierRunConfig().train) is type(RunConfig().train) is TrainConfig
    with pytest.raises(ValueError, match="train.max_steps must be a finite number >= 1"):
        classifier_run_config(None, ["train.max_steps=0"])


def test_every_report_states_the_sampler_one_way():
    from avid.config import SampleConfig

    assert SampleConfig(sampler="ddim", steps=4).describe() == "DDIM with 4 steps (eta 0)"
    assert SampleConfig(sampler="ddim", steps=None, eta=1.0).describe() == "DDIM with every diffusion step (eta 1)"
    assert SampleConfig(sampler="ddpm", steps=4).describe() == "DDPM with every diffusion step"


@pytest.mark.parametrize("key, value, expected", [
    ("train.max_steps", "2.5", "train.max_steps must be a whole number, got 2.5"),
    ("train.max_steps", "true", "train.max_steps must be a whole number, got True"),
    ("train.progress", "maybe", "train.progress must be true or false, got 'maybe'"),
    ("train.lr", "true", "train.lr must be a number, got True"),
    ("train.max_minutes", ".inf", "train.max_minutes must be positive"),
    ("sample.eta", "[1]", "sample.eta must be a number, got [1]")])
def test_a_value_of_the_wrong_type_is_refused_not_rounded_or_taken_as_true(key, value, expected):
    """Issue 11: `train.max_steps=2.5` trained 3 steps, `train.max_steps=true` one and
    `train.progress=maybe` showed the bar, all with exit 0; `train.max_minutes=.inf` was an OverflowError."""
    with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace(".", r"\.")):
        load_run_config(None, [f"{key}={value}"])
    assert load_run_config(None, ["train.max_minutes=3", "train.lr=1"]).train.lr == 1  # an int where a float goes
