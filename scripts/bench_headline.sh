#!/usr/bin/env bash
# Issue #17's headline: the real pair as its preset runs it (Qwen2.5-Coder 0.5B -> 1.5B; target bf16,
# draft int8) on coding (HumanEval's test half) and MT-Bench first turns (one question per category
# in turn), greedy and T=0.7, every method interleaved prompt by prompt in one run per dataset
# (scripts/bench_lossless.py). Each table goes to docs/benchmarks/data/speed_headline/<dataset>.md
# (the command, date, CPU and versions at its top).
#   python -m spsamp.models.fetch qwen25_coder_05b_15b      # once
#   bash scripts/bench_headline.sh [coding|mt_bench]...    # default: both; ~30 min each on 2 cores
# Keep the machine otherwise quiet: ratios come from one run, but 2 cores shared halve every row.
# THREADS (default 2: this bench wants both cores), CODING_PROMPTS/TOKENS, MT_PROMPTS/TOKENS size it.
# DRAFT_VARIANT=bf16 runs every spsamp row again on the bf16 draft, interleaved, as <row>@bf16 (into
# <dataset>_vs_bf16_draft.md). ROWS=a,b,... runs only those rows, into <dataset>${SUFFIX}.md (SUFFIX
# required with ROWS, so a partial run never replaces a full table); TEMPS=0.7 runs one temperature
# (a partial run too: SUFFIX required).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-docs/benchmarks/data/speed_headline}
MT_BENCH=${MT_BENCH:-../shared/datasets/mt_bench.jsonl}
rows=${ROWS:-baseline,hf_generate_stock,sps_k4,sps_k8,hf_assisted_k4_stock,hf_assisted_k8_stock,sps_kauto,specexec_b16x4,specexec_b32,specexec_bauto,specexec_b32x16c}
suffix=${SUFFIX:-}
if { [ -n "${ROWS:-}" ] || [ -n "${TEMPS:-}" ]; } && [ -z "$suffix" ]; then
    echo "bench_headline.sh: ROWS and TEMPS need SUFFIX (e.g. SUFFIX=_grow_cost) so a partial run keeps the full tables" >&2; exit 2
fi
common=(--model qwen25_coder_05b_15b --threads "${THREADS:-2}" --k 4,8 --budgets 16x4,32x8,32x16c --parallel-branches 8
        --max-depth 12 --auto --temps "${TEMPS:-0,0.7}" --only "$rows")
case "${DRAFT_VARIANT:-}" in
    "") ;;
    bf16) common+=(--draft-variant bf16=++model.draft.quantization=null); suffix=${suffix}_vs_bf16_draft ;;
    *) echo "bench_headline.sh: unknown DRAFT_VARIANT '$DRAFT_VARIANT' — use bf16 or leave it unset" >&2; exit 2 ;;
esac
# every set name is checked before the first (half-hour) bench starts
names=()
for set in "${@:-coding mt_bench}"; do
    for name in $set; do
        case "$name" in
            coding|mt_bench) names+=("$name") ;;
            *) echo "bench_headline.sh: unknown set '$name' — use coding or mt_bench" >&2; exit 2 ;;
        esac
    done
done
mkdir -p "$OUT"
for name in "${names[@]}"; do
    case "$name" in
        coding) args=(--set dataset=humaneval --set dataset.split=test --prompts "${CODING_PROMPTS:-4}"
                      --max-new-tokens "${CODING_TOKENS:-128}") ;;
        mt_bench) args=(--set dataset=mt_bench --set "dataset.path=$MT_BENCH" --spread --prompts "${MT_PROMPTS:-8}"
                        --max-new-tokens "${MT_TOKENS:-64}") ;;
    esac
    out="$OUT/$name$suffix"
    "$PY" scripts/bench_lossless.py "${common[@]}" "${args[@]}" > "$out.md.part" 2> "$out.log.part"
    mv "$out.md.part" "$out.md"
    grep -v "Loading weights" "$out.log.part" > "$out.log" || true
    rm -f "$out.log.part"
done
