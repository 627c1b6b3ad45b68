#!/usr/bin/env bash
# Check a GPU machine in one command: a short sweep on hardware=cuda with tiny random models
# (baseline and the exact speculative methods, greedy and sampled) that writes records, then
# validates them and prints one line per job. Fails (non-zero) if any row is not ok.
#   bash scripts/gpu_smoke.sh                                   # into outputs/gpu_smoke/<time>
#   bash scripts/gpu_smoke.sh hardware.require_headless=false   # extra args go to run.py
#   HARDWARE=offload bash scripts/gpu_smoke.sh                  # another hardware preset
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python
OUT=${OUT:-outputs/gpu_smoke/$(date +%Y%m%d_%H%M%S)}
HARDWARE=${HARDWARE:-cuda}

case "$HARDWARE" in
    cpu | cpu_bf16 | offload_cpu) ;;  # CPU presets: lets the script itself be checked without a GPU
    *) "$PYTHON" -c 'import sys, torch; ok = torch.cuda.is_available(); print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0) if ok else None); sys.exit(0 if ok else "no CUDA device visible to torch")' ;;
esac

METHODS=baseline
for m in speculative specexec; do
    if [ -f "conf/method/$m.yaml" ]; then METHODS="$METHODS,$m"; fi
done

"$PYTHON" run.py -m model=tiny_random "hardware=$HARDWARE" "method=$METHODS" generation.temperature=0,0.8 \
    generation.max_new_tokens=32 dataset.max_samples=4 generation.warmup=1 "hydra.sweep.dir=$OUT" "$@"

"$PYTHON" -m spsamp.records validate "$OUT"/*/records.parquet
"$PYTHON" - "$OUT" <<'PY'
import sys
from pathlib import Path

import pandas as pd

rows = pd.concat([pd.read_parquet(p) for p in sorted(Path(sys.argv[1]).glob("*/records.parquet"))], ignore_index=True)
cols = ["method", "temperature", "device", "device_map", "target_dtype", "gpu_name", "display_active"]
summary = rows.groupby(cols, dropna=False).agg(rows=("status", "size"), ok=("status", lambda s: int((s == "ok").sum())),
                                               tok_per_s=("tokens_per_sec", "median"))
print(summary.to_string())
bad = rows[rows.status != "ok"]
if len(bad):
    print(bad[["method", "prompt_id", "error_type", "error_message"]].to_string())
    sys.exit(f"{len(bad)} of {len(rows)} rows failed")
print(f"gpu smoke ok: {len(rows)} rows in {sys.argv[1]}")
PY
