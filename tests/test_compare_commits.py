"""scripts/compare_commits.py's tables: per-prompt and pooled decode speedups against the cost model's prediction."""

from __future__ import annotations

import importlib.util

import pandas as pd

from conftest import ROOT


def load():
    spec = importlib.util.spec_from_file_location("compare_commits", ROOT / "scripts" / "compare_commits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(prompt: str, base_s: float, arm_s: float, predicted: float, tokens: int = 101) -> list[dict]:
    return [{"prompt": prompt, "row": "baseline", "tokens": tokens, "seconds": base_s + 1, "ttft_s": 1.0, "predicted": float("nan")},
            *({"prompt": prompt, "row": f"kauto@{c}", "tokens": tokens, "seconds": arm_s + 1, "ttft_s": 1.0, "predicted": predicted}
              for c in ("new", "old"))]


def test_pooled_error_weighs_prompts_by_their_decode_seconds(capsys):
    """A long answer predicted right and a short one predicted 50 % too fast: the per-prompt mean
    error is large, the run's (pooled over decode seconds) small; both commits equal: new / old 1."""
    load().report(pd.DataFrame([*rows("long", 100.0, 50.0, 2.0), *rows("short", 2.0, 1.0, 3.0, tokens=3)]))
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| kauto@new"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[4] == "+25 %"  # mean prediction 2.5 over a geometric-mean measurement of 2
    pooled, pooled_pred, pooled_err = float(cells[5]), float(cells[6]), cells[7]
    assert pooled == 2.0 and abs(pooled_pred - 102 / (50 + 2 / 3)) < 0.01 and pooled_err == "+1 %"


def test_pooled_speedup_is_per_token_when_sampled_answers_differ_in_length(capsys):
    """At T > 0 an arm's answer may end sooner than the baseline's: the pooled speedup compares
    decode rates (an arm at twice the baseline's rate reads 2, whatever its answer's length)."""
    base = {"prompt": "p", "row": "baseline", "tokens": 101, "seconds": 101.0, "ttft_s": 1.0, "predicted": float("nan")}
    arm = [{"prompt": "p", "row": f"kauto@{c}", "tokens": 51, "seconds": 26.0, "ttft_s": 1.0, "predicted": 2.0} for c in ("new", "old")]
    load().report(pd.DataFrame([base, *arm]))
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| kauto@new"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert float(cells[5]) == 2.0 and float(cells[6]) == 2.0 and cells[7] == "+0 %"
