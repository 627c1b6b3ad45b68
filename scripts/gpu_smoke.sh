#!/usr/bin/env bash
# GPU smoke test in one command: every method preset (conf/method/*.yaml) on the tiny random
# same-tokenizer pair (model=tiny_random, float32) on CUDA, greedy and sampled (greedy only where the
# decoder refuses sampling), and every batchable one (Decoder.batchable) again greedy at
# generation.batch_size=2 (as <preset>@batch2); records written and validated; then checks that every
# lossless method's greedy tokens, batched or not, equal baseline's (Decoder.lossless), and prints
# tokens/s ratios against baseline measured in this same run. Exits non-zero on any failed row or any
# greedy mismatch.
#   bash scripts/gpu_smoke.sh                          # cuda, into outputs/gpu_smoke/<time>
#   bash scripts/gpu_smoke.sh --device cpu             # dry check of the script itself, no GPU needed
#   bash scripts/gpu_smoke.sh --device cpu --plan      # only print the runs it would make (plan.tsv), run none
#   bash scripts/gpu_smoke.sh -- hardware.require_headless=false   # after --: extra run.py overrides
# Environment: OUT (output dir), MAX_NEW (tokens per answer, 32), SAMPLES (prompts, 4), METHODS
# (space-separated subset; default all), HARDWARE (preset; default cuda, cpu with --device cpu),
# MINE_PROMPTS / MINE_TOKENS (a judge's mining, saved in OUT: 8 prompts, 24 tokens each), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python

DEVICE=cuda
PLAN_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --plan) PLAN_ONLY=1; shift ;;
        --device) DEVICE=$2; shift 2 ;;
        --device=*) DEVICE=${1#*=}; shift ;;
        --) shift; break ;;
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
        *=*) break ;;  # a run.py override (key=value) without the --
        *) echo "gpu_smoke.sh: unknown argument $1 — use --device cpu|cuda[:N], --plan, then -- and run.py overrides" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cpu) HARDWARE=${HARDWARE:-cpu} ;; *) HARDWARE=${HARDWARE:-cuda} ;; esac
OUT=${OUT:-outputs/gpu_smoke/$(date +%Y%m%d_%H%M%S)}
MAX_NEW=${MAX_NEW:-32}
SAMPLES=${SAMPLES:-4}

if [ "$DEVICE" != cpu ] && [ "$PLAN_ONLY" = 0 ]; then
    "$PYTHON" -c 'import sys, torch; ok = torch.cuda.is_available(); print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0) if ok else None); sys.exit(0 if ok else "gpu_smoke.sh: no CUDA device visible to torch — use --device cpu for a dry check")'
fi

# baseline first: the reference every other method is compared with (METHODS="a b" narrows the list)
ALL="baseline $(for f in conf/method/*.yaml; do n=$(basename "$f" .yaml); [ "$n" != baseline ] && echo "$n"; done)"
METHODS=${METHODS:-$ALL}
case " $METHODS " in *" baseline "*) ;; *) METHODS="baseline $METHODS" ;; esac
COMMON=(model=tiny_random "hardware=$HARDWARE" "hardware.device=$DEVICE" hardware.dtype=float32)
mkdir -p "$OUT"
echo "gpu_smoke: methods $METHODS on $DEVICE ($HARDWARE preset, float32) -> $OUT"

# One line per run (name, preset, ...), from the decoder itself: the temperatures it decodes (greedy only where its
# config check refuses sampling), whether its greedy tokens must equal baseline's (Decoder.lossless),
# and, for a decoder that trains something before decoding (a judge), a small training saved in $OUT.
"$PYTHON" - "$OUT" "${MINE_PROMPTS:-8}" "${MINE_TOKENS:-24}" "${COMMON[@]}" "$@" -- $METHODS > "$OUT/plan.tsv" <<'PY'
import sys
from dataclasses import fields

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from spsamp.config import ConfigError, project_root, validate

out, mine_prompts, mine_tokens, *rest = sys.argv[1:]
split = rest.index("--")
common, presets = rest[:split], rest[split + 1:]
with initialize_config_dir(config_dir=f"{project_root()}/conf", version_base="1.3"):
    for preset in presets:
        base = [*common, f"method={preset}", "generation.temperature=0"]
        try:
            _, params = validate(compose(config_name="config", overrides=base))
        except ConfigError as exc:
            sys.exit(f"gpu smoke: method={preset}: config error: {exc}")
        keys = {f.name for f in fields(params)}
        extra = []
        if "checkpoint" in keys:
            extra.append(f"method.checkpoint={out}/{preset}_judge.safetensors")
            # a small mining of mining_prompts prompts, also for a preset that mines to a target count
            extra += [f"method.{k}={v}" for k, v in (("mining_prompts", mine_prompts), ("mining_max_tokens", mine_tokens),
                                                     ("mining_target", 0)) if k in keys]
        try:
            validate(compose(config_name="config", overrides=[*base[:-1], "generation.temperature=0.8", *extra]))
            temps = "0,0.8"
        except ConfigError as exc:
            if not str(exc).startswith("generation.temperature"):
                sys.exit(f"gpu smoke: method={preset}: config error: {exc}")
            temps = "0"  # greedy only, as the decoder says
        decoder = instantiate(compose(config_name="config", overrides=[*base, *extra]).method)
        kind = "lossless" if decoder.lossless else "lossy"
        print("\t".join([preset, preset, temps, kind, *extra]))
        if decoder.batchable:  # the batched path too: two prompts per batch, greedy
            print("\t".join([f"{preset}@batch2", preset, "0", kind, *extra, "generation.batch_size=2"]))
PY
if [ "$PLAN_ONLY" = 1 ]; then
    cat "$OUT/plan.tsv"
    exit 0
fi

while IFS=$'\t' read -r -a plan; do
    name=${plan[0]} m=${plan[1]} temps=${plan[2]} extra=("${plan[@]:4}")
    "$PYTHON" run.py -m "${COMMON[@]}" "method=$m" "generation.temperature=$temps" "generation.max_new_tokens=$MAX_NEW" \
        "dataset.max_samples=$SAMPLES" generation.warmup=1 "hydra.sweep.dir=$OUT/$name" "${extra[@]}" "$@" < /dev/null  # stdin is the plan
done < "$OUT/plan.tsv"

"$PYTHON" - "$OUT" <<'PY'
import sys

import pandas as pd

from spsamp.analysis import find_record_files, load_records
from spsamp.records.__main__ import main as validate

out = sys.argv[1]
if validate(["validate", *map(str, find_record_files(out))]):
    sys.exit("gpu smoke: records failed validation")
plan = [line.rstrip("\n").split("\t") for line in open(f"{out}/plan.tsv")]
# a lossy method may differ from baseline by design; every lossless one must match it at T=0
rows = pd.concat([load_records(f"{out}/{p[0]}", metrics=False).assign(preset=p[0], lossless=p[3] == "lossless") for p in plan],
                 ignore_index=True)
bad = rows[rows.status != "ok"]
if len(bad):
    print(bad[["method", "temperature", "prompt_id", "error_type", "error_message"]].to_string())
    sys.exit(f"gpu smoke: {len(bad)} of {len(rows)} rows failed")

# greedy equality with baseline, token for token (float32: batched and single-token passes agree)
key = ["prompt_id", "turn", "repeat"]
greedy = rows[rows.temperature == 0]
ref = {tuple(r[k] for k in key): list(r.generated_ids) for _, r in greedy[greedy.preset == "baseline"].iterrows()}
mismatches = []
compared = greedy[greedy.lossless & (greedy.preset != "baseline")]
for _, r in compared.iterrows():
    want, got = ref.get(tuple(r[k] for k in key)), list(r.generated_ids)
    if want != got:
        at = next((i for i, (a, b) in enumerate(zip(want or [], got)) if a != b), min(len(want or []), len(got)))
        mismatches.append(f"method={r.preset} prompt {r.prompt_id}: differs from baseline at token {at}"
                          " (a lossy decoder says so: lossless = False, spsamp/decoders/base.py)")

# speed: median tokens/s per method and temperature, as a ratio to baseline's in this run
speed = rows.groupby(["preset", "temperature"]).agg(rows=("status", "size"), tok_per_s=("tokens_per_sec", "median"),
                                                    tokens_per_step=("avg_tokens_per_step", "median")).reset_index()
base = speed[speed.preset == "baseline"].set_index("temperature").tok_per_s
speed["x_baseline"] = speed.apply(lambda s: s.tok_per_s / base.get(s.temperature, float("nan")), axis=1)
first = rows.iloc[0]
print(f"\ndevice {first.device}  gpu {first.get('gpu_name')}  dtype {first.target_dtype}  torch {first.get('torch_version')}")
print(speed.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
if mismatches:
    print("\n".join(mismatches))
    sys.exit(f"gpu smoke: {len(mismatches)} greedy rows differ from baseline")
lossy = sorted({p[1] for p in plan if p[3] != "lossless"})
batched = sum(p[0] != p[1] for p in plan)
print(f"gpu smoke ok: {len(rows)} rows of {len(plan) - batched} method presets ({batched} also batched), {len(compared)} greedy rows"
      f" of {compared.preset.nunique()} lossless runs equal to baseline's (not compared, lossy: {' '.join(lossy) or 'none'}), records in {out}")
PY
