#!/bin/bash
# A data set's whole quickstart training on one GPU, fp32 (as on the CPU): two tokenizers at once (the
# recipe's AdamW and --optimizer muon), then the dynamics recipe with seeds 0 and 1 on each, four at
# once (docs/experiments.md, "Dynamics recipe").
#
#   DATA=data/quickstart OUT=/tmp/out TOKMIN=2.0 DYNMIN=2.0 bash experiments/tokenizer_then_dynamics_gpu.sh
#
# DATA_TAR=FILE.tar.xz extracts the data set from an archive first (experiments/gpu_common.sh; one
# directory named as DATA's last part). TOKMIN / DYNMIN cap each training's minutes (a capped run stops with a checkpoint
# and a final evaluation).
set -u
TOKMIN=${TOKMIN:-2.0}; DYNMIN=${DYNMIN:-2.0}
DATA=${DATA:-data/quickstart}; W=${W:-/tmp/tokdyn}; OUT=${OUT:-/tmp/tokdyn_out}
source experiments/gpu_common.sh
echo "data $(elapsed)" | tee -a "$OUT/progress.txt"
common="--preset dmc64 --data $DATA --device $DEV --precision fp32 --workers 1 --no-tensorboard
        --ckpt-every 100000 --keep-checkpoints 1 --log-every 100 --eval-sequences 48"
for o in adamw muon; do
    $PY -m dreamer4_torch.train tokenizer --out "$W/runs/tok_$o" $common --optimizer $o --eval-every 500 \
        --max-minutes "$TOKMIN" > "$W/tok_$o.log" 2>&1 &
done
wait
echo "tokenizers $(elapsed)" | tee -a "$OUT/progress.txt"
for o in adamw muon; do grep "eval @" "$W/tok_$o.log" | tail -n 2; done | tee -a "$OUT/progress.txt"
for o in adamw muon; do
    for seed in 0 1; do
        $PY -m dreamer4_torch.train dynamics --out "$W/runs/dyn_${o}_$seed" $common \
            --tokenizer "$W/runs/tok_$o/checkpoints/latest" --seed $seed --eval-every 250 \
            --max-minutes "$DYNMIN" > "$W/dyn_${o}_$seed.log" 2>&1 &
    done
done
wait
echo "dynamics $(elapsed)" | tee -a "$OUT/progress.txt"
for f in "$W"/dyn_*.log; do
    echo "== $f"
    grep "eval @" "$f" | sed 's/.*eval @ \([0-9]*\):.*gain_h1 \([-0-9.]*\).*gain_h4 \([-0-9.]*\).*gain_h8 \([-0-9.]*\).*/\1 h1 \2 h4 \3 h8 \4/'
    grep "tokenizer_h4" "$f" | tail -n 1 | grep -o "floor_h4 [0-9.]*, tokenizer_h4 [0-9.]*, copy_latent_h4 [0-9.]*"
    tail -n 1 "$f"
done | tee "$OUT/summary.txt"
(cd "$W" && tar -czf "$OUT/logs.tgz" ./*.log runs/*/metrics.jsonl runs/*/options.json)
