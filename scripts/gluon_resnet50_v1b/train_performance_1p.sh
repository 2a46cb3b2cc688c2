#!/usr/bin/env bash
# Gluon ResNet50_v1b, 1p, a short run reporting FPS (recipe variant performance: 500 steps, no
# evaluation): the PyTorch + timm reference's test/train_performance_1p.sh, same flags, run by
# classzoo (recipe gluon_resnet50_v1b; docs/recipes.md).
#
#   bash scripts/gluon_resnet50_v1b/train_performance_1p.sh --data_path=/data/imagenet [--device_id=1]
#
# --data_path holds train/<class>/<image> and val/<class>/<image>. One device, 256 images: lr 0.2
# (the recipe's 1.6 per 2048 images, scaled linearly; --lr X uses X as given). Ends with the seed
# table line Name | Acc@1 | FPS | Epochs | AMP_Type. A flag given wins. As in timm, the run folder
# is <--output>/<--experiment>: a new, time-stamped folder each run. Extra classzoo settings:
# CLASSZOO_EXTRA="--set ...". Every flag and its default: docs/references.md.
set -euo pipefail
read -ra extra <<< "${CLASSZOO_EXTRA:-}"
exec "${PYTHON:-python}" -m classzoo.references gluon_resnet50_v1b \
    --variant performance \
    --model gluon_resnet50_v1b \
    -b 256 \
    --amp \
    --sched cosine \
    --epochs 90 \
    --cooldown-epochs 0 \
    --log-interval 1 \
    --output ./output/gluon_resnet50_v1b/train_performance_1p \
    "$@" ${extra[@]+"${extra[@]}"}
