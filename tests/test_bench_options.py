"""The benchmark script's own options and report lines (no model is loaded): `--draft-variant` and `--budgets` parsing, row names, the time split."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "scripts" / "bench_lossless.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_lossless", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_draft_variant_parses_name_and_every_override(bench):
    assert bench.parse_variant("int8=++model.draft.quantization=int8_dynamic") == ("int8", ("++model.draft.quantization=int8_dynamic",))
    assert bench.parse_variant("bf16=model.draft.quantization=null;hardware.cpu_linear=aten;") == (
        "bf16", ("model.draft.quantization=null", "hardware.cpu_linear=aten"))


def test_stop_below_items_are_probabilities_kept_as_written(bench):
    assert bench.parse_stop("0.4") == "0.4" and bench.parse_stop(".25") == ".25"


def test_lookup_items_are_positive_integers(bench):
    assert bench.parse_lookup("10") == 10 and bench.parse_lookup("1") == 1


# (parser, bad item, what its one line says after "bench_lossless: ")
BAD_ITEMS = [
    *(("parse_variant", bad, "--draft-variant {!r}: write NAME=OVERRIDE") for bad in ["int8", "=model.draft.quantization=null", "int8=", "in t8=x=1", "8bit=x=1"]),
    *(("parse_stop", bad, "--stop-below item {!r}: write probabilities in (0, 1)") for bad in ["0", "1", "1.5", "-0.2", "often", ""]),
    *(("parse_lookup", bad, "--lookup item {!r}: write integers >= 1") for bad in ["0", "-3", "2.5", "ten", ""]),
]


@pytest.mark.parametrize("parser,bad,says", BAD_ITEMS, ids=lambda v: repr(v) if isinstance(v, str) else None)
def test_a_bad_option_item_fails_in_one_line_saying_the_form(bench, parser, bad, says):
    with pytest.raises(SystemExit) as err:
        getattr(bench, parser)(bad)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("bench_lossless: " + says.format(bad))


def test_a_variant_row_keeps_its_tree_budget(bench):
    assert bench.tree_budget("specexec_b32@int8") == 32
    assert bench.tree_budget("specexec_b16x4@bf16") == 16
    assert bench.tree_budget("specexec_bauto@int8") is None and bench.tree_budget("sps_k4@int8") is None
    assert bench.tree_budget("specexec_b32x16c@int8") == 32 and bench.tree_budget("specexec_b8c") == 8  # grow=cost rows
    assert bench.tree_budget("specexec_b32x16c_look10@int8") == 32 and bench.tree_budget("specexec_b8c_look4") == 8  # with lookup


def test_budgets_parse_size_width_and_grow(bench):
    assert bench.parse_budget("16", 4) == (16, 4, "budget")
    assert bench.parse_budget("32x16", 4) == (32, 16, "budget")
    assert bench.parse_budget("32x16c", 4) == (32, 16, "cost") and bench.parse_budget("8c", 2) == (8, 2, "cost")


@pytest.mark.parametrize("bad", ["x4", "16x", "16xc", "sixteen", "16cc", "0", "8x0", "-4"])
def test_bad_budget_fails_in_one_line_saying_the_form(bench, bad):
    with pytest.raises(SystemExit) as err:
        bench.parse_budget(bad, 4)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"bench_lossless: --budgets item {bad!r}: write B, BxW")


def test_time_split_prices_each_term_per_step_in_baseline_tokens(bench):
    from types import SimpleNamespace

    from spsamp.cost_model import Costs, VerifyCost

    acc: dict[str, float] = {}
    for _ in range(2):  # two rows of 10 steps each: 1 s drafting, 2 s verifying, 0.5 s the rest, after
        # a 0.3 s target prefill and a 0.1 s draft prefill (first token at 0.4 s)
        st = SimpleNamespace(extra={"draft_time_s": 1.1, "target_time_s": 2.3}, target_calls=11, draft_calls=41, proposed=40)
        bench.add_split(acc, st, seconds=3.9, ttft=0.4, prefill=0.3)
    assert acc == pytest.approx({"decode": 7.0, "draft": 2.0, "target": 4.0, "steps": 20, "passes": 80, "nodes": 80})
    costs = Costs(c=0.2, v=VerifyCost({1: 1.0, 4: 1.2, 8: 1.6}), vd=VerifyCost({1: 1.0}), target_pass_s=0.08)
    head, line = bench.split_lines({"sps_k4": acc}, costs, unit_s=0.1)  # a baseline decode token: 100 ms
    assert "(100 ms; the cost probe's 1-token target pass: 0.80)" in head
    # per step: 0.1 s drafting = 1.00 token, 0.2 s verifying = 2.00, 0.05 s rest = 0.50; 4 passes, 5 tokens
    assert line == "- sps_k4: draft 1.00 (4.0 passes; c x passes = 0.80), verify 2.00 (5.0 tokens; v = 1.30), rest 0.50 (0)"
    # a draft variant's row is priced at that draft's own c, the preset's rows at the probe's
    _, main, twin = bench.split_lines({"sps_k4": acc, "sps_k4@bf16": acc}, costs, unit_s=0.1, variant_c={"": 0.2, "@bf16": 0.4})
    assert "c x passes = 0.80" in main and twin.startswith("- sps_k4@bf16: draft 1.00 (4.0 passes; c x passes = 1.60)")
    # a row that priced the loop's own work (k=auto, grow=cost) says what it charged
    _, auto = bench.split_lines({"sps_kauto": acc}, costs, unit_s=0.1, rest={"sps_kauto": 0.031})
    assert auto.endswith("rest 0.50 (0.031)")


_HEADLINE = Path(__file__).resolve().parent.parent / "scripts" / "bench_headline.sh"


@pytest.mark.parametrize("env, args, message", [
    ({"ROWS": "baseline"}, [], "ROWS and TEMPS need SUFFIX"),
    ({"TEMPS": "0.7"}, [], "ROWS and TEMPS need SUFFIX"),
    ({"DRAFT_VARIANT": "fp8"}, [], "unknown DRAFT_VARIANT 'fp8'"),
    ({}, ["coding", "mt_bnch"], "unknown set 'mt_bnch'"),  # a later bad name stops it before the first bench
])
def test_headline_script_refuses_bad_input_in_one_line_before_any_bench(tmp_path, env, args, message):
    import os
    import subprocess

    ran = tmp_path / "ran"
    fake_python = tmp_path / "python"  # stands in for the bench: leaves a mark if anything got that far
    fake_python.write_text(f"#!/bin/sh\ntouch {ran}\n")
    fake_python.chmod(0o755)
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(_HEADLINE), *args], env={**os.environ, "PY": str(fake_python), "OUT": str(out), **env},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"bench_headline.sh: {message}") and proc.stderr.count("\n") == 1
    assert not ran.exists() and not out.exists()  # nothing ran, no table dir was made


def test_auto_prediction_is_pooled_over_prompts_as_the_measurement_is(bench):
    """A short prompt that was predicted fast must not count as much as a long one: the bench pools
    k=auto's prediction as tokens over cost, and says its tokens term beside the measured one."""
    rows = [{"auto_steps": 10, "auto_predicted_step_tokens": 8.0, "auto_predicted_step_cost": 2.0, "auto_predicted_speedup": 4.0},
            {"auto_steps": 30, "auto_predicted_step_tokens": 4.0, "auto_predicted_step_cost": 2.0, "auto_predicted_speedup": 2.0}]
    pred, terms = bench.pooled_prediction(rows, 5.5)
    assert pred == pytest.approx((80 + 120) / (20 + 60)) and "5.00 tokens per step, measured 5.50" in terms and "2.00 T1" in terms
    old = [{"auto_predicted_speedup": 4.0}, {"auto_predicted_speedup": 2.0}]  # rows from before the terms: their mean
    assert bench.pooled_prediction(old, 5.5) == (3.0, "")


def test_lookup_states_line_reads_states_not_yet_trusted(bench):
    row = {"auto_lookup_share": 0.5, "auto_units_per_token_hit": 0.25, "auto_units_per_token_miss": None,
           "auto_alpha_hit": 0.97, "auto_alpha_miss": None}
    line = bench.lookup_states(row)
    assert "50% of steps" in line and "0.25 with, - without" in line and "alpha 0.970 / -" in line
    assert bench.lookup_states({"auto_alpha": 0.9}) == ""


def test_prediction_is_also_read_in_the_rows_own_t1(bench):
    rows = [{"auto_t1_mean_s": 0.25}, {"auto_t1_mean_s": 0.35}]
    assert bench.own_unit_error(rows, "auto", 3.3, 10.0) == "; 3.00 tokens per T1 of its own (error +10%)"
    assert bench.own_unit_error([{"auto_t1_mean_s": None}], "auto", 3.3, 10.0) == ""


def test_rows_are_timed_in_abba_order(bench):
    """Every other prompt reverses the row order, so each row's mean position over two prompts is the same."""
    methods = {"baseline": 0, "sps": 1, "specexec": 2}
    order = [[m for m, _ in bench.counterbalanced(methods, i)] for i in range(4)]
    assert order == [["baseline", "sps", "specexec"], ["specexec", "sps", "baseline"]] * 2
    positions = {m: sum(o.index(m) for o in order[:2]) for m in methods}
    assert len(set(positions.values())) == 1, positions


def test_auto_trace_reads_the_lines_k_auto_writes(caplog):
    """The trace summariser parses what AutoSized logs at DEBUG (the two must not drift apart)."""
    import logging
    import types

    import torch

    from spsamp import cost_model as cm
    from spsamp.drafting.autosize import AutoSized
    from spsamp.proposals import Proposal

    spec = importlib.util.spec_from_file_location("auto_trace", _PATH.parent / "auto_trace.py")
    trace = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trace)

    class Chain:
        needs_model = True

        def propose(self, st, size, max_depth, hidden):
            return Proposal.chain(torch.arange(1, size + 1), draft_calls=size)

    drafter = AutoSized(Chain())
    drafter.set_costs(cm.Costs(c=0.1, v=cm.VerifyCost({}), vd=cm.VerifyCost({})))
    drafter.auto.t1_every = 5  # plain steps 1, 6 and 11: the last two after the verify unit is trusted
    st = types.SimpleNamespace(seq=[0], draft_s=0.0, target_s=0.0, rest_s=0.0, gen=types.SimpleNamespace(temperature=0.7))
    with caplog.at_level(logging.DEBUG, logger="spsamp.drafting.autosize"):
        for _ in range(12):
            k = drafter.size(st)
            tokens = drafter.propose(st, k, k, False).tokens.tolist()
            st.seq += tokens + [99]  # all kept, plus a bonus token
            st.draft_s, st.target_s = st.draft_s + 0.01 * k, st.target_s + 0.25
        drafter.metrics()
    lines = [f"{int(r.relativeCreated)} {r.getMessage()}" for r in caplog.records]
    steps = [line for line in lines if " step of" in line and "plain" not in line]
    assert steps, "k=auto wrote no step lines at DEBUG"
    summary, plain = trace.summarise(lines)
    assert summary.startswith("k=auto") and "T=0.7" in summary and f"n={len(steps):3d}" in summary
    # every pass 250 ms, every verify unit (v = 1) 250 ms: the ratio T1 is priced with
    assert plain.startswith("k=auto") and "plain steps n=  2: pass 250.0 ms, verify unit 250.0 ms, pass / unit 1.000" in plain
