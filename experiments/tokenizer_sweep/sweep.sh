#!/bin/bash
# Tokenizer recipe sweep 1 (docs/experiments.md, "Tokenizer recipe"): 12 runs at once, made for one GPU.
# DATA=data/quickstart OUT=/tmp/out bash experiments/tokenizer_sweep/sweep.sh
source "$(dirname "$0")/common.sh" sweep 500 7.5
run base     $OLD --model-config $HERE/base.json
run base8k   $OLD --model-config $HERE/base.json --steps 8000
run qk       $OLD --model-config $HERE/qk.json
run qk8k     $OLD --model-config $HERE/qk.json --steps 8000
run mae09    $OLD --model-config $HERE/base.json --mae-p-max 0.9
run b32t1    $OLD --model-config $HERE/base.json --batch-size 32 --frames 1
run qk_b32t1 $OLD --model-config $HERE/qk.json --batch-size 32 --frames 1
run lr5e4    $OLD --model-config $HERE/base.json --lr 5e-4
run qk_nofn  $OLD --model-config $HERE/qk_nofn.json
run qk_lr3e3 $OLD --model-config $HERE/qk.json --lr 3e-3
run qk_te4   $OLD --model-config $HERE/qk_te4.json
run qk_d192  $OLD --model-config $HERE/qk_d192.json
finish
