# Shared set-up of the GPU sweep scripts (dynamics_sweep_gpu.sh, tokenizer_then_dynamics_gpu.sh):
# `source experiments/gpu_common.sh` after setting DATA, W and OUT. Creates $W/runs and $OUT, exports the
# environment of the runs, starts the clock for `elapsed`, and, with DATA_TAR=FILE.tar.xz, extracts the
# data set from that archive (holding one directory named as DATA's last part) unless DATA exists.
set -u
DEV=${DEV:-cuda}; PY=${PY:-python3}
mkdir -p "$W/runs" "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 PYTHONPATH=$PWD
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 ))s; }
if [ -n "${DATA_TAR:-}" ] && [ ! -d "$DATA" ]; then
    mkdir -p "$(dirname "$DATA")"
    $PY -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$DATA_TAR" "$(dirname "$DATA")"
fi
