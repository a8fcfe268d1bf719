#!/usr/bin/env bash
# Issue 16, item 3: the CPU layout against the paper's layout at equal parameters (the shift-path
# AVID adapter of configs/coinrun/avid-shift.yaml, 3.65M with configs/unet/cpu-small.yaml, vs 3.53M with
# configs/unet/paper-layout-cpu-shift.yaml; both with that output path) and equal wall time
# on one thread, trained on Coinrun against the shipped base model and measured on validation levels
# (5000-5999): held-out denoising loss (256 windows) and sampled PSNR/SSIM/LPIPS/FVD (64 videos,
# DDIM 4), with the base model alone and copy-last-frame in the same table.
# Usage: bash benchmarks/layout_cpu_vs_paper.sh [MINUTES]   (default 12 minutes of training each)
# Needs data/coinrun/train-200x500 and data/coinrun/val-256 (`avid experiment scaling` makes both).
set -euo pipefail
MINUTES=${1:-12}
export OMP_NUM_THREADS=1
yaml_of() { python -c "import sys, yaml, json; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))" "$1"; }
for layout in cpu-small paper-layout-cpu-shift; do
  avid train --config configs/coinrun/avid-shift.yaml --set train.threads=1 out=runs/layout-shift/$layout \
    data.train=data/coinrun/train-200x500 train.max_steps=1000000 train.max_minutes=$MINUTES \
    train.lr_schedule=constant train.ckpt_every=100 "method.options.unet=$(yaml_of configs/unet/$layout.yaml)"
  avid loss --checkpoint runs/layout-shift/$layout --data data/coinrun/val-256 --limit 256
done
avid eval --runs runs/layout-shift/cpu-small runs/layout-shift/paper-layout-cpu-shift --with-base \
  --data data/coinrun/val-256 --limit 64 --ddim-steps 4 --classifier "" --out reports/layout-cpu-vs-paper-shift
