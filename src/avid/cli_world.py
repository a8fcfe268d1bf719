"""The ``avid`` commands of the world model used as an environment: ``drift`` (long rollouts
against the real game). ``cli.py`` adds them with ``add_world_model_commands``."""

from __future__ import annotations

from avid.cli_options import add_precision_option, add_sampler_options, int_list, level_range


def cmd_drift(args) -> None:
    from pathlib import Path

    from avid.config import SampleConfig
    from avid.drift import DriftSpec, measure_drift
    from avid.train import load_method

    models = {}
    for folder in ([args.base] if args.base else []) + args.checkpoint:
        method, _ = load_method(folder, args.precision)
        models["base" if method.name == "base" else Path(folder).name] = method
    if not models:
        raise ValueError("give at least one model: --checkpoint RUN and/or --base BASE_FOLDER")
    if any(k < 0 for k in args.reground):
        raise ValueError(f"--reground takes intervals >= 1, or 0 for none, got {args.reground}")
    spec = DriftSpec(args.game, args.levels[0], args.levels[1], args.trajectories, args.horizon, args.seed)
    cfg = SampleConfig(sampler=args.sampler, steps=args.steps, eta=args.eta, batch_size=args.batch_size,
                       seed=args.seed, precision=args.precision)
    measure_drift(models, spec, args.out, [k or None for k in args.reground], cfg, args.chunk, not args.no_lpips)
    print((Path(args.out) / "summary.md").read_text())
    print(f"drift.csv, drift.png, rollouts.gif in {Path(args.out).resolve()}")


def add_world_model_commands(sub) -> None:
    d = sub.add_parser("drift", help="long rollouts of world models against the real game under the same actions: "
                       "PSNR/SSIM/LPIPS against the horizon, with and without re-grounding")
    d.add_argument("--checkpoint", nargs="*", default=[], help="trained run folders (default: none)")
    d.add_argument("--base", default="assets/base-procgen", help="also the base model alone ('' for none)")
    d.add_argument("--game", default="coinrun", help="the Procgen game")
    d.add_argument("--levels", type=level_range, default="10000:11000", help="levels START:STOP the starts are "
                   "drawn from (STOP excluded)")
    d.add_argument("--trajectories", type=int, default=8, help="real rollouts (each from its own level draw)")
    d.add_argument("--horizon", type=int, default=100, help="steps after the conditioning frames")
    d.add_argument("--reground", type=int_list, default=[0], help="comma-separated intervals K: the conditioning "
                   "frames are reset to the real ones every K steps (0: never), e.g. 0,8,32")
    d.add_argument("--chunk", type=int, default=1, help="frames generated per model call (1: the conditioning "
                   "window slides frame by frame, as the env steps; the model's window, e.g. 8: fewer calls)")
    d.add_argument("--no-lpips", action="store_true", help="skip LPIPS (the slowest metric)")
    add_sampler_options(d, batch_size=32)
    add_precision_option(d, "auto")
    d.add_argument("--out", default="reports/drift", help="report folder")
    d.set_defaults(fn=cmd_drift)
