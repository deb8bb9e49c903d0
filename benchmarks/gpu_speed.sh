#!/usr/bin/env bash
# The speed benchmark on one GPU, for the day one is lent (about 3 minutes on one H100):
#   bash benchmarks/gpu_speed.sh [OUT.json]
# The same figures as on the CPU (shares of the GPU's own measured bf16 / fp32 matmul peak), with
# torch.compile on the training steps, then once more at full size (batch 64 imagination).
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-gpu_speed.json}
python bench_speed.py --device cuda --precision bf16 --compile --out "$out"
