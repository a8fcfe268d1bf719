"""Pipelines: the commands that combine the layers (evaluate, experiment and its report, scaling,
quickstart, bench, serve, the action classifier's training). They sit above data, nn, diffusion,
blackbox, methods, train, rollout and metrics, and below ``avid.cli``, which only parses and
dispatches to them."""
