"""SpS (method=speculative): the acceptance rule, KV rollback, eos/max_new_tokens, vocab fitting,
config checks and a real Hydra sweep. Exactness against the target distribution: test_losslessness."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from conftest import compose_cfg, run_py
from spsamp.acceptance.rejection import fit_logits, fit_vocab, rejection_sampling
from spsamp.config import ConfigError, GenerationConfig, validate
from spsamp.decoders.base import truncate_at_eos
from spsamp.decoders.speculative import SpeculativeDecoder
from spsamp.models import load_model
from toy_models import ToyLM, assert_cache_is_prefill_of, spied



def onehot(ids, v=5):
    return torch.nn.functional.one_hot(torch.tensor(ids), v).double()


def test_rejection_sampling_at_temperature_zero_is_argmax_matching():
    draft = torch.tensor([1, 2, 3])
    p = onehot([1, 2, 3])
    # target agrees on the first two, then wants 4; bonus row irrelevant
    assert rejection_sampling(draft, p, onehot([1, 2, 4, 0]), None) == (2, 4)
    assert rejection_sampling(draft, p, onehot([1, 2, 3, 0]), None) == (3, 0)  # all kept + bonus
    assert rejection_sampling(draft, p, onehot([4, 2, 3, 0]), None) == (0, 4)


def test_rejection_sampling_residual_excludes_overcovered_tokens():
    # p puts mass on token 0, q on {0, 1}; after rejecting 0 only token 1 can come out
    p = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    rng = torch.Generator().manual_seed(0)
    outcomes = [rejection_sampling(torch.tensor([0]), p, q, rng) for _ in range(2000)]
    rejected = [tok for n, tok in outcomes if n == 0]
    assert rejected and set(rejected) == {1}
    assert 0.45 < 1 - len(rejected) / 2000 < 0.55  # accepted with probability q(0)/p(0) = 0.5


def test_vocab_fitting_pads_and_truncates_consistently():
    p = torch.tensor([0.5, 0.5])
    assert fit_vocab(p, 4).tolist() == [0.5, 0.5, 0.0, 0.0]
    assert fit_vocab(torch.ones(6), 4).shape[-1] == 4
    logits = fit_logits(torch.zeros(2), 3)
    assert logits[-1] == float("-inf") and fit_logits(torch.zeros(5), 3).shape[-1] == 3


def test_truncate_at_eos_handles_eos_and_budget():
    assert truncate_at_eos([5, 0, 7], {0}, 10) == ([5, 0], True)
    assert truncate_at_eos([5, 6, 7], {0}, 2) == ([5, 6], True)
    assert truncate_at_eos([5, 6, 0], {0}, 3) == ([5, 6, 0], True)
    assert truncate_at_eos([5, 6], {0}, 3) == ([5, 6], False)


def test_eos_inside_chunk_and_max_new_tokens_are_exact(one_thread):
    q, p = ToyLM(6, 11, 1.5, eos_ids=[0]), ToyLM(6, 11, 1.5, eos_ids=[0])  # twin draft: long chunks
    rng = torch.Generator().manual_seed(3)
    lengths = set()
    for max_new in (1, 2, 5):
        gen = GenerationConfig(max_new_tokens=max_new, temperature=1.0)
        for _ in range(200):
            out = SpeculativeDecoder(k=4).generate(q, p, torch.tensor([1]), gen, rng).tokens
            assert 1 <= len(out) <= max_new
            assert 0 not in out[:-1], "tokens after eos were kept"
            assert len(out) == max_new or out[-1] == 0
            lengths.add(len(out))
            assert q.cache_len == len(out)  # the target saw the prompt and all but the last token
    assert {1, 2, 3, 4, 5} <= lengths


@pytest.fixture(scope="module")
def tiny64():
    run, _ = validate(compose_cfg(["model=tiny_random", "hardware.dtype=float64"]))
    return load_model(run.model.target, run.hardware), load_model(run.model.draft, run.hardware)


def test_kv_caches_equal_fresh_prefill_after_accepts_and_rejects(tiny64, one_thread):
    target, draft = tiny64
    prompt = [7, 8, 9, 10]
    accepted = rejected = 0
    for k, temp, seed, max_new in [(3, 2.0, 0, 17), (5, 3.0, 1, 23), (2, 0.0, 2, 9), (4, 5.0, 3, 30)]:
        gen = GenerationConfig(max_new_tokens=max_new, temperature=temp)
        out = SpeculativeDecoder(k=k).generate(target, draft, torch.tensor(prompt), gen, torch.Generator().manual_seed(seed))
        seq = prompt + out.tokens
        assert_cache_is_prefill_of(target, seq[:-1])
        assert draft.cache_len >= len(seq) - 2  # at most the last two tokens are still to be fed
        assert_cache_is_prefill_of(draft, seq[: draft.cache_len])
        accepted += out.stats.accepted
        rejected += out.stats.rejections
        assert out.stats.steps == len(out.stats.accepted_lengths) == out.stats.target_calls - 1
        assert out.stats.draft_calls == 1 + out.stats.proposed
    assert accepted > 0 and rejected > 0, "the test should cover both accepted and rejected drafts"


@pytest.mark.parametrize("stop_below", [None, 0.3])
def test_lookup_cascade_drafts_the_same_chain_in_fewer_passes(tiny64, stop_below, one_thread):
    """method.lookup changes what a chain costs, not the chain: in float64, step by step, SpS with
    lookup proposes the plain chain's tokens, leaves the draft's KV cache as a fresh prefill would,
    and spends fewer draft passes where the draft kept guesses. Both report, for each node but the
    last, the draft's hidden state with that node as input, as one fresh pass computes it."""
    from spsamp.models import CausalLM

    target, _ = tiny64
    twin = CausalLM(target.model, target.tokenizer, "twin")  # the target's weights: its chains follow the output's loops
    gen = GenerationConfig(max_new_tokens=40)
    saved = 0
    for prompt in ([5, 6, 7], [40, 41, 42, 43, 44, 45], [80, 12, 33, 9]):
        runs = []
        for lookup in (0, 4):
            dec = spied(SpeculativeDecoder(k=6, lookup=lookup, stop_below=stop_below))
            dec.acceptance.needs_hidden = True  # ask for the draft's hidden states (AutoJudge's path)
            out = dec.generate(target, twin, torch.tensor(prompt), gen, torch.Generator())
            assert_cache_is_prefill_of(twin, (prompt + out.tokens)[: twin.cache_len])
            for seq, prop in zip(dec.drafter.prefixes, dec.drafter.props):
                if prop.size > 1:
                    fresh = CausalLM(target.model, target.tokenizer, "fresh")
                    want = fresh.forward(torch.tensor(seq + prop.tokens.tolist()[:-1]), hidden=True).hidden[len(seq) :]
                    assert prop.hidden is not None and torch.allclose(prop.hidden, want, atol=1e-6), f"lookup={lookup}: wrong hidden states"
            runs.append((out, dec.drafter.props))
        (plain, plain_props), (cascade, cascade_props) = runs
        assert cascade.tokens == plain.tokens
        assert len(plain_props) == len(cascade_props)
        for a, b in zip(plain_props, cascade_props):
            assert a.tokens.tolist() == b.tokens.tolist() and a.slots == b.slots
            assert b.draft_calls <= a.draft_calls and len(b.pass_widths) == b.draft_calls and a.pass_widths is None
        saved += plain.stats.draft_calls - cascade.stats.draft_calls
        if stop_below is None:  # every kept guess is a pass saved (a stop may drop a pass's kept guesses)
            assert cascade.stats.extra.get("lookup_kept", 0) == plain.stats.draft_calls - cascade.stats.draft_calls
            assert cascade.stats.extra.get("lookup_offered", 0) >= cascade.stats.extra.get("lookup_kept", 0)
            assert cascade.stats.extra.get("lookup_offered", 0) == sum(w - 1 for b in cascade_props for w in b.pass_widths)
    assert saved > 0, "no guess was ever kept: the cascade path was not exercised"


def test_options_added_later_keep_the_keys_of_rows_written_before_them():
    """stop_below and lookup arrived after speculative rows were written: at their defaults they are
    not part of a row's identity (a resumed dir skips its finished rows); set, they are."""
    from spsamp.config import identity_params

    assert identity_params(SpeculativeDecoder.Params()) == {"name": "speculative", "k": 4}
    assert identity_params(SpeculativeDecoder.Params(lookup=10))["lookup"] == 10
    assert identity_params(SpeculativeDecoder.Params(stop_below=0.4, lookup_ngram=2)).keys() >= {"stop_below", "lookup_ngram"}


def test_bad_k_is_one_config_error_line():
    with pytest.raises(ConfigError, match=r"^method\.k: must be an integer >= 1 or auto"):
        validate(compose_cfg(["model=tiny_random", "method=speculative", "method.k=0"]))


@pytest.mark.slow
def test_sweep_over_lossless_methods_writes_metrics(tmp_path):
    """A real multirun: baseline / speculative / specexec and the transformers references on tiny
    models; rows carry their metrics."""
    proc = run_py([
        "-m", "method=baseline,speculative,specexec,hf_generate,hf_assisted", "model=tiny_random", "generation.max_new_tokens=16",
        "dataset.max_samples=2", "generation.warmup=0", "hardware.num_threads=1", f"hydra.sweep.dir={tmp_path}/sweep",
    ])
    df = pd.concat([pd.read_parquet(p) for p in (tmp_path / "sweep").rglob("records.parquet")])
    assert set(df.method) == {"baseline", "speculative", "specexec", "hf_generate", "hf_assisted"} and (df.status == "ok").all()
    by = {m: g for m, g in df.groupby("method")}
    assert by["speculative"].param_k.notna().all()
    assert (by["speculative"].proposed > 0).all() and by["speculative"].acceptance_rate.notna().all()
    extra = json.loads(by["specexec"].metrics_json.iloc[0])
    assert {"tree_size_mean", "branch_prune_rate", "effective_parallelism", "cache_hit_rate", "max_active_branches"} <= set(extra)
    # lossless at T=0: same tokens as the baseline, prompt by prompt
    ids = {m: g.sort_values("prompt_id").generated_ids.map(list).tolist() for m, g in by.items()}
    assert ids["speculative"] == ids["baseline"] == ids["specexec"] == ids["hf_generate"] == ids["hf_assisted"]
    assert by["hf_assisted"].param_k.notna().all() and (by["hf_assisted"].draft_calls > 0).all()
    # the multirun ends with the summary table of the sweep dir (hydra callback)
    log = proc.stdout + proc.stderr
    assert "| config |" in log and "| speculative k=4 |" in log and "vs_hf_assisted" in log
