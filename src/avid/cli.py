"""The ``avid`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*Gym has been unmaintained.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors"):
        logging.getLogger(name).setLevel(logging.WARNING)


def cmd_data(args) -> None:
    from avid.data.procgen import PRESETS, ProcgenSpec, generate

    if args.preset:
        spec = PRESETS[args.preset]
    else:
        start, _, stop = args.levels.partition(":")
        spec = ProcgenSpec(games=args.games.split(","), start_level=int(start),
                           num_levels=int(stop) - int(start) if stop else 1, steps_per_level=args.steps_per_level,
                           trajectories=args.trajectories, seed=args.seed)
    store = generate(spec, args.out)
    print(f"{store.num_frames()} frames in {len(store.shards)} shards at {args.out}")


def cmd_train(args) -> None:
    from avid.config import load_run_config
    from avid.train import train

    cfg = load_run_config(args.config, args.set)
    train(cfg)
    print(f"model written to {cfg.out}")


def main(argv: list[str] | None = None) -> None:
    _quiet()
    p = argparse.ArgumentParser(prog="avid", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("data", help="generate action-labelled datasets")
    dsub = d.add_subparsers(dest="source", required=True)
    pg = dsub.add_parser("procgen", help="Procgen episodes with uniform random actions")
    from avid.data.procgen import PRESETS

    pg.add_argument("--preset", choices=sorted(PRESETS), help="a named dataset (paper sizes and CPU versions)")
    pg.add_argument("--games", default="coinrun", help="comma-separated game names")
    pg.add_argument("--levels", default="0:100", help="level range start:stop")
    pg.add_argument("--steps-per-level", type=int, default=1000)
    pg.add_argument("--trajectories", type=int, default=0,
                    help="instead of streams: this many 10-frame trajectories from random levels in the range")
    pg.add_argument("--seed", type=int, default=0)
    pg.add_argument("--out", required=True)
    pg.set_defaults(fn=cmd_data)

    for name, helptext in (("train", "train a method (AVID, a baseline, an ablation)"),
                           ("pretrain", "train the base image-to-video model")):
        t = sub.add_parser(name, help=helptext)
        t.add_argument("--config", required=True, help="experiment YAML")
        t.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                       help="override config values, e.g. train.max_steps=500")
        t.set_defaults(fn=cmd_train)

    args = p.parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"avid: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
