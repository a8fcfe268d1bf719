"""Shared fixtures: a tiny base model behind the black-box door, and a tiny synthetic dataset."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import torch

from avid.blackbox import open_denoiser
from avid.whitebox import BASE_KIND
from avid.checkpoint import save_model
from avid.data import EpisodeStore
from avid.nn import UNet3D, UNetConfig

torch.set_num_threads(1)  # pytest runs two workers (pyproject.toml): one thread each fills the 2 cores
os.environ.setdefault("OMP_NUM_THREADS", "1")  # and the processes tests start (servers, workers)

# The longest test files, longest first (one worker's minutes each, measured with `pytest -n 0
# --durations=0`). With `--dist loadfile --no-loadscope-reorder` (pyproject.toml) pytest-xdist hands
# files to its two workers in collection order, so these start first and the many short files fill
# in after them; xdist's default order (most tests first) would start these one-test files last.
LONGEST_FIRST = ("test_readme_comparison.py", "test_readme.py", "test_readme_robot.py", "test_experiment.py",
                 "test_ddp.py", "test_train.py", "test_unet.py", "test_action_classifier.py",
                 "test_perceptual_networks.py", "test_outcome.py", "test_remote.py", "test_scaling.py")


def pytest_collection_modifyitems(items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def pytest_collection_finish(session):
    """Every module is imported now (torch, Lightning, the tests'): move what is alive to the
    collector's permanent generation, so that each full collection (``avid.train`` runs one per
    training run, Python's own gen-2 collections) scans only what tests made, not the ~0.5M objects
    of the imports (0.3 s of CPU per collection otherwise). Objects made later are collected as before."""
    gc.collect()
    gc.freeze()


TINY_UNET = dict(base_channels=8, channel_mults=[1, 2], patch_size=2, attn_from_level=1, attn_heads=2,
                 attn_head_dim=8, cond_dim=16, groups=4)
SIZE, K, NUM_STEPS = 16, 2, 20


def make_base(folder, param: str = "x0", schedule: str = "sigmoid", seed: int = 0, size: int = SIZE):
    """A random-init base model saved as the project saves base models; returns its folder."""
    torch.manual_seed(seed)
    cfg = UNetConfig(in_channels=3 * (1 + K), out_channels=3, num_steps=NUM_STEPS, **TINY_UNET)
    net = UNet3D(cfg)
    with torch.no_grad():  # make the base's output depend visibly on its input
        for p in net.head[-1].parameters():
            p.normal_(0, 0.05)
    config = {"kind": BASE_KIND, "unet": cfg.to_dict(),
              "diffusion": {"num_steps": NUM_STEPS, "schedule": schedule, "param": param, "weighting": "eps"},
              "channels": 3, "cond_frames": K, "frame_size": size, "frames": 6, "step": 0}
    save_model(folder, {f"net.{k}": v for k, v in net.state_dict().items()}, config)
    return folder


@pytest.fixture
def tiny_base(tmp_path):
    """Folder of a tiny random-init base model (x0 parameterisation, 20 steps, 16x16 frames)."""
    return make_base(tmp_path / "base")


@pytest.fixture
def tiny_denoiser(tiny_base):
    return open_denoiser(tiny_base, precision="fp32")


def make_store(folder, n_frames: int = 120, episode: int = 40, size: int = SIZE, seed: int = 0) -> EpisodeStore:
    """Synthetic episodes: a bright square moving by the action (0..4: stay, left, right, up, down)."""
    rng = np.random.default_rng(seed)
    store = EpisodeStore(folder, meta={"source": "synthetic", "action_kind": "discrete", "num_actions": 5,
                                       "frame_size": size})
    frames = np.zeros((n_frames, size, size, 3), np.uint8)
    actions = rng.integers(0, 5, n_frames)
    firsts = np.zeros(n_frames, bool)
    moves = {0: (0, 0), 1: (0, -2), 2: (0, 2), 3: (-2, 0), 4: (2, 0)}
    y = x = size // 2
    for j in range(n_frames):
        if j % episode == 0:
            firsts[j], y, x = True, rng.integers(3, size - 3), rng.integers(3, size - 3)
        frames[j, :, :] = (40, 60, 90)
        frames[j, y - 2:y + 2, x - 2:x + 2] = (250, 220, 30)
        dy, dx = moves[int(actions[j])]
        y, x = int(np.clip(y + dy, 2, size - 2)), int(np.clip(x + dx, 2, size - 2))
    store.write_shard("synthetic", frames, actions, firsts)
    return store


@pytest.fixture
def tiny_store(tmp_path):
    return make_store(tmp_path / "data")
