#!/usr/bin/env bash
# InceptionV4 on eight devices (64 x 8): the TF 1.15 reference's run_8p.sh, same flags, run by
# classzoo under torchrun (recipe inception_v4:8p; docs/recipes.md).
#
#   bash scripts/inception_v4/run_8p.sh --data_dir=/data/imagenet-tfrecord
#   RANK_SIZE=4 bash scripts/inception_v4/run_8p.sh --data_dir=...      # another device count
#
# RANK_SIZE processes (default 8) are started by torchrun; every rank reads its own part of the
# data. lr 0.045 is used as given, as the reference did for 64 x 8. A flag given wins. Extra
# classzoo settings: CLASSZOO_EXTRA="--set ...".
set -euo pipefail
rank_size="${RANK_SIZE:-8}"
read -ra extra <<< "${CLASSZOO_EXTRA:-}"
exec "${PYTHON:-python}" -m torch.distributed.run --standalone --nproc-per-node "$rank_size" \
    -m classzoo.reference_flags inception_v4 \
    --rank_size="$rank_size" \
    --batch_size=64 \
    --lr=0.045 \
    --T_max=100 \
    --max_epochs=100 \
    --weight_decay=1e-5 \
    --momentum=0.9 \
    --label_smoothing=0.1 \
    --log_dir=./results/8p/model \
    --log_name=inception_v4.log \
    "$@" ${extra[@]+"${extra[@]}"}
