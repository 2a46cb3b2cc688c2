#!/usr/bin/env bash
# InceptionV4 on one device: the TF 1.15 reference's run_1p.sh, same flags, run by classzoo
# (recipe inception_v4; docs/recipes.md).
#
#   bash scripts/inception_v4/run_1p.sh --data_dir=/data/imagenet-tfrecord
#   bash scripts/inception_v4/run_1p.sh --data_dir=... --mode=evaluate --eval_dir=./results/1p/0/model
#
# Defaults are the reference's: batch 128, RMSProp lr 0.045 cosine over T_max 100 epochs, weight
# decay 1e-5, momentum 0.9, label smoothing 0.1, 100 epochs; train.log is also reachable as
# <log_dir>/<log_name>. A flag given wins. Extra classzoo settings: CLASSZOO_EXTRA="--set ...".
set -euo pipefail
read -ra extra <<< "${CLASSZOO_EXTRA:-}"
exec "${PYTHON:-python}" -m classzoo.reference_flags inception_v4 \
    --rank_size=1 \
    --batch_size=128 \
    --lr=0.045 \
    --T_max=100 \
    --max_epochs=100 \
    --weight_decay=1e-5 \
    --momentum=0.9 \
    --label_smoothing=0.1 \
    --log_dir=./results/1p/0/model \
    --log_name=inception_v4.log \
    "$@" ${extra[@]+"${extra[@]}"}
