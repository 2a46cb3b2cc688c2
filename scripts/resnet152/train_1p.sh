#!/usr/bin/env bash
# ResNet-152 fine-tune on one device: the TF 1.15 reference's train_1p.sh, same flags, run by classzoo
# (recipe resnet152_slim_finetune; docs/recipes.md).
#
#   bash scripts/resnet152/train_1p.sh --data_path=/data/imagenet-tfrecord \
#       --model_path=/ckpt/resnet_v1_152.ckpt --output_path=./output/resnet152_1p
#
# --data_path: a folder of TFRecord shards with any names (or slim's train-*/validation-*: then
# train-* is read). --model_path=None trains from random init. Defaults are the reference run's
# (batch 128, lr 1e-4, 4 epochs, 1000 classes, a checkpoint every 5000 steps); a flag given wins.
# --image_num=N checks the exact record count. Extra classzoo settings go in CLASSZOO_EXTRA, e.g.
# CLASSZOO_EXTRA="--set data.num_workers=16 --set train.amp=bf16".
set -euo pipefail
read -ra extra <<< "${CLASSZOO_EXTRA:-}"
exec "${PYTHON:-python}" -m classzoo.reference_flags resnet152 \
    --do_train=true \
    --batch_size=128 \
    --learning_rate=1e-4 \
    --epoch=4 \
    --class_num=1000 \
    --save_checkpoints_steps=5000 \
    --output_path=./output/resnet152_1p \
    "$@" ${extra[@]+"${extra[@]}"}
