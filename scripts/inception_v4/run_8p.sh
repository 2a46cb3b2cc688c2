#!/usr/bin/env bash
# InceptionV4 on eight devices (64 x 8): the TF 1.15 reference's run_8p.sh, same flags, run by
# classzoo under torchrun (recipe inception_v4:8p; docs/references.md).
#
#   bash scripts/inception_v4/run_8p.sh --data_dir=/data/imagenet-tfrecord
#   RANK_SIZE=4 bash scripts/inception_v4/run_8p.sh --data_dir=...      # another device count
#
# RANK_SIZE processes (default 8) are started by torchrun; every rank reads its own part of the
# data. The values below are the reference's run_8p.sh: --mode=train, 64 per device, lr 0.045 used
# as given (as the reference did for 64 x 8). A flag given wins. Extra classzoo settings:
# CLASSZOO_EXTRA="--set ...".
set -euo pipefail
rank_size="${RANK_SIZE:-8}"
read -ra extra <<< "${CLASSZOO_EXTRA:-}"
exec "${PYTHON:-python}" -m torch.distributed.run --standalone --nproc-per-node "$rank_size" \
    -m classzoo.references inception_v4 \
    --rank_size="$rank_size" \
    --mode=train \
    --max_epochs=100 \
    --T_max=100 \
    --batch_size=64 \
    --lr=0.045 \
    --display_every=100 \
    --log_dir=./results/8p/model \
    --log_name=inception_v4.log \
    "$@" ${extra[@]+"${extra[@]}"}
