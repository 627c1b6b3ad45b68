#!/usr/bin/env bash
# The AutoJudge-on-HumanEval headline (issue #13) in resumable chunks: every configuration runs on
# the first N test problems, then the next chunk, so a stopped session leaves a balanced table and
# a rerun only decodes the missing rows (the sweep dir resumes by row key; mining resumes from its
# journal, spsamp/autojudge/journal.py).
#
#   bash scripts/autojudge_humaneval.sh 82 8 16 24     # mine 82 train problems, evaluate 8, then 16, then 24
#   THREADS=2 SWEEP=outputs/sweeps/aj_he bash scripts/autojudge_humaneval.sh 30 8
#
# Env: THREADS (torch threads, default 2 = a quiet 2-core machine), SWEEP (sweep dir), KS (draft
# lengths, default "8 16"), QUANTILES (judge validation quantiles used as thresholds, default
# "0.25 0.5 0.75"), TOKENS (max_new_tokens, default the experiment's 384).
# Then: python -m spsamp.analysis report "$SWEEP" --out reports/autojudge_humaneval
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,14p "$0"; exit 2; }
MINED=$1; shift
PY=${PY:-.venv/bin/python}
SWEEP=${SWEEP:-outputs/sweeps/autojudge_humaneval}
THREADS=${THREADS:-2}
KS=${KS:-"8 16"}
QUANTILES=${QUANTILES:-"0.25 0.5 0.75"}
EXTRA=(hardware.num_threads="$THREADS")
[ -n "${TOKENS:-}" ] && EXTRA+=(generation.max_new_tokens="$TOKENS")
AJ=(method=autojudge_humaneval method.mining_prompts="$MINED")

for N in "$@"; do
    # one plain job per configuration (~compare.arms: not the experiment's comparison), as the study ran
    COMMON=(experiment=autojudge_humaneval '~compare.arms' hydra.sweep.dir="$SWEEP" dataset.max_samples="$N" "${EXTRA[@]}")
    first_k=${KS%% *}
    # the first AutoJudge job mines (or reads the journal) and trains the judge; the rest reuse it
    "$PY" run.py -m "${COMMON[@]}" "${AJ[@]}" method.k="$first_k" method.threshold=1
    ckpt=$("$PY" run.py "${COMMON[@]}" "${AJ[@]}" --cfg job --resolve | awk '/^  checkpoint:/ {print $2}')
    thr=$("$PY" - "$ckpt" $QUANTILES <<'EOF'
import json, os, sys
meta = json.load(open(os.path.expanduser(sys.argv[1]) + ".json"))
qs = dict(zip(meta["threshold_quantiles"], meta["thresholds"]))
print(",".join(f"{qs[float(q)]:.6g}" for q in sys.argv[2:]))
EOF
)
    echo "autojudge_humaneval.sh: N=$N, judge $ckpt, thresholds at validation quantiles ($QUANTILES): $thr"
    "$PY" run.py -m "${COMMON[@]}" method=baseline
    for k in $KS; do
        "$PY" run.py -m "${COMMON[@]}" method=speculative method.k="$k"
        "$PY" run.py -m "${COMMON[@]}" "${AJ[@]}" method.k="$k" method.threshold="0,$thr,1"
    done
done
"$PY" -m spsamp.analysis summary "$SWEEP"
