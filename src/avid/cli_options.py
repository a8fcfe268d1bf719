"""The ``avid`` command's option machinery: a parser that states every option's default, argument
types that refuse bad input in one line, and the sampler options ``avid sample`` and ``avid eval``
share."""

from __future__ import annotations

import argparse
import math


class DefaultsHelp(argparse.HelpFormatter):
    """States every option's default: appends "(default: X)" to the help text; options whose
    default is None (or an empty list) say in their own words what happens without them."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        unstated = action.default is None or action.default is False or action.default == []
        if not action.option_strings or action.required or unstated or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelp)
        super().__init__(*args, **kwargs)


class Renamed(argparse.Action):
    """An option's old spelling: giving it is an error naming the new one (``new``)."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs="?", help=argparse.SUPPRESS)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string} meant sampling steps in some commands and optimiser steps in others; "
                     f"it is now {self.new}")


def add_train_steps(p, help: str) -> None:
    """``--train-steps``: optimiser steps (``--steps`` is refused with this name)."""
    p.add_argument("--train-steps", type=int, default=None, help=help)
    p.add_argument("--steps", action=Renamed, new="--train-steps (optimiser steps)")


def level_range(text: str) -> tuple[int, int]:
    """``START:STOP`` -> (start, number of levels); anything else is an error, never one level."""
    start, sep, stop = text.partition(":")
    try:
        first, end = int(start), int(stop)
    except ValueError:
        first = end = -1
    if not sep or first < 0 or end <= first:
        raise argparse.ArgumentTypeError(f"expected a level range START:STOP with 0 <= START < STOP (STOP "
                                         f"excluded), e.g. 0:500 or 10000:11000; got {text!r}")
    return first, end - first


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 5,100,199; got {text!r}") from None


def add_sampler_options(p, batch_size: int) -> None:
    """The sampler settings of ``avid sample`` and ``avid eval``, with ``SampleConfig``'s defaults."""
    from avid.config import SampleConfig

    d = SampleConfig()
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default=d.sampler,
                   help="ddim: --ddim-steps evenly spaced diffusion steps; ddpm: every diffusion step (the paper's "
                   "Coinrun setting: 200 steps, 10x the network calls of DDIM with 20)")
    p.add_argument("--steps", action=Renamed, new="--ddim-steps (DDIM sampling steps)")
    p.add_argument("--ddim-steps", type=int, default=d.steps, help="DDIM sampling steps, ignored by ddpm; the "
                   "quickstart, the experiment configs and the README's tables use the same number")
    p.add_argument("--eta", type=float, default=d.eta, help="DDIM noise: 0 deterministic, 1 the DDPM posterior's")
    p.add_argument("--start-step", type=int, default=d.start_step,
                   help="SDEdit-style: start at this diffusion step from the last conditioning frame noised to it "
                   "(default: from pure noise at the last step)")
    p.add_argument("--batch-size", type=int, default=batch_size, help="videos sampled at once")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="noise seed: every method sampled with one seed gets the same initial noise")


def add_precision_option(parser, default: str | None = None) -> None:
    """The same ``--precision`` option on every command that runs a network (``avid.precision``)."""
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=default,
                        help="numeric precision of every forward pass (default: "
                             f"{default or 'the config, which says auto'}; auto = bf16 where this machine "
                             "runs it natively (AMX / AVX512-BF16 CPUs, GPUs), else fp32; fp16: GPUs only)")


# Options that count something (at least 1 when given: 0 never means "all" or "auto") and amounts
# of time or size (positive); options where 0 means something (--seed, --port, --trajectories) are not here
COUNTS = ("threads", "limit", "batch_size", "train_steps", "ddim_steps", "eval_size", "sweep_size", "val_size",
          "train_levels", "steps_per_level", "repeats", "max_batch", "episodes", "episode_len", "trajectory_len",
          "frame_size", "batch", "frames", "size", "width", "states", "horizon", "timesteps", "num_envs",
          "eval_episodes", "chunk", "ladder", "train_episodes")
AMOUNTS = ("minutes", "budget_minutes", "minutes_per_method", "max_request_mb")


def check_counts(args: argparse.Namespace) -> None:
    """A clear error for a count below 1 or a non-positive amount among the parsed options."""
    for name in COUNTS + AMOUNTS:
        given = getattr(args, name, None)
        for v in given if isinstance(given, list) else [given]:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            flag = "--" + name.replace("_", "-")
            if name in COUNTS and v < 1:
                raise ValueError(f"{flag} must be at least 1, got {v} (leave it out for the default)")
            if name in AMOUNTS and not 0 < v < math.inf:
                raise ValueError(f"{flag} must be a positive number, got {v} (leave it out for the default)")
