#!/bin/bash
# The dynamics recipe's spread over training seeds, and what 4x the steps or 10x the frames give it:
# eight dynamics trainings at once on one GPU, fp32 (as on the CPU), on one frozen tokenizer
# (docs/experiments.md, "Dynamics recipe").
#
#   DATA=data/quickstart TOKENIZER=runs/quickstart/tokenizer/checkpoints/latest OUT=/tmp/out \
#       bash experiments/dynamics_sweep_gpu.sh
#
# DATA_TAR=FILE.tar.xz extracts the data set from an archive first (experiments/gpu_common.sh; one
# directory named as DATA's last part). MAXMIN caps each run's minutes;
# the runs stop with a checkpoint and a final evaluation. SCALE=N divides every step count (a dry run on a CPU: DEV=cpu).
set -u
SCALE=${SCALE:-1}; MAXMIN=${MAXMIN:-6.5}
DATA=${DATA:-data/quickstart}; TOKENIZER=${TOKENIZER:-runs/quickstart/tokenizer/checkpoints/latest}
W=${W:-/tmp/dynamics_sweep}; OUT=${OUT:-/tmp/dynamics_sweep_out}
source experiments/gpu_common.sh
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
 $PY -c "import torch; print(torch.__version__, torch.cuda.is_available())") | tee "$OUT/env.txt"
common="--preset dmc64 --data $DATA --tokenizer $TOKENIZER --device $DEV --precision fp32 --workers 1
        --eval-sequences 48 --no-tensorboard --ckpt-every 100000 --keep-checkpoints 1 --max-minutes $MAXMIN
        --log-every 50"
s() { echo $(( $1 / SCALE )); }
run() {
    name=$1; shift
    $PY -m dreamer4_torch.train dynamics --out "$W/runs/$name" $common "$@" > "$W/$name.log" 2>&1
    echo "$name rc=$? $(elapsed)" | tee -a "$OUT/progress.txt"
}
# The first run encodes the data set's latents; the others start from a copy of that cache.
run s0 --seed 0 --steps "$(s 1150)" --eval-every "$(s 250)" &
first=$!
while [ ! -f "$W/runs/s0/latents/meta.json" ] && kill -0 $first 2>/dev/null; do sleep 2; done
echo "latents ready $(elapsed)" | tee -a "$OUT/progress.txt"
for n in s1 s2 s3 lr2 f32 long4 big10; do mkdir -p "$W/runs/$n" && cp -r "$W/runs/s0/latents" "$W/runs/$n/"; done
run s1 --seed 1 --steps "$(s 1150)" --eval-every "$(s 250)" &
run s2 --seed 2 --steps "$(s 1150)" --eval-every "$(s 250)" &
run s3 --seed 3 --steps "$(s 1150)" --eval-every "$(s 250)" &
run lr2 --lr 2e-3 --steps "$(s 1150)" --eval-every "$(s 250)" &
run f32 --batch-size 8 --frames 32 --steps "$(s 1150)" --eval-every "$(s 250)" &
run long4 --steps "$(s 4600)" --eval-every "$(s 575)" &
run big10 --batch-size 64 --steps "$(s 2875)" --eval-every "$(s 575)" &
wait
echo "all done $(elapsed)" | tee -a "$OUT/progress.txt"
# What comes back: metrics, options, logs, curves, each run's last rollout grid, three final checkpoints.
(cd "$W" && tar -czf "$OUT/metrics.tgz" runs/*/metrics.jsonl runs/*/options.json ./*.log runs/*/curves.png \
    $(for n in runs/*; do ls "$n"/images/*.png 2>/dev/null | tail -1; done) \
    $(for n in s0 long4 big10; do ls runs/$n/images/*.gif 2>/dev/null | tail -1; done)
 for n in s0 long4 big10; do
     [ -d runs/$n/checkpoints/latest ] && tar -chf "$OUT/ckpt_$n.tar" -C runs/$n/checkpoints \
         latest/model.safetensors latest/config.json latest/options.json
 done)
for n in s0 s1 s2 s3 lr2 f32 long4 big10; do
    echo "== $n"
    $PY - "$W/runs/$n/metrics.jsonl" <<'EOF' 2>/dev/null | tail -14
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    if "eval" in d:
        e = d["eval"]
        print(d["step"], " ".join(f"{k} {e[k]:+.2f}" for k in ("gain_h1", "gain_h4", "gain_h8", "gain_h16") if k in e))
    elif d["step"] % 500 == 0:
        print(d["step"], "steps/s", round(d["train"]["steps_per_s"], 2), "flow_mse", round(d["train"]["flow_mse"], 4))
EOF
    tail -n 1 "$W/$n.log"
done
