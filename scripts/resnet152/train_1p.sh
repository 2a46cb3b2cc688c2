#!/usr/bin/env bash
# ResNet-152 fine-tune on one device: the TF 1.15 reference's train_1p.sh, same flags, run by classzoo
# (recipe resnet152_slim_finetune; docs/references.md lists every flag and its default).
#
#   bash scripts/resnet152/train_1p.sh --data_path=/data/imagenet-tfrecord \
#       --model_path=/ckpt/resnet_v1_152.ckpt --output_path=./output/resnet152_1p
#
# The values below are the reference README's training command (batch 128, lr 1e-4, a checkpoint
# every 100 steps, 1,281,167 images, 1000 classes) with the 4 epochs of its reported run; a flag
# given wins. --data_path: a folder of TFRecord shards with any names (or slim's train-*/
# validation-*: then train-* is read); --image_num is checked against the records found.
# --model_path=None trains from random init. Extra classzoo settings go in CLASSZOO_EXTRA, e.g.
# CLASSZOO_EXTRA="--set data.num_workers=16 --set train.amp=bf16".
set -euo pipefail
read -ra extra <<< "${CLASSZOO_EXTRA:-}"
exec "${PYTHON:-python}" -m classzoo.references resnet152 \
    --do_train=True \
    --image_num=1281167 \
    --class_num=1000 \
    --batch_size=128 \
    --epoch=4 \
    --learning_rate=0.0001 \
    --save_checkpoints_steps=100 \
    --output_path=./output/resnet152_1p \
    "$@" ${extra[@]+"${extra[@]}"}
