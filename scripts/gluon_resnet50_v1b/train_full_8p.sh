#!/usr/bin/env bash
# Gluon ResNet50_v1b, 8p, the accuracy run: 90 epochs, evaluated every epoch: the PyTorch + timm
# reference's test/train_full_8p.sh, same flags, run by classzoo (recipe gluon_resnet50_v1b;
# docs/recipes.md).
#
#   RANK_SIZE=8 bash scripts/gluon_resnet50_v1b/train_full_8p.sh --data_path=/data/imagenet
#
# --data_path holds train/<class>/<image> and val/<class>/<image>. RANK_SIZE processes (default 8) x
# 256 images under torchrun: lr 1.6 at 8 x 256 (the recipe's 1.6 per 2048 images, scaled linearly to
# RANK_SIZE; --lr X uses X as given). Ends with the seed table line Name | Acc@1 | FPS | Epochs |
# AMP_Type. A flag given wins. As in timm, the run folder is <--output>/<--experiment>: a new, time-
# stamped folder each run. Extra classzoo settings: CLASSZOO_EXTRA="--set ...". Every flag and its
# default: docs/references.md.
set -euo pipefail
rank_size="${RANK_SIZE:-8}"
# timm names the run folder from rank 0's clock; here it is read once, for every rank
experiment="$(date +%Y%m%d-%H%M%S)-gluon_resnet50_v1b"
read -ra extra <<< "${CLASSZOO_EXTRA:-}"
exec "${PYTHON:-python}" -m torch.distributed.run --standalone --nproc-per-node "$rank_size" \
    -m classzoo.references gluon_resnet50_v1b \
    --model gluon_resnet50_v1b \
    -b 256 \
    --apex-amp \
    --sched cosine \
    --epochs 90 \
    --cooldown-epochs 0 \
    --log-interval 1 \
    --use-multi-epochs-loader \
    --experiment "$experiment" \
    --output ./output/gluon_resnet50_v1b/train_full_8p \
    "$@" ${extra[@]+"${extra[@]}"}
