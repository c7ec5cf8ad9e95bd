#!/bin/bash
# Tokenizer recipe sweep 3 (docs/experiments.md, "Tokenizer recipe"): 12 runs at once, made for one GPU.
# DATA=data/quickstart OUT=/tmp/out bash experiments/tokenizer_sweep/sweep3.sh
source "$(dirname "$0")/common.sh" sweep3 550 5.5
run bn_lr5e4       --model-config $HERE/bn.json $B32 --lr 5e-4
run bn_lr5e4_s1    --model-config $HERE/bn.json $B32 --lr 5e-4 --seed 1
run bn_te4         --model-config $HERE/bn_te4.json $B32
run bn_beta99      --model-config $HERE/bn.json $B32 --beta2 0.99
run bn_wd0         --model-config $HERE/bn.json $B32 --weight-decay 0
run bn_p4d64       --model-config $HERE/bn_p4d64.json $B32
run bn_p4d96       --model-config $HERE/bn_p4d96.json $B32
run bn_h8          --model-config $HERE/bn_h8.json $B32
run bn_d6m2        --model-config $HERE/bn_d6m2.json $B32
run bn_warm300     --model-config $HERE/bn.json $B32 --warmup-steps 300
run bn_p4d64_lr5e4 --model-config $HERE/bn_p4d64.json $B32 --lr 5e-4
run bn_clip0       --model-config $HERE/bn.json $B32 --grad-clip 0
finish
