"""Sampling videos from first frames + actions, single windows and autoregressive long rollouts."""

from avid.rollout.sample import Rollout, quantise, rollout_long, sample_videos

__all__ = ["Rollout", "quantise", "rollout_long", "sample_videos"]
