#!/usr/bin/env bash
# InceptionV4 evaluation: the TF 1.15 reference's test.sh (--mode=evaluate), same flags, run by
# classzoo (recipe inception_v4; docs/references.md).
#
#   bash scripts/inception_v4/test.sh --data_dir=/data/imagenet-tfrecord
#   bash scripts/inception_v4/test.sh --data_dir=... --eval_dir=./results/8p/model
#
# Every checkpoint of --eval_dir (a run folder, a folder of checkpoints or one file) is evaluated
# over every validation record once: one eval.log row each (step epoch top1 top5 loss
# checkpoint_time(UTC)). The reference wrote its eval log into the training folder; here the
# evaluation is its own run folder (--log_dir), so the training run's files stay as they were.
# A flag given wins. Extra classzoo settings: CLASSZOO_EXTRA="--set ...".
set -euo pipefail
read -ra extra <<< "${CLASSZOO_EXTRA:-}"
exec "${PYTHON:-python}" -m classzoo.references inception_v4 \
    --rank_size=1 \
    --mode=evaluate \
    --batch_size=128 \
    --eval_dir=./results/1p/0/model \
    --log_dir=./results/1p/0/eval \
    --log_name=eval_inceptionv4.log \
    "$@" ${extra[@]+"${extra[@]}"}
