"""The ``avid`` commands of the world model used as an environment: ``drift`` (long rollouts
against the real game), ``outcome train`` (reward and termination models), ``play`` (a web page). ``cli.py`` adds them with ``add_world_model_commands``."""

from __future__ import annotations

from avid.cli_options import Renamed, add_precision_option, add_sampler_options, int_list, level_range


def _world_models(args, base_key: str | None = None) -> dict:
    """The models ``--checkpoint`` and ``--base`` name, by folder name (the base under ``base_key``)."""
    from pathlib import Path

    from avid.train import load_method

    models = {base_key or Path(args.base).name: load_method(args.base, args.precision)[0]} if args.base else {}
    for folder in args.checkpoint:
        models[Path(folder).name] = load_method(folder, args.precision)[0]
    return models


def _add_world_models(p, levels: str, levels_help: str) -> None:
    """``--checkpoint``, ``--base``, ``--game`` and ``--levels`` of the commands that put world models
    against the real game."""
    p.add_argument("--checkpoint", nargs="*", default=[], help="trained run folders (default: none)")
    p.add_argument("--base", default="assets/base-procgen", help="also the base model alone ('' for none)")
    p.add_argument("--game", default="coinrun", help="the Procgen game")
    p.add_argument("--levels", type=level_range, default=levels, help=levels_help)


def cmd_drift(args) -> None:
    from pathlib import Path

    from avid.config import SampleConfig
    from avid.pipelines.drift import DriftSpec, measure_drift

    models = _world_models(args, "base")
    if not models:
        raise ValueError("give at least one model: --checkpoint RUN and/or --base BASE_FOLDER")
    if any(k < 0 for k in args.reground):
        raise ValueError(f"--reground takes intervals >= 1, or 0 for none, got {args.reground}")
    spec = DriftSpec(args.game, args.levels[0], args.levels[1], args.trajectories, args.horizon, args.seed)
    cfg = SampleConfig(sampler=args.sampler, steps=args.ddim_steps, eta=args.eta, batch_size=args.batch_size,
                       seed=args.seed, precision=args.precision)
    measure_drift(models, spec, args.out, [k or None for k in args.reground], cfg, args.chunk, not args.no_lpips)
    print((Path(args.out) / "summary.md").read_text())
    print(f"drift.csv, drift.png, rollouts.gif in {Path(args.out).resolve()}")


def cmd_outcome_train(args) -> None:
    import json
    import sys

    from avid.pipelines.outcome_train import make_outcome_model, outcome_run_config

    cfg = outcome_run_config(args.config, args.set, {
        "game": args.game, "data": args.data, "run": args.run, "out": args.out, "train.max_steps": args.train_steps,
        "train.seed": args.seed, "train.threads": args.threads, "train.precision": args.precision,
        "imagined_by": args.imagined_by})
    info = make_outcome_model(cfg, command="avid " + " ".join(sys.argv[1:]))
    print(json.dumps(info["scores"], indent=1))
    print(f"reward/termination model -> {cfg.out} (use it with WorldModelEnv(reward_model=...))")


def cmd_outcome_check(args) -> None:
    from pathlib import Path

    from avid.config import SampleConfig
    from avid.envs.outcome import load_outcome
    from avid.pipelines.imagined_events import EventCheckSpec, check_events

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    models = _world_models(args)
    spec = EventCheckSpec(args.game, args.levels[0], args.levels[1], args.events, args.negatives,
                          tuple(sorted(set(args.horizons))), args.chunk, args.seed)
    cfg = SampleConfig(sampler=args.sampler, steps=args.ddim_steps, eta=args.eta, batch_size=args.batch_size,
                       seed=args.seed, precision=args.precision)
    check_events(models, load_outcome(args.reward_model), spec, args.out, cfg)
    print((Path(args.out) / "events.md").read_text())
    print(f"events.json in {Path(args.out).resolve()}")


def cmd_play(args) -> None:
    from pathlib import Path

    from avid.checkpoint import resolve
    from avid.config import SampleConfig
    from avid.envs import WorldModelEnv
    from avid.pipelines.play import serve_play

    reward = args.reward_model if args.reward_model and (resolve(args.reward_model) / "config.yaml").exists() else None
    if args.reward_model and reward is None:
        raise ValueError(f"no reward/termination model at {args.reward_model} (make one with `avid outcome train`, "
                         "or pass --reward-model '' for none)")
    env = WorldModelEnv(args.checkpoint, args.starts, reward_model=reward, sampler=args.sampler, steps=args.ddim_steps,
                        precision=args.precision)
    sampler = SampleConfig(sampler=args.sampler, steps=args.ddim_steps).describe()
    name = f"{Path(args.checkpoint).name} ({env.method.name}, {sampler}{', reward model' if reward else ''})"
    serve_play(env, name, args.port, args.seed)


def cmd_env_speed(args) -> None:
    import platform

    import torch

    from avid.pipelines.env_speed import env_speed

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = env_speed(args.checkpoint, args.starts, args.num_envs, args.ddim_steps, args.repeats, args.chunk, args.precision)
    print(f"{args.checkpoint}; {torch.get_num_threads()} torch thread(s), CPU {platform.processor() or platform.machine()} "
          f"({torch.backends.cpu.get_cpu_capability()}); median of {args.repeats} steps")
    print("| envs | DDIM steps | frames per env step | s per env step | env steps/s | frames/s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['num_envs']} | {r['steps']} | {r['frames_per_step']} | {r['seconds_per_step']} | "
              f"{r['env_steps_per_s']} | {r['frames_per_s']} |")


def cmd_rl(args) -> None:
    import json

    from avid.pipelines.rl import PPOConfig, run_rl, run_rl_comparison

    if bool(args.checkpoint) == bool(args.real):
        raise ValueError("give --checkpoint WORLD_MODEL (train in imagination) or --real (train in the real game)")
    if args.compare and not args.checkpoint:
        raise ValueError("--compare compares a world model with its base and the real game: give --checkpoint")
    if (args.base or args.real_frames) and not args.compare:
        raise ValueError("--base and --real-frames set arms of --compare")
    reward = args.reward_model or None
    ppo = PPOConfig(timesteps=args.timesteps, seed=args.seed)
    common = (args.num_envs, args.horizon, args.ddim_steps, args.train_levels, args.eval_episodes, args.eval_levels)
    if args.compare:
        out = run_rl_comparison(args.out, args.checkpoint, args.starts, reward, ppo, *common, base=args.base,
                                real_frames=args.real_frames, near_end=args.near_end)
        print(out["table"] + f"comparison.md, comparison.json and each arm's policy.zip in {args.out}")
        return
    if args.near_end and args.real:
        raise ValueError("--near-end sets where imagined episodes start: it needs --checkpoint, not --real")
    results = run_rl(args.out, None if args.real else args.checkpoint, args.starts, reward, ppo, *common,
                     near_end=args.near_end)
    print(json.dumps(results, indent=1))


def add_world_model_commands(sub) -> None:
    r = sub.add_parser("rl", help="PPO inside a world model (or the real game), judged in the real game on unseen levels")
    r.add_argument("--checkpoint", default=None, help="the world model: a trained run or base model folder (default: none; --real trains in the real game)")
    r.add_argument("--real", action="store_true", help="instead: train in the real game on --train-levels")
    r.add_argument("--starts", default="procgen:coinrun:0-199", help="real first frames of imagined episodes")
    r.add_argument("--reward-model", default="assets/outcome-coinrun", help="reward/termination model ('' none)")
    r.add_argument("--timesteps", type=int, default=20000, help="PPO environment steps (all envs together)")
    r.add_argument("--num-envs", type=int, default=8, help="parallel episodes")
    r.add_argument("--horizon", type=int, default=200, help="imagined episodes are truncated after this many steps")
    r.add_argument("--near-end", type=int, default=0, help="with a dataset folder as --starts: half the imagined "
                   "episodes start within N frames of where a real episode of it ended (0: uniformly)")
    r.add_argument("--steps", action=Renamed, new="--ddim-steps (DDIM sampling steps)")
    r.add_argument("--ddim-steps", type=int, default=4, help="DDIM steps per imagined frame")
    r.add_argument("--train-levels", type=level_range, default="0:200", help="with --real: levels START:STOP")
    r.add_argument("--eval-levels", type=level_range, default="100000:200000", help="unseen real levels START:STOP")
    r.add_argument("--eval-episodes", type=int, default=500, help="real episodes for the agent and the random policy")
    r.add_argument("--seed", type=int, default=0, help="PPO's seed and the evaluation games'")
    r.add_argument("--compare", action="store_true", help="also train the same agent in the world model's base "
                   "alone and in the real game on as many real frames as the world model learnt from: one table "
                   "(OUT/comparison.md; OUT/world, OUT/base-alone, OUT/real; a finished arm is reused)")
    r.add_argument("--base", default=None, help="with --compare: the base model arm (default: the run's own base)")
    r.add_argument("--real-frames", type=int, default=None, help="with --compare: real frames of the real-game "
                   "arm (default: the frames of the world model's training data)")
    r.add_argument("--out", required=True, help="folder for policy.zip and results.json")
    r.set_defaults(fn=cmd_rl)

    sp = sub.add_parser("env-speed", help="world-model env steps per second, batched, per number of denoising steps")
    sp.add_argument("--checkpoint", required=True, help="a trained run folder, or a base model folder")
    sp.add_argument("--starts", default="data/coinrun-val", help="real first frames (see avid play --starts)")
    sp.add_argument("--num-envs", type=int_list, default=[1, 8, 32], help="comma-separated batch sizes")
    sp.add_argument("--steps", action=Renamed, new="--ddim-steps (DDIM sampling steps)")
    sp.add_argument("--ddim-steps", type=int_list, default=[1, 2, 4, 8, 20], help="comma-separated DDIM step counts")
    sp.add_argument("--repeats", type=int, default=5, help="timed env steps per setting (median)")
    sp.add_argument("--chunk", action="store_true", help="step in chunks of the model's window")
    sp.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    add_precision_option(sp, "auto")
    sp.set_defaults(fn=cmd_env_speed)

    p = sub.add_parser("play", help="play a world model from a local web page (127.0.0.1): keys -> actions")
    p.add_argument("--checkpoint", required=True, help="a trained run folder, or a base model folder (the base alone)")
    p.add_argument("--starts", default="procgen:coinrun:10000-10999", help="real first frames: a dataset folder, "
                   "procgen:GAME or procgen:GAME:START-STOP (levels)")
    p.add_argument("--reward-model", default="assets/outcome-coinrun", help="reward/termination model folder "
                   "('' for none: reward 0, episodes never end)")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim", help="see avid sample")
    p.add_argument("--steps", action=Renamed, new="--ddim-steps (DDIM sampling steps)")
    p.add_argument("--ddim-steps", type=int, default=4, help="DDIM steps per frame")
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode's start and noise")
    add_precision_option(p, "auto")
    p.set_defaults(fn=cmd_play)

    o = sub.add_parser("outcome", help="reward and termination models of a game, trained on real frames")
    osub = o.add_subparsers(dest="outcome_cmd", required=True)
    ot = osub.add_parser("train", help="collect real steps (train/val/test levels), train, state held-out "
                         "precision and recall")
    ot.add_argument("--config", default=None, help="outcome YAML (keys of avid.pipelines.outcome_train."
                    "OutcomeRunConfig) (default: none, the built-in defaults)")
    ot.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override config values, e.g. train.lr=3e-4 val_split.levels=200 (default: none)")
    ot.add_argument("--game", default=None, help="the Procgen game (default: coinrun)")
    ot.add_argument("--data", default=None, help="where the collected steps go, reused (default: data/outcomes-coinrun)")
    ot.add_argument("--run", default=None, help="the training run's folder; rerunning resumes it "
                    "(default: runs/outcome-coinrun)")
    ot.add_argument("--out", default=None, help="the model folder to write (default: assets/outcome-coinrun)")
    ot.add_argument("--imagined-by", default=None, help="a world model (run or base folder): also learn from the "
                    "contexts it imagines before each real step, labelled with the real outcome, and choose the "
                    "thresholds on imagined validation steps (default: real frames only)")
    ot.add_argument("--train-steps", type=int, default=None, help="optimiser steps (default: 2000, batch 64, half events)")
    ot.add_argument("--seed", type=int, default=None, help="initialisation and batch order (default: 0)")
    ot.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    add_precision_option(ot)
    ot.set_defaults(fn=cmd_outcome_train)
    oc = osub.add_parser("check", help="do world models still show the events before real ones? the outcome "
                         "model's recall on frames each imagines before real rewards and ends")
    _add_world_models(oc, "52000:52500", "levels START:STOP of the real play (default: the outcome model's test "
                      "levels)")
    oc.add_argument("--reward-model", default="assets/outcome-coinrun", help="the reward/termination model")
    oc.add_argument("--events", type=int, default=256, help="real steps that gave a reward or ended an episode")
    oc.add_argument("--negatives", type=int, default=512, help="real steps with neither")
    oc.add_argument("--horizons", type=int_list, default=[1, 2, 4, 8], help="comma-separated steps h: the last "
                    "h - 1 frames before the event are imagined (1: real frames)")
    oc.add_argument("--chunk", type=int, default=1, help="frames generated per model call (1: as the env steps)")
    oc.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    add_sampler_options(oc, batch_size=64)
    add_precision_option(oc, "auto")
    oc.add_argument("--out", default="reports/imagined-events", help="report folder")
    oc.set_defaults(fn=cmd_outcome_check)

    d = sub.add_parser("drift", help="long rollouts of world models against the real game under the same actions: "
                       "PSNR/SSIM/LPIPS against the horizon, with and without re-grounding")
    _add_world_models(d, "10000:11000", "levels START:STOP the starts are drawn from (STOP excluded)")
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
