#!/bin/bash
# Tokenizer recipe sweep 2 (docs/experiments.md, "Tokenizer recipe"): 12 runs at once, made for one GPU.
# DATA=data/quickstart OUT=/tmp/out bash experiments/tokenizer_sweep/sweep2.sh
source "$(dirname "$0")/common.sh" sweep2 550 6
run bn_b8t4        --model-config $HERE/bn.json $OLD
run bn_b32         --model-config $HERE/bn.json $B32
run bn_b32_s1      --model-config $HERE/bn.json $B32 --seed 1
run bn_b32_lr1e3   --model-config $HERE/bn.json $B32 --lr 1e-3
run bn_b32_lr3e3   --model-config $HERE/bn.json $B32 --lr 3e-3
run bn_b32_qk      --model-config $HERE/bn_qk.json $B32
run bn_b32_nofn    --model-config $HERE/bn_nofn.json $B32
run bn_b32_mae05   --model-config $HERE/bn.json $B32 --mae-p-max 0.5
run b32_s1         --model-config $HERE/base.json $B32 --seed 1
run b32_lr5e4      --model-config $HERE/base.json $B32 --lr 5e-4
run bn_b16_4400    --model-config $HERE/bn.json $B32 --batch-size 16 --steps 4400 --lr 1e-3
run bn_b32_8k      --model-config $HERE/bn.json $B32 --steps 8000
finish
