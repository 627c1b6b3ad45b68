#!/usr/bin/env bash
# GPU smoke test in one command: every registered method (conf/method/*.yaml) on the tiny random
# same-tokenizer pair (model=tiny_random, float32) on CUDA, greedy and sampled, records written and
# validated; then checks that every lossless method's greedy tokens equal baseline's, and prints
# tokens/s ratios against baseline measured in this same run. Exits non-zero on any failed row or
# any greedy mismatch.
#   bash scripts/gpu_smoke.sh                          # cuda, into outputs/gpu_smoke/<time>
#   bash scripts/gpu_smoke.sh --device cpu             # dry check of the script itself, no GPU needed
#   bash scripts/gpu_smoke.sh -- hardware.require_headless=false   # after --: extra run.py overrides
# Environment: OUT (output dir), MAX_NEW (tokens per answer, 32), SAMPLES (prompts, 4), METHODS
# (space-separated subset; default all), HARDWARE (preset; default cuda, cpu with --device cpu), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python

DEVICE=cuda
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --device=*) DEVICE=${1#*=}; shift ;;
        --) shift; break ;;
        -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
        *=*) break ;;  # a run.py override (key=value) without the --
        *) echo "gpu_smoke.sh: unknown argument $1 — use --device cpu|cuda[:N], then -- and run.py overrides" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cpu) HARDWARE=${HARDWARE:-cpu} ;; *) HARDWARE=${HARDWARE:-cuda} ;; esac
OUT=${OUT:-outputs/gpu_smoke/$(date +%Y%m%d_%H%M%S)}
MAX_NEW=${MAX_NEW:-32}
SAMPLES=${SAMPLES:-4}

if [ "$DEVICE" != cpu ]; then
    "$PYTHON" -c 'import sys, torch; ok = torch.cuda.is_available(); print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0) if ok else None); sys.exit(0 if ok else "gpu_smoke.sh: no CUDA device visible to torch — use --device cpu for a dry check")'
fi

# baseline first: the reference every other method is compared with (METHODS="a b" narrows the list)
ALL="baseline $(for f in conf/method/*.yaml; do n=$(basename "$f" .yaml); [ "$n" != baseline ] && echo "$n"; done)"
METHODS=${METHODS:-$ALL}
case " $METHODS " in *" baseline "*) ;; *) METHODS="baseline $METHODS" ;; esac
echo "gpu_smoke: methods $METHODS on $DEVICE ($HARDWARE preset, float32) -> $OUT"
for m in $METHODS; do
    temps=0,0.8
    extra=()
    case "$m" in
        # lossy and greedy-only; a small judge mined and trained here (saved next to the records)
        autojudge) temps=0; extra=(method.mining_prompts=8 method.mining_max_tokens=24 "method.checkpoint=$OUT/autojudge_judge.safetensors") ;;
    esac
    "$PYTHON" run.py -m model=tiny_random "hardware=$HARDWARE" "hardware.device=$DEVICE" hardware.dtype=float32 \
        "method=$m" "generation.temperature=$temps" "generation.max_new_tokens=$MAX_NEW" "dataset.max_samples=$SAMPLES" \
        generation.warmup=1 "hydra.sweep.dir=$OUT/$m" "${extra[@]}" "$@"
done

"$PYTHON" - "$OUT" <<'PY'
import sys

from spsamp.analysis import find_record_files, load_records
from spsamp.records.__main__ import main as validate

LOSSY = {"autojudge"}  # may differ from baseline by design; every other method must match it at T=0
out = sys.argv[1]
if validate(["validate", *map(str, find_record_files(out))]):
    sys.exit("gpu smoke: records failed validation")
rows = load_records(out, metrics=False)
bad = rows[rows.status != "ok"]
if len(bad):
    print(bad[["method", "temperature", "prompt_id", "error_type", "error_message"]].to_string())
    sys.exit(f"gpu smoke: {len(bad)} of {len(rows)} rows failed")

# greedy equality with baseline, token for token (float32: batched and single-token passes agree)
key = ["prompt_id", "turn", "repeat"]
greedy = rows[rows.temperature == 0]
ref = {tuple(r[k] for k in key): list(r.generated_ids) for _, r in greedy[greedy.method == "baseline"].iterrows()}
mismatches = []
compared = greedy[~greedy.method.isin(LOSSY | {"baseline"})]
for _, r in compared.iterrows():
    want, got = ref.get(tuple(r[k] for k in key)), list(r.generated_ids)
    if want != got:
        at = next((i for i, (a, b) in enumerate(zip(want or [], got)) if a != b), min(len(want or []), len(got)))
        mismatches.append(f"{r.method} prompt {r.prompt_id}: differs from baseline at token {at}")

# speed: median tokens/s per method and temperature, as a ratio to baseline's in this run
speed = rows.groupby(["method", "temperature"]).agg(rows=("status", "size"), tok_per_s=("tokens_per_sec", "median"),
                                                    tokens_per_step=("avg_tokens_per_step", "median")).reset_index()
base = speed[speed.method == "baseline"].set_index("temperature").tok_per_s
speed["x_baseline"] = speed.apply(lambda s: s.tok_per_s / base.get(s.temperature, float("nan")), axis=1)
first = rows.iloc[0]
print(f"\ndevice {first.device}  gpu {first.get('gpu_name')}  dtype {first.target_dtype}  torch {first.get('torch_version')}")
print(speed.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
if mismatches:
    print("\n".join(mismatches))
    sys.exit(f"gpu smoke: {len(mismatches)} greedy rows differ from baseline")
print(f"gpu smoke ok: {len(rows)} rows, {len(compared)} greedy rows of {compared.method.nunique()} lossless methods equal to baseline's, records in {out}")
PY
