"""SpecExec (method=specexec): tree drafting, one-pass tree verification, KV rollback, metrics and
config checks. Exactness against the target distribution: test_losslessness."""

from __future__ import annotations

import weakref

import pytest
import torch

from conftest import compose_cfg
from spsamp.acceptance.tree import tree_descend
from spsamp.config import ConfigError, GenerationConfig, validate
from spsamp.decoders.specexec import SpecExecDecoder
from spsamp.drafting.tree import TreeDrafter
from spsamp.loop import DecodeStats, Decoding
from spsamp.models import CausalLM, load_model
from spsamp.proposals import Proposal
from spsamp.verification import verify
from toy_models import Spy, assert_cache_is_prefill_of, priced



@pytest.fixture(scope="module")
def tiny64():
    run, _ = validate(compose_cfg(["model=tiny_random", "hardware.dtype=float64"]))
    return load_model(run.model.target, run.hardware), load_model(run.model.draft, run.hardware)


PROMPT = [7, 8, 9, 10, 11]


def state(draft, gen, seq=PROMPT, vocab=128):
    """The part of a decoding state a drafter reads (spsamp.loop.Decoding)."""
    return Decoding(target=None, draft=draft, gen=gen, rng=None, timer=None, stats=DecodeStats(), tokens=[],
                    seq=list(seq), vocab=vocab, eos_ids=set())


def branch(prop: Proposal, i: int) -> list[int]:
    """Tokens on the path root -> node i (root excluded)."""
    toks, parents = prop.tokens.tolist(), prop.parents.tolist()
    out = []
    while i >= 0:
        out.append(toks[i])
        i = parents[i]
    return out[::-1]


# Tolerance: float64 models whose eager attention takes the softmax in float32 (see
# toy_models.assert_cache_is_prefill_of): a tree pass and a chain pass agree to ~1e-7 in logits.
LOGIT_ATOL = 1e-5


def test_one_pass_tree_logits_equal_separate_branch_forwards(tiny64, one_thread):
    target, draft = tiny64
    gen = GenerationConfig(temperature=0.3)  # a sharper draft grows a deeper tree
    draft.prefill(torch.tensor(PROMPT[:-1]))
    prop = TreeDrafter(budget=20, parallel_branches=3, branch_prune_threshold=0.0, max_depth=4).propose(state(draft, gen), 20, 99, False)
    assert not prop.is_chain and prop.size == 20 and prop.stats.depth >= 3
    target.prefill(torch.tensor(PROMPT[:-1]))
    logits = verify(target, PROMPT[-1], prop).logits
    assert logits.shape == (21, 128)
    fresh = CausalLM(target.model, target.tokenizer, "fresh")
    fresh.forward(torch.tensor(PROMPT[:-1]))
    root = fresh.forward(torch.tensor([PROMPT[-1]])).logits[-1]
    assert (logits[0] - root).abs().max() < LOGIT_ATOL
    for i in range(prop.size):
        fresh.crop(len(PROMPT) - 1)
        want = fresh.forward(torch.tensor([PROMPT[-1]] + branch(prop, i))).logits[-1]
        gap = (logits[i + 1] - want).abs().max().item()
        assert gap < LOGIT_ATOL, f"node {i} (depth {int(prop.depths()[i])}): tree logits differ by {gap:.2e}"


def test_tree_drafter_respects_budget_depth_and_threshold(tiny64, one_thread):
    _, draft = tiny64
    gen = GenerationConfig(temperature=1.0)
    for budget, pb, thr, depth in [(10, 1, 0.0, 3), (30, 4, 0.0, 2), (30, 2, 0.02, 6)]:
        draft.prefill(torch.tensor(PROMPT[:-1]))
        prop = TreeDrafter(budget, pb, thr, depth).propose(state(draft, gen), budget, 99, False)
        st = prop.stats
        parents = prop.parents.tolist()
        assert prop.size <= budget and st.depth <= depth
        assert all(par < i for i, par in enumerate(parents)), "parents must precede children"
        pairs = list(zip(parents, prop.tokens.tolist()))
        assert len(set(pairs)) == len(pairs), "duplicate child"
        # one root pass plus one pass per expansion round of at most pb nodes
        assert 1 + -(-st.expanded // pb) <= st.draft_calls <= 1 + st.expanded
        if thr > 0:
            assert st.pruned > 0  # flat random drafts: many children fall under 2 %
        # only the root pass and the expanded nodes are in the draft cache
        assert draft.cache_len == len(PROMPT) + st.expanded


def test_tree_descend_walks_while_the_target_sample_is_a_child():
    # tree: root -> 3 (node 0) -> 4 (node 1); root -> 2 (node 2)
    tokens, parents = [3, 4, 2], [-1, 0, -1]
    q = torch.nn.functional.one_hot(torch.tensor([3, 4, 1, 0]), 5).double()  # rows: root, n0, n1, n2
    assert tree_descend(tokens, parents, q, None) == ([0, 1], 1)  # leaf reached: bonus from node 1's row
    q[0] = torch.nn.functional.one_hot(torch.tensor(2), 5)
    assert tree_descend(tokens, parents, q, None) == ([2], 0)
    q[0] = torch.nn.functional.one_hot(torch.tensor(1), 5)
    assert tree_descend(tokens, parents, q, None) == ([], 1)  # miss at the root


def test_kv_caches_equal_fresh_prefill_after_tree_steps(tiny64, one_thread):
    target, draft = tiny64
    twin = CausalLM(target.model, target.tokenizer, "twin")
    hits = misses = 0
    for d, params, temp, max_new in [
        (draft, dict(budget=12, parallel_branches=3), 2.0, 19),
        (twin, dict(budget=8, parallel_branches=2, max_depth=3), 1.0, 25),
        (draft, dict(budget=5, parallel_branches=1, branch_prune_threshold=0.05), 0.0, 11),
        (twin, dict(budget=16, parallel_branches=4), 0.0, 30),
    ]:
        gen = GenerationConfig(max_new_tokens=max_new, temperature=temp)
        out = SpecExecDecoder(**params).generate(target, d, torch.tensor(PROMPT), gen, torch.Generator().manual_seed(0))
        seq = PROMPT + out.tokens
        assert_cache_is_prefill_of(target, seq[:-1])
        assert_cache_is_prefill_of(d, seq[: d.cache_len])
        assert d.cache_len >= len(seq) - 1 - params.get("max_depth", 8)
        st = out.stats
        assert st.steps == len(st.accepted_lengths) == st.target_calls - 1
        hits += st.accepted
        misses += st.rejections
        extra = st.extra
        assert extra["tree_size_mean"] <= params["budget"] and 0 <= extra["branch_prune_rate"] <= 1
        assert extra["max_active_branches"] >= 1 and extra["effective_parallelism"] <= params["parallel_branches"]
        if extra["cache_hit_rate"] is not None:
            assert 0 <= extra["cache_hit_rate"] <= 1
    assert hits > 0 and misses > 0


@pytest.mark.parametrize(
    "override, field",
    [("method.budget=0", "method.budget"), ("method.branch_prune_threshold=1.5", "method.branch_prune_threshold"),
     ("method.parallel_branches=0", "method.parallel_branches"), ("method.max_depth=0", "method.max_depth"),
     ("method.lookup=-1", "method.lookup"), ("method.lookup_min_ngram=4", "method.lookup_min_ngram")],
)
def test_bad_specexec_params_are_one_config_error_line(override, field):
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        validate(compose_cfg(["model=tiny_random", "method=specexec", override]))


@pytest.mark.parametrize("width,thr,temp", [(1, 0.0, 1.0), (4, 0.0, 0.7), (3, 0.01, 1.0)])
def test_a_smaller_budget_builds_the_first_nodes_of_a_larger_tree(tiny64, one_thread, width, thr, temp):
    """Best-first growth makes the b-node tree a prefix of a larger budget's (the module doc's claim)."""
    _, draft = tiny64
    gen = GenerationConfig(temperature=temp)
    big = None
    for b in (30, 17, 8, 1):
        draft.prefill(torch.tensor(PROMPT[:-1]))
        prop = TreeDrafter(30, width, thr, 6).propose(state(draft, gen), b, 99, False)
        if big is None:
            big = prop
            assert big.size == 30 or thr > 0  # pruning may leave fewer candidates than the budget
            assert big.stats.depth >= 2
        else:
            assert prop.size == min(b, big.size)
            assert prop.tokens.tolist() == big.tokens.tolist()[:b] and prop.parents.tolist() == big.parents.tolist()[:b]


# ---- method.lookup: looked-up tokens ride along in the tree's draft passes ------------------------


@pytest.mark.parametrize("params,temp", [(dict(budget=16, parallel_branches=4), 0.0), (dict(budget=12, parallel_branches=2, max_depth=5), 1.0),
                                         (dict(budget=24, parallel_branches=3, branch_prune_threshold=0.01), 0.7)])
def test_lookup_builds_the_same_tree_in_fewer_passes(tiny64, one_thread, params, temp):
    """The tree is the budget best nodes of the draft's ranking however its nodes were reached, so
    in float64 a tree grown with lookup equals the one grown without, step by step — a guess
    node's row read at a wrong position or through a wrong mask would rank its children otherwise —
    while guess nodes spare passes; after the decode both caches are fresh prefills (accepted guess
    nodes' draft KV entries are kept, not recomputed)."""
    target, _ = tiny64
    twin = CausalLM(target.model, target.tokenizer, "twin")  # the target's weights: its trees follow the output's loops
    gen = GenerationConfig(max_new_tokens=40, temperature=temp)
    runs = []
    for lookup in (0, 4):
        dec = SpecExecDecoder(**params, lookup=lookup)
        dec.drafter = Spy(dec.drafter)
        out = dec.generate(target, twin, torch.tensor(PROMPT), gen, torch.Generator().manual_seed(0))
        seq = PROMPT + out.tokens
        assert_cache_is_prefill_of(target, seq[:-1])
        assert_cache_is_prefill_of(twin, seq[: twin.cache_len])
        runs.append((out, dec.drafter.props))
    (plain, plain_props), (cascade, cascade_props) = runs
    assert cascade.tokens == plain.tokens and len(cascade_props) == len(plain_props)
    for a, b in zip(plain_props, cascade_props):
        assert b.tokens.tolist() == a.tokens.tolist() and b.parents.tolist() == a.parents.tolist()
        assert b.draft_calls <= a.draft_calls
        if b.size:  # what each pass fed (what grow=cost prices at vd(width)): the root, every batch node, every guess token
            assert len(b.pass_widths) == b.draft_calls and sum(b.pass_widths) == 1 + b.stats.expanded + b.stats.guessed
    kept = sum(p.stats.guess_kept for p in cascade_props)
    assert 0 < kept and cascade.stats.extra["lookup_kept"] == kept <= cascade.stats.extra["lookup_offered"]
    assert cascade.stats.draft_calls < plain.stats.draft_calls, "no pass was spared"
    assert cascade.stats.extra["cache_hit_rate"] > 0


def test_lookup_guess_past_the_depth_cap_is_not_fed(tiny64, one_thread):
    """A guess never runs deeper than the tree may: the root pass feeds at most max_depth tokens."""
    target, _ = tiny64
    twin = CausalLM(target.model, target.tokenizer, "twin")
    seq = [3, 4, 5, 6, 7, 8, 9, 3, 4]  # "3 4" recurs: the lookup offers 5 6 7 8 9 ...
    twin.prefill(torch.tensor(seq[:-1]))
    prop = TreeDrafter(8, 2, 0.0, 2, lookup=6, lookup_ngram=2, lookup_min_ngram=2).propose(
        state(twin, GenerationConfig(), seq=seq), 8, 99, False)
    assert prop.stats.depth <= 2 and prop.stats.guessed >= 2
    assert prop.stats.guessed <= 2 * prop.stats.draft_calls  # each pass fed at most max_depth - depth(anchor) guesses


# ---- method.grow=cost ----------------------------------------------------------------------------


def test_grow_cost_sizes_the_tree_from_the_prices(tiny64, one_thread):
    _, draft = tiny64
    gen = GenerationConfig(temperature=0.3)  # a sharp draft: a deep likely chain plus unlikely siblings

    def grow(c, v, vd, budget=24):
        draft.prefill(torch.tensor(PROMPT[:-1]))
        prop = priced(TreeDrafter(budget, 4, 0.0, 6, grow="cost"), c, v, vd).propose(state(draft, gen), budget, 99, False)
        assert draft.cache_len == len(PROMPT) + prop.stats.expanded  # only what was expanded was fed
        return prop

    full = TreeDrafter(24, 4, 0.0, 6)
    draft.prefill(torch.tensor(PROMPT[:-1]))
    paper = full.propose(state(draft, gen), 24, 99, False)
    # nearly free drafting and verification: as the paper's rule, every pass and all 24 nodes
    cheap = grow(1e-4, {}, {})
    assert cheap.size == 24 and cheap.stats.cut == 0 and cheap.tokens.tolist() == paper.tokens.tolist()
    # a draft pass as dear as a target pass: the root pass only; verification is free, so all
    # 24 of the root's likeliest children are verified
    dear = grow(1.0, {}, {})
    assert dear.draft_calls == 1 and dear.stats.depth == 1 and dear.size == 24
    # steep verification (v(n) = 1 + n / 21): the likely nodes are drafted, the unlikely siblings cut
    steep = grow(0.05, {64: 4.0}, {})
    assert steep.stats.cut > 0 and steep.size < 24 and steep.stats.depth >= 2
    assert all(par < i for i, par in enumerate(steep.parents.tolist()))  # what is left is still a tree
    # passes priced by width: flat, they expand several nodes each; a second node tripling the
    # pass's price, one node per pass
    wide, narrow = grow(0.05, {64: 2.0}, {}), grow(0.05, {64: 2.0}, {2: 3.0, 64: 200.0})
    assert wide.stats.expanded > wide.draft_calls - 1
    assert narrow.draft_calls >= 3 and narrow.stats.expanded == narrow.draft_calls - 1


def test_grow_cost_sizes_trees_with_the_c_the_run_measured(tiny64, one_thread):
    """A nearly free draft by the probe grows the full tree; once the row's own passes say a draft
    unit costs as much as a verify unit, growth stops at the root's children."""
    from spsamp.proposals import Step

    _, draft = tiny64
    gen = GenerationConfig(temperature=0.3)
    drafter = TreeDrafter(24, 4, 0.0, 6, grow="cost")
    drafter.costs = priced(TreeDrafter(24, 4, 0.0, 6, grow="cost"), 1e-4, {}, {}).costs  # learning priors stay the defaults
    draft.prefill(torch.tensor(PROMPT[:-1]))
    st = state(draft, gen)
    drafter.start(st)
    prop = drafter.propose(st, 24, 99, False)
    assert prop.size == 24 and prop.draft_calls > 1  # the probe's c: nearly free, every pass
    units = sum(drafter.costs.vd(w) for w in prop.pass_widths)
    for _ in range(20):  # the row's steps: 0.2 s per draft unit, 0.2 s per verify unit
        drafter.observe(Step(prop, 0, 0.2 * units, 0.2 * drafter.costs.v(prop.size + 1), 0.0))
    assert drafter.sizer.cost.c == pytest.approx(1.0, rel=0.01)
    draft.prefill(torch.tensor(PROMPT[:-1]))
    dear = drafter.propose(state(draft, gen), 24, 99, False)
    assert dear.draft_calls == 1 and dear.stats.depth == 1


def test_grow_cost_learns_what_the_target_accepts_and_reports_it(tiny64, one_thread):
    target, draft = tiny64
    gen = GenerationConfig(max_new_tokens=24, temperature=0.0)
    dec = SpecExecDecoder(budget=12, parallel_branches=3, grow="cost")
    priced(dec.drafter, 0.1, {16: 1.5}, {})
    out = dec.generate(target, draft, torch.tensor(PROMPT), gen, torch.Generator())
    extra = out.stats.extra
    assert 0 <= extra["tree_cut_mean"] <= 12 and extra["tree_size_mean"] <= 12
    # the random tiny draft rarely agrees with the target: the calibration has moved below 1
    assert extra["sizing_calibration"] < 1.0
    assert_cache_is_prefill_of(target, (PROMPT + out.tokens)[:-1])


def test_grow_cost_measures_the_costs_once_in_prepare(tiny64, monkeypatch, one_thread):
    from spsamp import cost_model

    target, draft = tiny64
    calls = []
    monkeypatch.setattr(cost_model, "_PROBED", weakref.WeakKeyDictionary())
    real = cost_model.measure_costs
    monkeypatch.setattr(cost_model, "measure_costs", lambda *a, **kw: calls.append(1) or real(*a, widths=(1, 2), draft_widths=(1, 2), repeats=1))
    decs = [SpecExecDecoder(budget=8, grow="cost") for _ in range(2)]
    for dec in decs:
        dec.prepare(target, draft, None)
    assert len(calls) == 1 and decs[0].drafter.costs is decs[1].drafter.costs  # one probe per model pair
    assert target.cache_len == 0 and draft.cache_len == 0  # the probe leaves both models empty
    plain = SpecExecDecoder(budget=8)
    plain.prepare(target, draft, None)
    assert plain.drafter.costs is None and len(calls) == 1  # the paper's rule needs no costs


@pytest.mark.parametrize("override, match", [(["method.grow=fast"], r"^method.grow: must be budget or cost"),
                                             (["method.budget=auto"], r"^method.budget: auto is gone — use method.grow=cost"),
                                             (["method.grow=cost", "method.budget=auto"], r"^method.budget: auto is gone")])
def test_bad_grow_is_one_config_error_line(override, match):
    with pytest.raises(ConfigError, match=match):
        validate(compose_cfg(["model=tiny_random", "method=specexec", *override]))


def test_grow_cost_runs_end_to_end_and_rows_from_before_keep_their_keys(tmp_path, one_thread):
    import json

    from spsamp.config import identity_params
    from spsamp.runner import JobInfo, run_job

    common = ["model=tiny_random", "++model.target.dtype=float64", "++model.draft.dtype=float64", "generation.max_new_tokens=12",
              "dataset.max_samples=2", "generation.warmup=0", "hardware.cpu_linear=aten"]
    rows = run_job(compose_cfg(common + ["method=specexec", "method.grow=cost", "method.budget=8"]), JobInfo(output_dir=str(tmp_path / "c"))).rows
    base = run_job(compose_cfg(common + ["method=baseline"]), JobInfo(output_dir=str(tmp_path / "b"))).rows
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    for r, b in zip(rows, base):
        assert r["generated_ids"] == b["generated_ids"] and r["param_grow"] == "cost"
        m = json.loads(r["metrics_json"])
        assert m["tree_size_mean"] <= 8 and m["sizing_predicted_speedup"] > 0 and m["sizing_calibration"] > 0
        assert 1 <= m["sizing_steps"] <= r["steps"] and m["sizing_c"] > 0 and m["sizing_verify_unit_s"] > 0
    # the grow param arrived after rows were written: at its default it is not part of a row's
    # identity (resumed dirs skip their finished rows), set to cost it is
    assert "grow" not in identity_params(SpecExecDecoder.Params())
    assert identity_params(SpecExecDecoder.Params(grow="cost"))["grow"] == "cost"


def test_grow_cost_calibration_is_accepted_over_the_drafts_own_expectation(tiny64, one_thread):
    from spsamp.proposals import Step

    _, draft = tiny64
    gen = GenerationConfig(temperature=0.3)
    drafter = priced(TreeDrafter(8, 4, 0.0, 4, grow="cost"), 1e-4, {}, {})  # nearly free: the same full tree every step
    for i in range(80):
        draft.prefill(torch.tensor(PROMPT[:-1]))
        st = state(draft, gen)
        if i == 0:
            drafter.start(st)
        prop = drafter.propose(st, 8, 99, False)
        drafter.observe(Step(prop, 1, 0.01, 0.01, 0.0))  # the target keeps one node, then a token of its own
    expected = prop.stats.expected
    assert prop.size == 8 and 0.3 < 1 / expected < 3 and abs(1 / expected - 1) > 0.1  # scaled or not would differ
    assert drafter.sizer.calibration == pytest.approx(1 / expected, rel=0.02)
