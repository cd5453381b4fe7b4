#!/usr/bin/env bash
# The importer against fla's own model on the GPU (tests/test_importer_gpu.py, then the CPU-side
# tests/test_importer.py), through the device tool. Needs the carried wheels in .whlfla/ (fla-core,
# flash-linear-attention and einops, pure Python); the other packages are already in /tmp/site.
#   bash benchmarks/run_importer_gpu_device.sh        # log -> $OUT/importer_gpu.log
set -o pipefail
OUT=${OUT:-benchmarks_out}
mkdir -p "$OUT"
if ! ls .whlfla/*.whl >/dev/null 2>&1; then
  echo "no wheels in .whlfla/: copy flash-linear-attention, fla-core and einops wheels there" >&2
  exit 2
fi
python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/sitefla .whlfla/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site:/tmp/sitefla PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, triton, transformers, fla.models; print('torch', torch.__version__, 'triton', triton.__version__,
'transformers', transformers.__version__, 'fla', fla.__version__)"
} 2>&1 | tee "$OUT/importer_gpu.log"
python3 -m pytest -v -s -p no:cacheprovider tests/test_importer_gpu.py tests/test_importer.py 2>&1 | tee -a "$OUT/importer_gpu.log"
