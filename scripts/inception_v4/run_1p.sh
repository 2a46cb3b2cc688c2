#!/usr/bin/env bash
# InceptionV4 on one device: the TF 1.15 reference's run_1p.sh, same flags, run by classzoo
# (recipe inception_v4; docs/references.md lists every flag and its default).
#
#   bash scripts/inception_v4/run_1p.sh --data_dir=/data/imagenet-tfrecord
#   bash scripts/inception_v4/run_1p.sh --data_dir=... --mode=train_and_evaluate   # evaluate each 5 epochs
#
# The values below are the reference's run_1p.sh: --mode=train (evaluate afterwards with test.sh),
# batch 128, RMSProp lr 0.045 cosine over T_max 100 epochs, 100 epochs, a log line every 100 steps;
# weight decay 1e-5, momentum 0.9 and label smoothing 0.1 come from the recipe (the reference's
# default configuration). train.log is also reachable as <log_dir>/<log_name>. A flag given wins.
# Extra classzoo settings: CLASSZOO_EXTRA="--set ...".
set -euo pipefail
read -ra extra <<< "${CLASSZOO_EXTRA:-}"
exec "${PYTHON:-python}" -m classzoo.references inception_v4 \
    --rank_size=1 \
    --mode=train \
    --max_epochs=100 \
    --T_max=100 \
    --batch_size=128 \
    --lr=0.045 \
    --display_every=100 \
    --log_dir=./results/1p/0/model \
    --log_name=inception_v4.log \
    "$@" ${extra[@]+"${extra[@]}"}
