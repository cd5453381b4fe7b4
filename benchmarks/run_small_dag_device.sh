#!/usr/bin/env bash
# The small DAG (configs/small.yaml) on one H100 / H200 through the device tool, in detached steps:
#   bash benchmarks/run_small_dag_device.sh install   # the carried wheels (.whl/, .whlbnb/) -> /tmp/site
#   bash benchmarks/run_small_dag_device.sh start     # snakemake, detached (setsid): outlives the call
#   bash benchmarks/run_small_dag_device.sh status    # progress: finished jobs, the log's tail
#   bash benchmarks/run_small_dag_device.sh collect   # results/<run> (models left out), figures, logs -> $OUT
# Another run: CONFIGS="configs/small.yaml configs/small-seed2.yaml" RUN=small-seed2 UNTIL="analyze evaluate quantize"
# (UNTIL: snakemake --until, the rules to stop at; empty = the whole DAG).
# A run whose files git tracks (results/small, results/small-seed2): the device tool copies the tracked files again
# on every call, which replaces a training log under a running training (its export then holds the old records;
# docs/results.md, "Seed 2 again"). Retrain such a run as a copy of its config under another run_name.
# The DAG is the user's command with the device's cores: both trainings share the GPU (resources gpu=2;
# the train rule takes gpu=1 each), every other job runs beside them on the 16 cores; gpu_mem_gb (the card's
# memory less 10 %) caps the evaluate / quantize jobs at what the GPU holds (each declares its peak,
# common.smk eval_gpu_mem_gb).
set -o pipefail
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
CONFIGS=${CONFIGS:-configs/small.yaml}
RUN=${RUN:-small}
DAG_LOG=/tmp/${RUN}_dag.log
GPU_MEM_GB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1 | awk '{print int($1 * 0.9 / 1024)}')
case ${1:-status} in
  install)
    for d in .whl .whlbnb; do
      if ls $d/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $d/*.whl || exit 1
      fi
    done
    python3 -c "import snakemake, lm_eval, hqq, jsonschema; print('snakemake', snakemake.__version__)"
    python3 -c "import bitsandbytes; print('bitsandbytes', bitsandbytes.__version__)" || true
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv ;;
  start)
    git log -1 --format='commit %H' 2>/dev/null || true
    setsid nohup bash -c "date +'start %s'; python3 -m snakemake --cores 16 --resources gpu=2 gpu_mem_gb=${GPU_MEM_GB:-64} \
        --scheduler greedy --keep-going --configfile $CONFIGS ${UNTIL:+--until $UNTIL}; echo \"snakemake exit \$?\"; \
        date +'end %s'" > $DAG_LOG 2>&1 < /dev/null &
    sleep 20; tail -5 $DAG_LOG ;;
  status)
    grep -c "^Finished jobid" $DAG_LOG; grep -E "Error|error:|exit|steps \(" $DAG_LOG | tail -8
    tail -3 logs/$RUN/train_softmax.log logs/$RUN/train_softpick.log 2>/dev/null | tr '\r' '\n' | tail -6
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader ;;
  collect)
    cp $DAG_LOG logs/$RUN/snakemake_dag.log 2>/dev/null
    tar czf "$OUT/$RUN.tar.gz" --exclude="results/$RUN/data/*.npy" --exclude="results/$RUN/data/val_docs.jsonl" \
        --exclude="results/$RUN/models/*/snapshots" --exclude="results/$RUN/models/*/model.safetensors" \
        --exclude='*.checkpoints*' results/$RUN $(ls -d figures/$RUN 2>/dev/null) logs/$RUN
    ls -la "$OUT" ;;
esac
