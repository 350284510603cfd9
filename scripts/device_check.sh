#!/usr/bin/env bash
# One GPU check for a lent CUDA machine (no network; the repo tree is copied there and the
# missing pure-Python/binary wheels travel in the git-ignored folder .whl/).
#   1. install .whl/*.whl into /tmp/site (skipped if the caller already did)
#   2. print the GPU and the versions that matter
#   3. tests/gpu (CUDA vs CPU parity, bf16 CPT steps)         -> $OUT/gpu_tests.log, gpu_report.json
#   4. merge timing on bench_merge's 1B pair, CPU vs CUDA     -> $OUT/merge_timing.{log,json}
# Run from the repository root:  bash scripts/device_check.sh
# `bash scripts/device_check.sh scale` runs issue 18's measurement instead, after steps 1-2:
# scripts/device_scale_check.py (train MFU and tokens/s on an 8B-shaped model with fewer layers,
# an 8B-shaped merge on the GPU, an lm-eval pass) -> $OUT/scale_check.json; under 10 minutes.
# Exit status: 0 when both steps passed, else the first failing step's status.
set -u
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"

if [ ! -d /tmp/site/pydantic ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 3
fi
export PYTHONPATH=/tmp/site:$PWD
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export SPEAR_MM_GPU_REPORT=$OUT/gpu_report.json

nvidia-smi -L
python3 - <<'EOF' 2>&1 | tee "$OUT/versions.txt"
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
for name in ("transformers", "accelerate", "safetensors", "tokenizers", "pydantic", "hydra-core",
             "omegaconf", "numpy", "pytest"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} MISSING")
EOF

if [ "${1:-}" = "scale" ]; then
    echo "== scale check (scripts/device_scale_check.py)"
    timeout 570 python3 scripts/device_scale_check.py --out "$OUT" 2>&1 | tee "$OUT/scale_check.log"
    rc=${PIPESTATUS[0]}
    rm -rf /tmp/scale_check
    exit "$rc"
fi

echo "== tests/gpu"
timeout 180 python3 -m pytest tests/gpu -q -rA -p no:cacheprovider -o addopts="" \
    --import-mode=importlib 2>&1 | tee "$OUT/gpu_tests.log"
rc_tests=${PIPESTATUS[0]}

echo "== merge timing (1B pair, CPU vs CUDA)"
timeout 300 python3 scripts/device_merge_timing.py --size 1b --work /tmp/bench \
    --runs cpu:16,cuda:16 --json "$OUT/merge_timing.json" 2>&1 | tee "$OUT/merge_timing.log"
rc_timing=${PIPESTATUS[0]}
rm -rf /tmp/bench

echo "== done: tests rc=$rc_tests, timing rc=$rc_timing"
[ "$rc_tests" -ne 0 ] && exit "$rc_tests"
exit "$rc_timing"
