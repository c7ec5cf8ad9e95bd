# Shared set-up of the sweep scripts: `source common.sh NAME EVAL_EVERY MAX_MINUTES`, then `run RUN [ARGS]`
# starts one tokenizer training in the background (fp32, as on the CPU), `finish` waits and summarises.
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/sweep_out}; mkdir -p "$OUT"
D=${DATA:-data/quickstart}; R=/tmp/$1; mkdir -p "$R"
HERE=experiments/tokenizer_sweep
COMMON="--data $D --precision fp32 --workers 1 --eval-every $2 --eval-sequences 48 --ckpt-every 100000 --no-tensorboard --log-every 100 --max-minutes ${MAXMIN:-$3}"
# The recipe defaults at the time of the sweeps, pinned (later flags on a run's line override them).
OLD="--batch-size 8 --frames 4 --steps 2000 --lr 1.5e-3 --warmup-steps 100 --mse-on all"
B32="--batch-size 32 --frames 1 --steps 2200 --lr 1.5e-3 --warmup-steps 100 --mse-on all"
run() { name=$1; shift; python3 -m dreamer4_torch.train tokenizer $COMMON --out "$R/$name" "$@" > "$R/$name.log" 2>&1 & }
finish() {
    wait
    for f in "$R"/*.log; do echo "== $f"; tail -n 3 "$f"; done > "$OUT/logs.txt"
    python3 $HERE/diag.py "$D" "$R"/* 2>&1 | tee "$OUT/$(basename "$R").txt"
}
