#!/usr/bin/env bash
# ResNet-152 evaluation on one device: the TF 1.15 reference's test_1p.sh, same flags, run by classzoo.
#
#   bash scripts/resnet152/test_1p.sh --model_path=./output/resnet152_1p/checkpoints/ckpt-000040040.pt \
#       --data_path=/data/imagenet-tfrecord/validation --image_num=50000 --class_num=1000 --batch_size=100
#
# As in the reference, there is no --do_train: its default (False) evaluates --model_path, here with
# `classzoo eval`: every record once (the reference dropped image_num % batch_size), nothing
# written, "top1 ... top5 ... loss ... count N" printed. --model_path: a classzoo checkpoint, or the
# slim resnet_v1_152.ckpt itself (V1 file or V2 prefix). --image_num is checked against the records
# found. The values below are the reference README's eval command; a flag given wins. Extra
# classzoo settings: CLASSZOO_EXTRA="--set ...".
set -euo pipefail
read -ra extra <<< "${CLASSZOO_EXTRA:-}"
exec "${PYTHON:-python}" -m classzoo.references resnet152 \
    --image_num=50000 \
    --class_num=1000 \
    --batch_size=100 \
    "$@" ${extra[@]+"${extra[@]}"}
