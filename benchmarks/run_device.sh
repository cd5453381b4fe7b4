#!/usr/bin/env bash
# Device runner (the H200 through the device tool): installs the carried fla wheel, runs the
# Triton softpick test suite on the GPU, optionally the config sweep, then the benchmark.
# usage: bash benchmarks/run_device.sh [tune] [bench] [tests]  (tune's winners apply to later steps)
# was:  bash benchmarks/run_device.sh [tests] [tune] [bench]   (each step optional; default: all but tune)
set -o pipefail
OUT=${OUT:-results/bench}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
steps=${*:-tests bench}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.used --format=csv | tee "$OUT/attention_gpu.txt"
for s in $steps; do
  case $s in
    tests) python3 -m pytest tests/test_triton_softpick.py -q -n 16 -p no:cacheprovider 2>&1 | tee "$OUT/attention_tests.log" ;;
    tune) python3 benchmarks/tune_attention.py --emit-env /tmp/softpick_tuned.env 2>&1 | tee "$OUT/attention_tune.log"
          # the sweep's winners apply to the steps after it (per kernel and head dim)
          [ -f /tmp/softpick_tuned.env ] && cat /tmp/softpick_tuned.env && . /tmp/softpick_tuned.env ;;
    bench) python3 benchmarks/bench_attention.py --out "$OUT" 2>&1 | tee "$OUT/attention_bench.log" ;;
  esac
done
