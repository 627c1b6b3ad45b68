"""SpecExec (method=specexec): tree drafting, one-pass tree verification, KV rollback, metrics and
config checks. Exactness against the target distribution: test_losslessness."""

from __future__ import annotations

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
from toy_models import assert_cache_is_prefill_of



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
     ("method.parallel_branches=0", "method.parallel_branches"), ("method.max_depth=0", "method.max_depth")],
)
def test_bad_specexec_params_are_one_config_error_line(override, field):
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        validate(compose_cfg(["model=tiny_random", "method=specexec", override]))


@pytest.mark.parametrize("width,thr,temp", [(1, 0.0, 1.0), (4, 0.0, 0.7), (3, 0.01, 1.0)])
def test_a_smaller_budget_builds_the_first_nodes_of_a_larger_tree(tiny64, one_thread, width, thr, temp):
    """budget=auto reads what a budget-b tree would have accepted off a larger tree (spsamp.cost_model.
    AcceptedByBudget): that holds only if best-first growth makes the b-node tree a prefix of the big one."""
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
