#!/usr/bin/env bash
# The GPU figures of issue 10 in one run: < 8 minutes on one H100/H200-class GPU with 16 cores.
#
#   benchmarks/gpu_check.sh                 # on a machine with an NVIDIA GPU
#   benchmarks/gpu_check.sh --cpu-dry-run   # everything shrunk, on the CPU: checks this script (< 1 min)
#
# Prints, one line each:
#   1. ResNet-50 (batch 256, 224 px) and InceptionV4 (batch 128, 299 px) training images/s and MFU on
#      synthetic tensors, bf16 autocast + channels_last, eager and torch.compile (`classzoo bench`);
#   2. the same networks trained by `classzoo train` (the gluon_resnet50_v1b and inception_v4 recipes'
#      augmentation) from a generated JPEG ImageFolder through the real loader (torch path; DALI
#      when nvidia-dali and `data.loader: dali` are there), images/s as a share of (1), and the share
#      of step time the loop waited for data (metrics.jsonl `data_wait`).
# Needs: a Python with torch (CUDA build), torchvision, timm, simplejpeg, PyYAML. The checkout is
# installed with `pip install -e . --no-deps` when `import classzoo` does not find it; set
# WHEELS=/path/to/wheels to install missing dependencies from local wheels (no network needed).
# Each step has its own time limit and prints TIMEOUT / FAILED instead of stopping the script.
set -u -o pipefail

DRY=0
for arg in "$@"; do
  case "$arg" in
    --cpu-dry-run) DRY=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg (allowed: --cpu-dry-run)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
# No OpenMP variable is set here: each classzoo process chooses how its idle threads wait
# (engine/threads.py: PASSIVE beside loader workers, libgomp's spinning default without them);
# an explicit choice of the caller is kept by every process
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)
say() { printf '[%4ds] %s\n' "$(( $(date +%s) - START ))" "$*"; }
fail() { say "FAIL: $*"; exit 1; }

if [ "$DRY" = 1 ]; then
  # inception_v4's bench model is built for 299 px (its aux head); training sizes it by data.image_size
  DEVICE=cpu; AMP=off; RN_BATCH=2; IV_BATCH=2; RN_SIZE=64; IV_SIZE=139; IV_BENCH_SIZE=299; STEPS=1
  TRAIN_STEPS=2; LOG_EVERY=1; WORKERS=1; N_IMAGES=16; LIMIT=120
else
  DEVICE=cuda; AMP=bf16; RN_BATCH=256; IV_BATCH=128; RN_SIZE=224; IV_SIZE=299; IV_BENCH_SIZE=299
  STEPS=30
  TRAIN_STEPS=120; LOG_EVERY=20; WORKERS=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 )); N_IMAGES=4000
  LIMIT=180
fi

# ---- 1. what we run on ---------------------------------------------------------------------
$PY -c "import torch" 2>/dev/null || fail "$PY cannot import torch: install a CUDA build of PyTorch first"
if ! $PY -c "import torchvision, timm, simplejpeg, PIL, yaml" 2>/dev/null; then
  if [ -n "${WHEELS:-}" ]; then
    $PY -m pip install -q --no-index --find-links "$WHEELS" -e . || fail "pip install from WHEELS=$WHEELS failed"
  else
    $PY -m pip install -q -e . || fail "dependencies missing (torchvision, timm, simplejpeg, PyYAML) and pip could not install them; set WHEELS=/path/to/wheels"
  fi
fi
HERE=$(pwd)
if ! $PY -c "import classzoo, os, sys; sys.exit(0 if os.path.realpath(classzoo.__file__).startswith(os.path.realpath('$HERE')) else 1)" 2>/dev/null; then
  $PY -m pip install -q --no-deps --no-build-isolation -e . || fail "pip install -e . failed"
fi
CZ="$PY -m classzoo"
if [ "$DRY" = 0 ]; then
  $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || fail "torch.cuda.is_available() is False (no GPU, or a CPU-only torch build); --cpu-dry-run runs without one"
fi
$PY - <<'EOF'
import os, platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"machine: {gpu}; {os.cpu_count()} CPUs; torch {torch.__version__}; python {platform.python_version()}")
EOF

# run NAME LIMIT CMD...: CMD's output in $WORK/NAME.out; 0 when it succeeded
run() {
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "$WORK/$name.out" 2>&1
  local rc=$?
  if [ $rc = 124 ]; then say "$name: TIMEOUT after ${limit}s"; return 1; fi
  if [ $rc != 0 ]; then say "$name: FAILED (exit $rc): $(tail -n 3 "$WORK/$name.out" | tr '\n' ' ')"; return 1; fi
  return 0
}

# ---- 2. synthetic tensors: classzoo bench ---------------------------------------------------
COMPILE_FLAG=""
if $CZ bench --help 2>/dev/null | grep -q -- "--compile"; then COMPILE_FLAG="--compile"; fi
declare -A SYNTH
bench() {  # bench TAG MODEL BATCH SIZE [--compile]
  local tag=$1 model=$2 batch=$3 size=$4; shift 4
  if run "bench-$tag" "$LIMIT" $CZ bench --model "$model" --batch-size "$batch" --image-size "$size" \
      --mode train --amp "$AMP" --channels-last --steps "$STEPS" --device "$DEVICE" --json "$@"; then
    $PY - "$WORK/bench-$tag.out" "$tag" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
r = json.loads(text[text.index("{"):])
print(f"synthetic {sys.argv[2]}: {r['images_per_sec']:.1f} images/s, MFU {100 * r['mfu']:.1f} % "
      f"({r['tflops']:.1f} of {r['peak_matmul_tflops']:.1f} TFLOP/s), peak memory {r['peak_memory_mb']:.0f} MiB")
EOF
    SYNTH[$tag]=$($PY -c "import json,sys; t=open(sys.argv[1]).read(); print(json.loads(t[t.index('{'):])['images_per_sec'])" "$WORK/bench-$tag.out")
  fi
}
bench resnet50-eager resnet50 "$RN_BATCH" "$RN_SIZE"
bench inception_v4-eager inception_v4 "$IV_BATCH" "$IV_BENCH_SIZE"
if [ -z "$COMPILE_FLAG" ]; then
  say "synthetic compile: not run (classzoo bench has no --compile yet)"
elif [ "$DRY" = 1 ]; then
  say "synthetic compile: not run in --cpu-dry-run (minutes of Inductor compilation on a CPU)"
else
  bench resnet50-compile resnet50 "$RN_BATCH" "$RN_SIZE" --compile
  bench inception_v4-compile inception_v4 "$IV_BATCH" "$IV_BENCH_SIZE" --compile
fi

# ---- 3. the real loader: JPEG ImageFolder -> classzoo train -------------------------------
$PY - "$WORK/jpegs" "$N_IMAGES" <<'EOF' || fail "could not write the JPEG ImageFolder"
"""Photo-like JPEGs (smooth random colour fields plus grain, 500x375 and 375x500, quality 90:
~ImageNet's size and decode cost), 10 classes, train/ and val/."""
import sys
from multiprocessing import Pool
from pathlib import Path
import numpy as np
from PIL import Image

root, n = Path(sys.argv[1]), int(sys.argv[2])

def write(i):
    rng = np.random.default_rng(i)
    split = "val" if i % 10 == 9 else "train"
    size = (500, 375) if i % 3 else (375, 500)
    coarse = (rng.random((12, 16, 3)) * 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize(size, Image.BICUBIC), dtype=np.float32)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    folder = root / split / f"c{i % 10}"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)

with Pool() as pool:
    pool.map(write, range(n), chunksize=16)
print(f"wrote {n} JPEGs under {root}")
EOF

train_figures() {  # train_figures TAG RUN_DIR SYNTH_TAG
  $PY - "$2/metrics.jsonl" "$1" "${SYNTH[$3]:-0}" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get("kind") == "train"]
steady = rows[1:] or rows  # the first interval holds the workers' start and the warm-up
fps = sum(r["fps"] for r in steady) / len(steady)
wait = sum(r.get("data_wait", 0.0) for r in steady) / len(steady)
synth = float(sys.argv[3])
share = f", {100 * fps / synth:.0f} % of synthetic" if synth > 0 else ""
print(f"real loader {sys.argv[2]}: {fps:.1f} images/s{share}; waiting for data {100 * wait:.1f} % of step time")
EOF
}
train() {  # train TAG SYNTH_TAG RECIPE BATCH SIZE [--set ...]
  local tag=$1 synth=$2 recipe=$3 batch=$4 size=$5; shift 5
  if run "train-$tag" $(( LIMIT + 60 )) $CZ train --recipe "$recipe" --data-dir "$WORK/jpegs" \
      --output-dir "$WORK/run-$tag" --device "$DEVICE" --amp "$AMP" --batch-size "$batch" \
      --max-steps "$TRAIN_STEPS" --set train.mode=train --set train.log_every="$LOG_EVERY" \
      --set data.num_workers="$WORKERS" --set data.image_size="$size" --set train.keep_max=1 "$@"; then
    train_figures "$tag" "$WORK/run-$tag" "$synth"
  fi
}
train resnet50-torch resnet50-eager gluon_resnet50_v1b "$RN_BATCH" "$RN_SIZE"
train inception_v4-torch inception_v4-eager inception_v4 "$IV_BATCH" "$IV_SIZE" \
  --set data.source=imagefolder --set data.val_split=val
if $PY -c "import nvidia.dali" 2>/dev/null && $PY -c "import classzoo.data.dali_loader" 2>/dev/null; then
  train resnet50-dali resnet50-eager gluon_resnet50_v1b "$RN_BATCH" "$RN_SIZE" --set data.loader=dali
else
  say "real loader DALI: not run (nvidia-dali or classzoo.data.dali_loader not installed)"
fi

say "gpu_check.sh: done in $(( $(date +%s) - START )) s"
