"""``avid quickstart --domain robot``: what the quickstart's robot variant uses instead of Coinrun's,
the flow being the quickstart's own (``avid.pipelines.quickstart``): the shipped latent base model
(``assets/base-robot``, served as a black box with its codec's encode/decode), the shipped 7-D action
regressor of the Action Error Ratio (``assets/action-regressor-robot``), and the simulated arm's
held-out place task: the first episodes of ``robot-target-cpu`` to train on and the first
trajectories of ``robot-target-test`` to evaluate (episode ``i`` of a preset depends only on its
seed and ``i``, so these are exactly the presets' first ones).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from avid.data.robot import PRESETS, generate

CONFIG = "configs/robot/quickstart.yaml"
REGRESSOR = "assets/action-regressor-robot"
TITLE = "robot-arm trajectories (place task)"
DEFAULTS = {"config": CONFIG, "data_dir": "data/quickstart", "runs_dir": "runs/quickstart-robot",
            "report_dir": "reports/quickstart-robot", "eval_size": 64}


def prepare_data(data_dir: str, episodes: int, eval_size: int) -> tuple[Path, Path]:
    """The training episodes (place task, with actions) and the held-out test trajectories, generated
    once into ``data_dir`` (resumable) and reused afterwards."""
    train_dir, eval_dir = Path(data_dir) / f"robot-target-{episodes}", Path(data_dir) / f"robot-test-{eval_size}"
    generate(dataclasses.replace(PRESETS["robot-target-cpu"], episodes=episodes), str(train_dir))
    generate(dataclasses.replace(PRESETS["robot-target-test"], trajectories=eval_size), str(eval_dir))
    return train_dir, eval_dir


def held_out(n: int) -> str:
    """The evaluation set in words, for the report's note."""
    return (f"{n} held-out trajectories of the simulated arm's place task (test episodes, seed "
            f"{PRESETS['robot-target-test'].seed}, a random start in each; 7-D actions)")
