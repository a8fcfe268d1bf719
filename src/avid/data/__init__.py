"""Data: episode storage, the Procgen and robot-arm generators, RLDS / MP4 import, windows and the
per-step batch."""

from avid.data.storage import EpisodeStore
from avid.data.windows import Batch, LatentWindows, WindowDataset, collate, to_uint8, to_video

__all__ = ["Batch", "EpisodeStore", "LatentWindows", "WindowDataset", "collate", "to_uint8", "to_video"]
