"""The world model as a gymnasium environment (single and batched), its start frames, and the
learned reward and termination models. Importing this package registers ``avid/WorldModel-v0``:

    import gymnasium, avid.envs
    env = gymnasium.make("avid/WorldModel-v0", model="runs/quickstart/avid", starts="procgen:coinrun")
    envs = gymnasium.make_vec("avid/WorldModel-v0", num_envs=8, vectorization_mode="vector_entry_point",
                              model=..., starts=...)

(or without importing: ``gymnasium.make("avid.envs:avid/WorldModel-v0", ...)``). The keyword
arguments are ``WorldModelEnv``'s.
"""

import gymnasium

from avid.envs.starts import DatasetStarts, ProcgenStarts, Starts, open_starts
from avid.envs.world_model import Imagination, WorldModelEnv, WorldModelVecEnv, open_model

ENV_ID = "avid/WorldModel-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(ENV_ID, entry_point="avid.envs.world_model:WorldModelEnv",
                       vector_entry_point="avid.envs.world_model:WorldModelVecEnv")

__all__ = ["DatasetStarts", "ENV_ID", "Imagination", "ProcgenStarts", "Starts", "WorldModelEnv",
           "WorldModelVecEnv", "open_model", "open_starts"]
