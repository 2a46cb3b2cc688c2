#!/usr/bin/env bash
# ResNet-152 evaluation on one device: the TF 1.15 reference's test_1p.sh, same flags, run by classzoo.
#
#   bash scripts/resnet152/test_1p.sh --data_path=/data/imagenet-tfrecord/validation \
#       --model_path=./output/resnet152_1p/checkpoints/ckpt-40036.pt --image_num=50000
#
# --model_path: a classzoo checkpoint, or the slim resnet_v1_152.ckpt itself (V1 file or V2 prefix).
# Every image is counted once (the reference dropped image_num % batch_size); top-1 / top-5 go to
# <output_path>/eval.log and summary.json. Extra classzoo settings: CLASSZOO_EXTRA="--set ...".
set -euo pipefail
read -ra extra <<< "${CLASSZOO_EXTRA:-}"
exec "${PYTHON:-python}" -m classzoo.reference_flags resnet152 \
    --do_train=false \
    --batch_size=128 \
    --class_num=1000 \
    --output_path=./output/resnet152_test_1p \
    "$@" ${extra[@]+"${extra[@]}"}
