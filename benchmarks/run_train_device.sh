#!/usr/bin/env bash
# Training benchmarks on a 2-GPU H200 host through the device tool, in one call:
#   GPU 0: tokens/s + MFU of the trainer for the 340M shape (seq 4096) and the small config, both variants;
#   meanwhile, on a GPU each: sink emergence of the small config (train keeping every checkpoint, analyse each);
#   then both GPUs: the 340M shape on 2 processes (DDP, FSDP2) at the 1-GPU run's global batch.
# usage: PROBES="1:softmax:small-lr3e-3:train.lr=3e-3" bash benchmarks/run_train_device.sh [single] [scaling]
#   needs results/small/data (python -m softpick data --config configs/small.yaml), carried to the device.
set -o pipefail
OUT=${OUT:-benchmarks_out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
phases=${*:-single scaling}
nvidia-smi --query-gpu=index,name,driver_version,clocks.max.sm,memory.total --format=csv
bench() { timeout "$1" python3 benchmarks/bench_train.py --out "$OUT" "${@:2}"; }

probe() {  # $1 gpu, $2 variant, $3 run name, rest: --set overrides. Trains the small config keeping
           # every checkpoint (killed at its limit: what was kept is analysed), then the sink analysis.
  local gpu=$1 variant=$2 run=$3; shift 3
  local sets=(--set "run_name=$run" --set train.checkpoint_every=300 --set train.keep_checkpoints=100)
  for kv in "$@"; do sets+=(--set "$kv"); done
  mkdir -p "results/$run" && [ -e "results/$run/data" ] || cp -r results/small/data "results/$run/data"
  CUDA_VISIBLE_DEVICES=$gpu timeout 420 python3 -m softpick train --config configs/small.yaml --variant "$variant" "${sets[@]}"
  CUDA_VISIBLE_DEVICES=$gpu timeout 150 python3 benchmarks/sink_emergence.py --config configs/small.yaml \
      --variant "$variant" --device cuda --out "$OUT" "${sets[@]}"
}

# PROBES / PROBES_AFTER_SINGLE: "gpu:variant:run:key=value,key=value ..." (a probe per word, each with
# a run_name of its own); the first start at once, the second once the single-GPU benchmarks are done.
probe_pids=()
start_probes() {
  for spec in $1; do
    IFS=: read -r gpu variant run sets <<<"$spec"
    probe "$gpu" "$variant" "$run" ${sets//,/ } > "$OUT/probe_$run.log" 2>&1 &
    probe_pids+=($!)
  done
}
start_probes "${PROBES:-}"

# single: both shapes; single340: the 340M shape only. MICRO_340M x ACCUM_340M sequences per step.
case " $phases " in *" single"*)
  {
  for v in softpick softmax; do
    CUDA_VISIBLE_DEVICES=0 bench 240 --shape 340m --variant "$v" --micro "${MICRO_340M:-8}" --accum "${ACCUM_340M:-2}" \
        --steps 25 --tag "single-micro${MICRO_340M:-8}"
  done
  case " $phases " in *" single "*)
    for v in softpick softmax; do
      CUDA_VISIBLE_DEVICES=0 bench 150 --shape small --variant "$v" --steps 40 --tag single
    done ;;
  esac
  } > "$OUT/single.log" 2>&1 ;;
esac

start_probes "${PROBES_AFTER_SINGLE:-}"
for pid in "${probe_pids[@]}"; do wait "$pid"; done

case " $phases " in *" scaling "*)
  for p in ddp fsdp; do
    timeout 240 python3 -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/bench_train.py \
        --out "$OUT" --shape 340m --variant softpick --micro 8 --accum 1 --steps 25 --parallelism "$p" --tag scaling
  done > "$OUT/scaling.log" 2>&1 ;;
esac
ls -la "$OUT"
