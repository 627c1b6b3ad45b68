"""Lossy acceptance rules (typical, top-k, probability ratio): each rule's decision on hand-built rows,
the accept-beyond-exact count, the exact end of each knob (T=0: the baseline's tokens; sampling: SpS's
draws with the same seed and the target's distribution), and the lossy end (more accepted than SpS,
and the chi-square flags the shift: the negative control a lossy rule must fail)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from conftest import compose_cfg
from spsamp.acceptance.lossy import LossyAcceptance, lossy_rejection_sampling, ratio_pass, topk_pass, typical_pass
from spsamp.config import ConfigError, GenerationConfig, validate
from spsamp.decoders.lossy import LossyDecoder
from spsamp.decoders.speculative import SpeculativeDecoder
from spsamp.loop import DecodeStats
from spsamp.models.adapter import Forward
from spsamp.proposals import Proposal
from spsamp.sampling import logits_to_probs
from test_losslessness import FAIL_P, PASS_P, draws, equals_baseline_tiny, tiny64, toy_pair  # noqa: F401 (tiny64: fixture)
from toy_models import chi_square_pvalue, exact_joint, spied

EXACT_ENDS = [dict(rule="typical", threshold=1.0), dict(rule="topk", top_k=0), dict(rule="ratio", threshold=1.0)]
GREEDY_EXACT_ENDS = EXACT_ENDS + [dict(rule="topk", top_k=1)]
# far enough from exact that the toy pair's output measurably leaves the target's distribution
LOSSY_ENDS = [dict(rule="typical", threshold=0.05), dict(rule="topk", top_k=3), dict(rule="ratio", threshold=0.3)]


def case_id(c: dict) -> str:
    return "-".join(f"{v}" for v in c.values())


# ---- each rule's decision, by hand ---------------------------------------------------------------


def test_typical_rule_by_hand():
    # q = [0.5, 0.45, 0.05]: H = 0.8558, exp(-H) = 0.4250
    q = torch.tensor([[0.5, 0.45, 0.05]] * 3, dtype=torch.float64)
    x = torch.tensor([0, 1, 2])
    # eps 0.09: delta = 0.3 / 0.91 = 0.330, delta exp(-H) = 0.140 -> threshold eps = 0.09: tokens 0, 1 pass
    assert typical_pass(x, None, q, 0.09).tolist() == [True, True, False]
    # eps 0.45: delta = 0.671 / 0.55 = 1.220, 0.518 -> threshold 0.45: 0.45 is not above it
    assert typical_pass(x, None, q, 0.45).tolist() == [True, False, False]
    # flat row (4 x 0.25): exp(-H) = 0.25; eps 0.09 -> delta exp(-H) = 0.082 < eps binds: 0.25 passes;
    # eps 0.5 -> delta = 1.414, 0.354 binds: 0.25 does not
    flat = torch.tensor([[0.25] * 4], dtype=torch.float64)
    assert typical_pass(torch.tensor([3]), None, flat, 0.09).tolist() == [True]
    assert typical_pass(torch.tensor([3]), None, flat, 0.5).tolist() == [False]
    # the knob's ends: eps = 1 passes nothing (not even a sure token), eps = 0 every token with mass
    sure = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    assert not typical_pass(torch.tensor([0]), None, sure, 1.0).any()
    assert typical_pass(x, None, q, 0.0).all() and not typical_pass(torch.tensor([1]), None, sure, 0.0).any()


def test_topk_and_ratio_rules_by_hand():
    q = torch.tensor([[0.1, 0.4, 0.3, 0.2]] * 4, dtype=torch.float64)
    x = torch.tensor([1, 2, 3, 0])  # ranks 0, 1, 2, 3
    assert topk_pass(x, None, q, 0).tolist() == [False] * 4
    assert topk_pass(x, None, q, 2).tolist() == [True, True, False, False]
    assert topk_pass(x, None, q, 4).all()
    tie = torch.tensor([[0.4, 0.4, 0.2]], dtype=torch.float64)  # a tie for first: both are top-1
    assert topk_pass(torch.tensor([1]), None, tie, 1).tolist() == [True]
    p = torch.tensor([[0.1, 0.8, 0.05, 0.05]] * 4, dtype=torch.float64)
    # q/p at x: 0.5, 6, 4, 1
    assert ratio_pass(x, p, q, 0.6).tolist() == [False, True, True, True]
    assert ratio_pass(x, p, q, 0.5).tolist() == [True, True, True, True]
    assert ratio_pass(x, None, q, 0.35).tolist() == [True, False, False, False]  # one-hot p: q(x) >= t


# ---- the accept-beyond-exact count ---------------------------------------------------------------


def test_beyond_exact_count_on_a_sampled_hand_built_chain():
    # exact outcomes made certain: q(x) >= p(x) always passes the ratio test, q(x) = 0 never does
    p = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.2, 0.8, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    x = torch.tensor([1, 2, 0, 1])  # exact: pass, fail, fail, fail
    rng = torch.Generator().manual_seed(0)
    n, nxt, beyond = lossy_rejection_sampling(x, p, q, torch.tensor([False, True, False, True]), rng)
    assert (n, beyond.tolist()) == (2, [False, True, False, False])
    assert nxt == 2  # residual at x_3's row: max(q - p, 0) = [0, 0, 0.5] -> token 2, the exact correction
    n, nxt, beyond = lossy_rejection_sampling(x, p, q, torch.tensor([False, True, True, True]), rng)
    assert (n, int(beyond.sum()), nxt) == (4, 3, 1)  # all kept: the bonus token from q_5
    n, nxt, beyond = lossy_rejection_sampling(x, p, q, torch.tensor([False, False, True, True]), rng)
    assert (n, int(beyond.sum()), nxt) == (1, 0, 0)  # a rule cannot skip over a token both rejected


def greedy_step(logits: torch.Tensor, draft: list[int], room: int, eos: set[int], rule: LossyAcceptance):
    st = SimpleNamespace(gen=GenerationConfig(temperature=0.0), vocab=logits.shape[-1], rng=None, eos_ids=eos, room=room,
                         stats=DecodeStats(), probs=lambda lg: logits_to_probs(lg, 0.0))
    v = rule(Proposal.chain(torch.tensor(draft)), Forward(logits=logits), st)
    return v, st.stats.extra


def test_beyond_exact_count_on_a_greedy_hand_built_chain():
    # target rows (argmax, then the runner-up): 1 / 3; 2 / 3; 0 / 4; 4 / 1
    logits = torch.log(torch.tensor([[0.05, 0.6, 0.05, 0.25, 0.05], [0.05, 0.05, 0.5, 0.35, 0.05],
                                     [0.7, 0.05, 0.05, 0.05, 0.15], [0.05, 0.3, 0.05, 0.05, 0.55]], dtype=torch.float64))
    rule = LossyAcceptance("topk", 2)
    draft = [1, 3, 4]  # match, runner-up (kept by the rule only), runner-up (kept by the rule only)
    v, extra = greedy_step(logits, draft, room=10, eos=set(), rule=rule)
    assert (v.path, v.token, v.rejected) == ([0, 1, 2], 4, False) and extra == {"rule_accepted": 2, "rule_rejected": 0}
    v, extra = greedy_step(logits, [1, 3, 2], room=10, eos=set(), rule=rule)  # token 2 is third at row 3
    assert (v.path, v.token, v.rejected) == ([0, 1], 0, True) and extra == {"rule_accepted": 1, "rule_rejected": 1}
    # only what reaches the output counts: a budget of 1 token keeps the match alone, an eos ends the text
    v, extra = greedy_step(logits, draft, room=1, eos=set(), rule=rule)
    assert extra == {"rule_accepted": 0, "rule_rejected": 0}
    v, extra = greedy_step(logits, [1, 3, 2], room=10, eos={1}, rule=rule)
    assert extra == {"rule_accepted": 0, "rule_rejected": 0}
    # exact end: the same step is greedy SpS
    v, extra = greedy_step(logits, draft, room=10, eos=set(), rule=LossyAcceptance("topk", 0))
    assert (v.path, v.token, extra["rule_accepted"]) == ([0], 2, 0)


def test_decoder_metrics_report_the_rate(tiny64, one_thread):
    target, draft, _ = tiny64
    dec = LossyDecoder(rule="topk", top_k=128, k=4)  # vocabulary 128: every draft token is in the top 128
    out = dec.generate(target, draft, torch.tensor([5, 6, 7]), GenerationConfig(max_new_tokens=24), torch.Generator())
    m = out.stats.extra
    assert m["rule"] == "topk" and m["rule_knob"] == 128
    assert m["rule_accepted"] > 0 and m["rule_accept_rate"] == 1.0 and out.stats.rejections == 0
    assert "rule_rejected" not in m and out.stats.accepted == out.stats.proposed


# ---- the exact end of every knob -----------------------------------------------------------------


@pytest.mark.parametrize("case", GREEDY_EXACT_ENDS, ids=case_id)
def test_exact_end_greedy_equals_baseline_tiny_float64(case, tiny64, one_thread):
    dec = spied(LossyDecoder(k=4, **case))
    out = equals_baseline_tiny(dec, tiny64, f"lossy {case}")
    assert max(dec.drafter.sizes) == 4
    assert out.stats.extra["rule_accepted"] == 0


@pytest.mark.parametrize("case", EXACT_ENDS, ids=case_id)
def test_exact_end_samples_as_sps_with_the_same_seed(case, one_thread):
    q, p = toy_pair()
    gen = GenerationConfig(max_new_tokens=5, temperature=1.0)
    ours = draws(LossyDecoder(k=3, **case), q, p, gen, n=300, seed=3)
    sps = draws(SpeculativeDecoder(k=3), q, p, gen, n=300, seed=3)
    assert ours == sps


@pytest.mark.slow
@pytest.mark.parametrize("case", EXACT_ENDS, ids=case_id)
def test_exact_end_matches_target_joint(case, one_thread):
    q, p = toy_pair()
    gen = GenerationConfig(max_new_tokens=5, temperature=1.0)
    pval = chi_square_pvalue(draws(LossyDecoder(k=3, **case), q, p, gen), exact_joint(q, [1], 5, 1.0))
    assert pval > PASS_P, f"lossy {case} at its exact end deviates from the target joint (chi-square p={pval:.2e})"


# ---- the lossy end: more accepted than SpS, and the distribution shifts --------------------------


def acceptance(dec, q, p, gen, n):
    rng = torch.Generator().manual_seed(5)
    outs = [dec.generate(q, p, torch.tensor([1]), gen, rng).stats for _ in range(n)]
    return sum(s.accepted for s in outs) / sum(s.proposed for s in outs), sum(s.extra.get("rule_accepted", 0) for s in outs)


@pytest.mark.parametrize("case", LOSSY_ENDS, ids=case_id)
def test_lossy_knob_accepts_more_and_fails_the_exactness_test(case, one_thread):
    q, p = toy_pair()
    gen = GenerationConfig(max_new_tokens=4, temperature=1.0)
    dec = LossyDecoder(k=2, **case)
    ours, beyond = acceptance(dec, q, p, gen, 400)
    sps, _ = acceptance(SpeculativeDecoder(k=2), q, p, gen, 400)
    assert beyond > 0 and ours > sps + 0.05, f"lossy {case} accepts {ours:.2f} of draft tokens, SpS {sps:.2f}"
    pval = chi_square_pvalue(draws(dec, q, p, gen, n=4_000), exact_joint(q, [1], 4, 1.0))
    assert pval < FAIL_P, f"lossy {case} passed the exactness test (p={pval:.2e}): the negative control must fail"


@pytest.mark.parametrize("case", [dict(rule="typical", threshold=0.0), dict(rule="topk", top_k=128), dict(rule="ratio", threshold=0.0)],
                         ids=case_id)
def test_accept_everything_end_greedy_is_the_drafts_chain(case, tiny64, one_thread):
    target, draft, _ = tiny64
    gen = GenerationConfig(max_new_tokens=24)
    out = LossyDecoder(k=4, **case).generate(target, draft, torch.tensor([5, 6, 7]), gen, torch.Generator())
    sps = SpeculativeDecoder(k=4).generate(target, draft, torch.tensor([5, 6, 7]), gen, torch.Generator())
    assert out.stats.accepted == out.stats.proposed and out.stats.extra["rule_accepted"] > 0
    assert sps.stats.accepted < sps.stats.proposed and out.tokens != sps.tokens


# ---- config ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method.threshold=1.5"], r"^method\.threshold: must be in \[0, 1\], got 1\.5 — 1 = exact SpS"),
        (["method.threshold=-0.1"], r"^method\.threshold: must be in \[0, 1\]"),
        (["method.top_k=-1"], r"^method\.top_k: must be an integer >= 0, got -1"),
        (["method.rule=fuzzy"], r"^method\.rule: unknown 'fuzzy' — use one of \['ratio', 'topk', 'typical'\]"),
        (["method.k=0"], r"^method\.k: must be an integer >= 1"),
    ],
)
def test_bad_values_give_one_config_error_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate(compose_cfg(["model=tiny_random", "method=lossy", *overrides]))
    assert "\n" not in str(err.value)


def test_presets_select_each_rule():
    for rule in ("typical", "topk", "ratio"):
        run, params = validate(compose_cfg(["model=tiny_random", "method=lossy" if rule == "typical" else f"method=lossy_{rule}"]))
        assert (params.name, params.rule) == ("lossy", rule)
    assert math.isclose(LossyDecoder.Params().threshold, 0.09)


# ---- the frontier experiment ---------------------------------------------------------------------


def test_frontier_experiment_pairs_every_rule_with_both_references():
    from spsamp.comparison import compose_arms

    exact = "compare.only=[baseline,sps,typical_60,typical_30,typical_09,typical_03,topk_2,topk_5,ratio_50,ratio_30,ratio_10]"
    for dataset in ("humaneval_test", "arithmetic"):
        for temp in (0.0, 0.7):
            job = ["experiment=lossy_frontier", f"dataset={dataset}", f"generation.temperature={temp}"] + ([exact] if temp else [])
            arms = compose_arms(compose_cfg(job), job, compose_cfg)
            assert {a.run.dataset.name for a in arms} == {"arithmetic" if dataset == "arithmetic" else "humaneval"}
            assert {a.run.generation.temperature for a in arms} == {temp}
            got = [(getattr(a.params, "rule", a.params.name), a.params.knob if a.params.name == "lossy" else None) for a in arms]
            assert {("baseline", None), ("speculative", None)} <= set(got)
            rules = {arm for arm, _ in got} - {"baseline", "speculative", "autojudge"}
            assert rules == {"typical", "topk", "ratio"}, (dataset, temp, rules)
            assert all(len({k for a, k in got if a == rule}) >= 2 for rule in rules), "a rule's knob is swept over >= 2 values"
            judges = [a.params for a in arms if a.params.name == "autojudge"]
            if temp == 0:  # AutoJudge's judge for the dataset at hand, its threshold swept
                checks = {"humaneval_test": "tests", "arithmetic": "final_answer"}[dataset]
                assert {j.importance_check for j in judges} == {checks} and len({j.threshold_quantile for j in judges} - {None}) >= 3
            assert {a.params.k for a in arms if hasattr(a.params, "k")} == {8}, "one draft length: the cap is not what differs"
    with pytest.raises(ConfigError, match="compare.arms.aj_q25"):  # AutoJudge is greedy-only: said for its arm
        job = ["experiment=lossy_frontier", "generation.temperature=0.7"]
        compose_arms(compose_cfg(job), job, compose_cfg)


@pytest.mark.slow
def test_frontier_experiment_smoke_on_tiny_random(tmp_path):
    import pandas as pd

    from conftest import run_py

    small = ["model=tiny_random", "dataset.max_samples=2", "generation.max_new_tokens=8", "generation.warmup=0",
             "hardware.num_threads=1", "+dataset.truncate=left", f"paths.output_dir={tmp_path}"]  # tiny context: 512
    run_py(["-m", "experiment=lossy_frontier", "compare.only=[baseline,sps,typical_09,topk_2,ratio_30]", *small])
    run_py(["-m", "experiment=lossy_frontier", "dataset=arithmetic", "generation.temperature=0.7",
            "compare.only=[baseline,ratio_30]", *small])  # a sampled comparison too
    files = sorted((tmp_path / "sweeps" / "lossy_frontier").glob("*/records.parquet"))
    rows = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert len(files) == 3 and (rows.status == "ok").all() and len(rows) == 2 * 5 * 2 + 2 * 2
    assert set(rows.arm) == {"baseline", "sps", "typical_09", "topk_2", "ratio_30"}
    lossy = rows[rows.method == "lossy"]
    metrics = lossy.metrics_json.map(json.loads)
    assert set(metrics.map(lambda m: m["rule"])) == {"typical", "topk", "ratio"}
    assert metrics.map(lambda m: m["rule_accepted"] >= 0 and "rule_accept_rate" in m).all()
    assert rows.task_check.notna().all()  # both datasets are checked
