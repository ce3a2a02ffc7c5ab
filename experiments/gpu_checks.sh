#!/usr/bin/env bash
# jaxlmm on a GPU, float64, in one run: the benchmarks without R (the large crossed designs
# first), then the reference, inference and batch tests. Each step has its own time limit, so
# that one slow or failing step leaves the others their figures; every step's output is also
# kept in $OUT (or ./gpu-out).
#
#     bash experiments/gpu_checks.sh
set -u
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 JAXLMM_NO_CACHE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a time limit, log to $out/NAME.log
  local name=$1 limit=$2
  shift 2
  echo "== $name"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log" | grep -v "^\s*$" | tail -n 40
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import jax, jaxlib; print('jax', jax.__version__, jaxlib.__version__, jax.devices())"
step smoke 120 python3 -c "
import time, jax, jaxlmm
start = time.perf_counter()
fit = jaxlmm.lmer('Reaction ~ Days + (Days | Subject)', jaxlmm.datasets.load('sleepstudy'))
print('sleepstudy on', jax.default_backend(), f'{time.perf_counter() - start:.2f}s',
      f'criterion {fit.objective:.6f}', fit.status, 'x64 left', jax.config.jax_enable_x64)"
step scale "${SCALE_LIMIT:-330}" python3 experiments/bench_scale.py --skip-r --large --cases ml10m ml1m
step core 100 python3 experiments/bench_core.py --skip-r
step batch 80 python3 experiments/bench_batch.py --skip-r
step tests 200 python3 -m pytest -q -p no:cacheprovider tests/test_reference.py tests/test_extra_reference.py tests/test_inference.py tests/test_batch.py
