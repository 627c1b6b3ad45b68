"""AutoJudge (Garipov et al. 2025): mining labels, the judge, checkpoints, the acceptance rule, sweeps."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import compose_cfg, run_py
from spsamp.autojudge import checkpoint as ckpt
from spsamp.autojudge.checks import Continuation, FinalAnswer, extract_final_number, reconverges
from spsamp.autojudge.judge import roc_auc, train_judge
from spsamp.autojudge.mining import PrefixCache, mine_prompt
from spsamp.data.arithmetic import generate_problems
from spsamp.config import ConfigError, validate
from spsamp.decoders.autojudge import AutoJudgeDecoder, autojudge_accept
from spsamp.decoders.baseline import BaselineDecoder
from spsamp.models import load_model
from spsamp.models.adapter import Forward
from spsamp.data.chat import encode


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    # tiny models and LBFGS on 2 shared cores: extra threads only add contention
    yield


# ---- a constructed model pair: next token is a rule of the answer so far -------------------------

VOCAB = ["<eos>", "x", "y", "=", "1", "2", "3", ".", "!", "Q"]
ID = {c: i for i, c in enumerate(VOCAB)}


class ToyTok:
    def decode(self, ids, skip_special_tokens=True):
        return "".join(VOCAB[i] for i in ids if i != 0)


class ToyLM:
    """Greedy rule model: ``answer[i] = rule[i]`` by position after the prompt token ``Q``; its
    'hidden state' is the one-hot input token, so features are known exactly."""

    def __init__(self, rule: str):
        self.rule, self.tokens, self.eos_ids, self.tokenizer = rule, [], {0}, ToyTok()

    @property
    def cache_len(self):
        return len(self.tokens)

    def reset(self):
        self.tokens = []

    def crop(self, n):
        self.tokens = self.tokens[:n]

    def forward(self, ids, last_only=False, hidden=False, **_):
        start = len(self.tokens)
        self.tokens += ids.tolist()
        rows = []
        for t in range(start, len(self.tokens)):
            i = t  # answer index predicted at position t (the prompt is one token)
            nxt = ID[self.rule[i]] if i < len(self.rule) else 0
            rows.append(torch.nn.functional.one_hot(torch.tensor(nxt), len(VOCAB)).float() * 10)
        logits = torch.stack(rows)
        h = torch.nn.functional.one_hot(ids.reshape(-1), len(VOCAB)).float()
        if last_only:
            logits, h = logits[-1:], h[-1:]
        return Forward(logits=logits, hidden=h if hidden else None)


def test_mining_constructed_case_gives_expected_labels():
    # target answers "x=12."; the draft would say "y", "3" (at "2") and "!" (at ".")
    target, draft = ToyLM("x=12."), ToyLM("y=13!")
    q, p = PrefixCache(target), PrefixCache(draft)
    samples, original, final = mine_prompt(q, p, [ID["Q"]], 8, FinalAnswer(), target.tokenizer.decode)
    text = target.tokenizer.decode
    assert text(original) == "x=12."
    # y for x: same answer (0) and "y=12." becomes current; 3 for 2: answer 13 != 12 (1), kept;
    # ! for .: same answer (0)
    assert [(pos, VOCAB[d], label) for pos, d, label, _, _ in samples] == [(0, "y", 0), (3, "3", 1), (4, "!", 0)]
    assert text(final) == "y=12!"
    # features are the states with the draft token as input (one-hot of the token here)
    assert [int(h_q.argmax()) for *_, h_q in samples] == [ID["y"], ID["3"], ID["!"]]
    assert [int(h_p.argmax()) for *_, h_p, _ in samples] == [ID["y"], ID["3"], ID["!"]]


def test_checks():
    assert extract_final_number("so 3 + 4 = 7. The answer is 1,234.") == 1234.0
    assert extract_final_number("we get 5 then 12") == 12.0
    assert extract_final_number("no digits") is None
    # the statement wrapped as LaTeX / markdown, numbers after it
    assert extract_final_number("The answer is \\(\\boxed{3}\\). Check: 9 x 3 = 27 for 9 friends") == 3.0
    assert extract_final_number("The answer is **8**, not 10") == 8.0
    # mining stops a final_answer continuation once the statement is finished, not while its number could go on
    stop = FinalAnswer().stop
    assert stop("so 12. The answer is 12. ") and stop("The answer is **8**.\n") and stop("The answer is $\\boxed{8}$!")
    assert not stop("The answer is 12.") and not stop("The answer is 12") and not stop("The answer is 72 / 9")
    assert not stop("The answer is 1,2") and not stop("we get 12. Then 5.")
    a = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    # one extra token, then the same run of 4 ids: re-converges
    assert reconverges(a[3:], [42] + a[3:], window=8, match_len=4)
    assert not reconverges(a, [9, 9, 9, 9, 9, 9, 9, 9, 9], window=8, match_len=4)
    cont = Continuation(window=2, match_len=4, tau=0.8)
    assert cont(a, a[:2] + [50] + a[3:], 2, str) is False  # same tail after the swap
    assert cont(a, a[:2] + [50, 60, 61, 62, 63, 64, 65], 2, str) is True


def test_judge_reaches_high_auc_on_separable_set():
    g = torch.Generator().manual_seed(0)
    n, d = 400, 24
    y = (torch.rand(n, generator=g) < 0.3).double()
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x[:, :3] += 2.5 * y[:, None]  # three informative dims, the rest noise
    judge = train_judge(x[:300], y[:300], x[300:], y[300:])
    assert judge.stats["val_auc"] > 0.95, judge.stats
    assert judge.stats["train_samples"] == 300 and 0 < judge.stats["train_important_frac"] < 1
    assert len(judge.thresholds) == 5 and judge.thresholds == sorted(judge.thresholds)
    # the chosen C is the grid point with the best validation AUC
    best = max(judge.stats["search"], key=lambda s: s["val_auc"])
    assert judge.stats["C"] == best["C"] and len(judge.stats["search"]) == 14
    assert roc_auc(torch.tensor([0.1, 0.2, 0.9]), torch.tensor([0, 1, 1])) == 1.0
    assert roc_auc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])) == 0.5


def test_grouped_cv_auc_sees_signal_and_not_noise_and_holds_prompts_out():
    from spsamp.autojudge.judge import grouped_cv_auc

    g = torch.Generator().manual_seed(3)
    n, d = 240, 16
    prompts = [f"p{i // 6}" for i in range(n)]  # 40 prompts x 6 samples
    y = (torch.rand(n, generator=g) < 0.3).double()
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x[:, :2] += 2.0 * y[:, None]
    assert grouped_cv_auc(x, y, prompts, c=0.1) > 0.9
    # negative control: labels independent of the features give chance
    noise = (torch.rand(n, generator=g) < 0.3).double()
    assert abs(grouped_cv_auc(x, noise, prompts, c=0.1) - 0.5) < 0.12
    # a per-prompt shortcut (the label is a property of the prompt, the features name the prompt) is
    # learnable within a prompt but not across held-out prompts: grouped folds must not leak it
    pid = torch.tensor([i // 6 for i in range(n)])
    y_prompt = (torch.rand(40, generator=g) < 0.4).double()[pid]
    x_id = torch.nn.functional.one_hot(pid, 40).double() + 0.01 * torch.randn(n, 40, generator=g, dtype=torch.float64)
    assert grouped_cv_auc(x_id, y_prompt, prompts, c=1.0) < 0.65
    assert grouped_cv_auc(x, y, ["one"] * n, c=0.1) is None  # a single prompt: nothing to hold out


def test_judge_matches_sklearn_and_checkpoint_round_trip(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    g = torch.Generator().manual_seed(1)
    y = (torch.rand(200, generator=g) < 0.2).double()
    x = torch.randn(200, 6, generator=g, dtype=torch.float64) * torch.arange(1, 7) + 3
    x[:, 0] += 1.5 * y
    judge = train_judge(x[:150], y[:150], x[150:], y[150:])
    sc = StandardScaler().fit(x[:150].numpy())
    ref = LogisticRegression(C=judge.stats["C"], class_weight="balanced", max_iter=2000).fit(sc.transform(x[:150].numpy()), y[:150].numpy())
    want = ref.predict_proba(sc.transform(x[150:].numpy()))[:, 1]
    assert torch.allclose(judge.p_important(x[150:].float()), torch.from_numpy(want), atol=1e-4)
    path = tmp_path / "j.safetensors"
    ckpt.save(path, judge, {"target_model": "t"})
    side = json.loads((tmp_path / "j.safetensors.json").read_text())
    assert side["format"] == ckpt.FORMAT and side["val_auc"] == judge.stats["val_auc"] and side["thresholds"] == judge.thresholds
    assert side["classifier"]["C"] == judge.stats["C"] and side["threshold_quantiles"] == [0.1, 0.25, 0.5, 0.75, 0.9]
    again, _ = ckpt.load(path)
    assert torch.equal(again.p_important(x), judge.p_important(x))
    # an old-format (hand-trained) checkpoint is refused with the fix
    side["format"] = "spsamp-autojudge/1"
    (tmp_path / "j.safetensors.json").write_text(json.dumps(side))
    with pytest.raises(ConfigError, match="delete it to mine and train again"):
        ckpt.load(path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_judge_runs_on_the_features_device():
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(100, generator=g) < 0.3).double()
    x = torch.randn(100, 4, generator=g, dtype=torch.float64)
    x[:, 0] += 2 * y
    judge = train_judge(x[:80], y[:80], x[80:], y[80:])
    p = judge.p_important(x.float().cuda())
    assert p.device.type == "cuda" and torch.allclose(p.cpu(), judge.p_important(x.float()), atol=1e-6)


def test_accept_rule():
    nan = float("nan")
    d, g = [5, 6, 7, 8], [5, 9, 7, 1, 4]
    p = torch.tensor([nan, 0.2, nan, 0.7])
    assert autojudge_accept(d, g, p, 0.0) == (1, 9, 0, True)  # threshold 0: first mismatch -> target
    assert autojudge_accept(d, g, p, 0.5) == (3, 1, 1, True)  # 0.2 < 0.5 kept, 0.7 not
    assert autojudge_accept(d, g, p, 0.8) == (4, 4, 2, False)  # all kept + bonus token
    assert autojudge_accept(d, g, torch.tensor([nan, 1.0, nan, 1.0]), 1.0) == (4, 4, 2, False)


# ---- the decoder on tiny random Llamas ------------------------------------------------------------

MINING = ["method.importance_check=continuation", "method.mining_prompts=8", "method.mining_max_tokens=10", "hardware.num_threads=1"]


def _setup(tmp_path, extra=()):
    cfg = compose_cfg(["model=tiny_random", "method=autojudge", f"method.checkpoint={tmp_path}/judge.safetensors", "dataset.max_samples=3", *MINING, *extra])
    run, params = validate(cfg)
    target, draft = load_model(run.model.target, run.hardware), load_model(run.model.draft, run.hardware)
    return cfg, run, params, target, draft


def _decoder(params, **over):
    from dataclasses import asdict

    return AutoJudgeDecoder(**{**asdict(params), **over})


def _prompts(target, n=3):
    return [encode(target.tokenizer, [{"role": "user", "content": t}], False) for t in ("Hello there", "Count: 1 2 3", "Why?")][:n]


def test_thresholds_0_and_1_and_checkpoint_reuse(tmp_path):
    _, run, params, target, draft = _setup(tmp_path)
    dec = _decoder(params)
    dec.prepare(target, draft, run)
    assert not dec.reused and ckpt.exists(tmp_path / "judge.safetensors")
    meta = json.loads((tmp_path / "judge.safetensors.json").read_text())
    assert set(meta["split"]["judge_train_prompt_ids"]).isdisjoint(meta["split"]["judge_val_prompt_ids"])
    assert meta["training"]["train_samples"] > 0 and meta["target_model"] == "tiny-llama-target"
    mined, ids = ckpt.load_mined(tmp_path / "judge.safetensors")  # kept for refits without mining
    assert len(mined["labels"]) == meta["training"]["train_samples"] + meta["training"]["val_samples"] == meta["mining"]["mismatches"]
    assert set(ids) == set(meta["split"]["prompt_sha"]) and mined["features"].shape[1] == meta["feature_dim"]
    assert meta["mining"]["samples_per_minute"] > 0 and meta["mining"]["batch"] == 1
    gen = run.generation.__class__(max_new_tokens=20, temperature=0.0)
    rng = torch.Generator()
    base = BaselineDecoder()
    for ids in _prompts(target):
        ref = base.generate(target, None, ids, gen, rng).tokens
        dec.params.threshold = 0.0
        out0 = dec.generate(target, draft, ids, gen, rng)
        assert out0.tokens == ref  # no mismatch accepted: exactly the target's greedy output
        assert out0.stats.extra["judge_accepted"] == 0
        dec.params.threshold = 1.0
        out1 = dec.generate(target, draft, ids, gen, rng)
        s = out1.stats
        assert s.extra["mismatches_judged"] > 0 and s.extra["judge_accepted"] == s.extra["mismatches_judged"]
        assert s.accepted == s.proposed and s.rejections == 0 and s.extra["target_fallback_rate"] == 0
        assert sum(s.accepted_lengths) == len(out1.tokens) - 1
    # the threshold by the judge's validation quantile: the median of its validation P(important)
    by_q = _decoder(params, threshold_quantile=0.5)
    assert by_q.params.threshold_quantile == 0.5
    with pytest.raises(RuntimeError, match="prepare"):
        by_q.threshold  # noqa: B018 — resolved from the judge only
    by_q.prepare(target, draft, run)
    assert by_q.threshold == pytest.approx(dict(zip(meta["threshold_quantiles"], meta["thresholds"]))[0.5])
    out_q = by_q.generate(target, draft, _prompts(target)[0], gen, rng)
    assert out_q.stats.extra["threshold_quantile"] == 0.5 and out_q.stats.extra["threshold"] == by_q.threshold
    with pytest.raises(ConfigError, match="method.threshold_quantile: the judge keeps quantiles"):
        validate(compose_cfg(["model=tiny_random", "method=autojudge", "method.threshold_quantile=0.3"]))
    from spsamp.autojudge.judge import Judge

    no_val = Judge(kind="logreg", tensors=dict(dec.judge.tensors), stats={"threshold_quantiles": None}, thresholds=[])
    with pytest.raises(ConfigError, match="method.threshold_quantile: the judge .* has no validation quantiles .* set method.threshold"):
        by_q._quantile_threshold(no_val, tmp_path / "judge.safetensors")
    # a second decoder finds the checkpoint and decides identically at a mid threshold
    mid = sorted(meta["thresholds"])[2]
    dec.params.threshold = mid
    again = _decoder(params, threshold=mid)
    again.prepare(target, draft, run)
    assert again.reused
    for name, t in dec.judge.tensors.items():
        assert torch.equal(t, again.judge.tensors[name])
    for ids in _prompts(target):
        a, b = dec.generate(target, draft, ids, gen, rng), again.generate(target, draft, ids, gen, rng)
        assert a.tokens == b.tokens and a.stats.extra["judge_accepted"] == b.stats.extra["judge_accepted"]
        assert a.stats.accepted_lengths == b.stats.accepted_lengths


def test_wrong_checkpoint_and_temperature_refused(tmp_path):
    _, run, params, target, draft = _setup(tmp_path)
    _decoder(params).prepare(target, draft, run)
    side = tmp_path / "judge.safetensors.json"
    good = side.read_text()
    for key, value in (("target_model", "other-model"), ("target_hidden", 999), ("draft_hidden", 7)):
        meta = json.loads(good)
        meta[key] = value
        side.write_text(json.dumps(meta))
        with pytest.raises(ConfigError, match=f"trained for {key}="):
            _decoder(params).prepare(target, draft, run)
    side.write_text(good)
    with pytest.raises(ConfigError, match="method.mining_seed: checkpoint .* was made with mining_seed=1000"):
        _decoder(params, mining_seed=5).prepare(target, draft, run)
    with pytest.raises(ConfigError, match="feature_mode"):
        _decoder(params, features="target").prepare(target, draft, run)
    import dataclasses

    hot = dataclasses.replace(run, generation=dataclasses.replace(run.generation, temperature=0.7))
    with pytest.raises(ConfigError, match="generation.temperature"):
        _decoder(params).prepare(target, draft, hot)
    # and before any model loads: validate() refuses it
    with pytest.raises(ConfigError, match="generation.temperature: autojudge decodes greedily"):
        validate(compose_cfg(["model=tiny_random", "method=autojudge", "generation.temperature=0.7"]))


def test_config_and_eval_overlap(tmp_path):
    cfg = compose_cfg(["model=tiny_random", "method=autojudge", "paths.cache_dir=/c"])
    _, params = validate(cfg)
    assert params.checkpoint.startswith("/c/autojudge/tiny_random_") and "0.5" not in params.checkpoint
    for bad, field in (("method.threshold=1.5", "method.threshold"), ("method.importance_check=vibes", "method.importance_check"),
                       ("method.features=all", "method.features"), ("method.mining_source=file", "method.mining_file")):
        with pytest.raises(ConfigError, match=field):
            validate(compose_cfg(["model=tiny_random", "method=autojudge", bad]))
    # evaluating on the mining prompts is refused (split by prompt id / text)
    probs = generate_problems(4, seed=7)
    from spsamp.data.arithmetic import write_question_file

    qfile = write_question_file(probs, tmp_path / "q.jsonl")
    _, run, params, target, draft = _setup(tmp_path, ["dataset=mt_bench", f"dataset.path={qfile}", "method.mining_source=problems",
                                                      "method.mining_seed=7", "method.mining_prompts=4", "method.importance_check=final_answer"])
    # the source skips the evaluation prompts: the judge is mined on the next four problems of the stream
    dec = _decoder(params)
    dec.prepare(target, draft, run)
    assert sorted(dec.meta["split"]["prompt_sha"]) == sorted(f"arith-s7-{i}" for i in range(4, 8))
    # a judge mined before on prompts that an evaluation now uses is refused
    qfile2 = write_question_file(generate_problems(3, seed=7, start=4), tmp_path / "q2.jsonl")
    later = dataclasses.replace(run, dataset=dataclasses.replace(run.dataset, path=str(qfile2)))
    with pytest.raises(ConfigError, match="used to train the judge"):
        _decoder(params).prepare(target, draft, later)


@pytest.mark.slow
def test_threshold_sweep_trains_once(tmp_path):
    ck = tmp_path / "judge.safetensors"
    proc = run_py([
        "-m", "model=tiny_random", "method=autojudge", "method.threshold=0,0.5,1", f"method.checkpoint={ck}", *MINING,
        "generation.max_new_tokens=12", "dataset.max_samples=2", "generation.warmup=0", f"hydra.sweep.dir={tmp_path}/sweep",
    ])
    log = proc.stdout + proc.stderr
    assert log.count("judge saved to") == 1 and log.count("reusing judge") == 2
    rows = pd.concat([pd.read_parquet(p) for p in sorted(Path(tmp_path, "sweep").glob("*/records.parquet"))])
    assert (rows.status == "ok").all() and len(rows) == 6
    extra = rows.metrics_json.map(json.loads)
    reused = extra.map(lambda m: m["autojudge_checkpoint_reused"])
    assert sorted(reused.groupby(rows.param_threshold.values).first().tolist()) == [False, True, True]
    t1 = rows[rows.param_threshold == 1.0]
    assert (t1.accepted == t1.proposed).all()
    assert extra.map(lambda m: m["autojudge_judge_digest"]).nunique() == 1  # one judge for the whole sweep
    samples = extra.map(lambda m: m["autojudge_train_samples"])
    assert samples.notna().all() and samples.nunique() == 1 and samples.iloc[0] > 0


def test_target_only_features_and_file_source(tmp_path):
    from spsamp.data.arithmetic import write_question_file

    qfile = write_question_file(generate_problems(6, seed=3), tmp_path / "mine.jsonl")
    _, run, params, target, draft = _setup(tmp_path, ["method.features=target", "method.mining_source=file",
                                                      f"method.mining_file={qfile}", "method.mining_prompts=6"])
    dec = _decoder(params, threshold=0.5)
    dec.prepare(target, draft, run)
    meta = json.loads((tmp_path / "judge.safetensors.json").read_text())
    assert dec.judge.kind == "logreg" and dec.judge.dim == meta["target_hidden"] == 64 and meta["feature_mode"] == "target"
    assert sorted(meta["split"]["prompt_sha"]) == sorted(f"arith-s3-{i}" for i in range(6))
    gen = run.generation.__class__(max_new_tokens=12, temperature=0.0)
    out = dec.generate(target, draft, _prompts(target, 1)[0], gen, torch.Generator())
    assert 1 <= len(out.tokens) <= 12 and out.stats.extra["mismatches_judged"] >= out.stats.extra["judge_accepted"]


# ---- batched mining and the tests check ---------------------------------------------------------


def test_batched_continuations_equal_one_at_a_time(one_thread):
    # float64: a batched forward and single-sequence forwards may round differently in low precision
    cfg = compose_cfg(["model=tiny_random", "hardware.dtype=float64"])
    run, _ = validate(cfg)
    target = load_model(run.model.target, run.hardware)
    from spsamp.autojudge.greedy_rows import batched_continuations
    from spsamp.autojudge.mining import greedy_continue

    prompt = encode(target.tokenizer, [{"role": "user", "content": "Count: 1 2 3"}], False).tolist()
    q = PrefixCache(target)
    answer, _ = greedy_continue(q, prompt, 24)
    swaps = [(2, 7), (5, 11), (9, 3), (15, 40)]  # (answer position, token swapped in), distinct lengths
    budgets = [10, 4, 12, 6]
    q.run(prompt + answer)
    n = len(prompt)
    conts, h = batched_continuations(target, [n + i for i, _ in swaps], [d for _, d in swaps], budgets,
                                     lambda b, c: answer[: swaps[b][0]] + [swaps[b][1]] + c)
    for (i, d), budget, cont, hq in zip(swaps, budgets, conts, h):
        ref, ref_h = greedy_continue(PrefixCache(target), prompt + answer[:i] + [d], budget)
        assert cont == ref, (i, d)
        assert torch.allclose(hq, ref_h, atol=1e-9)
    # two at a time: a finished row's place goes to the next (prefixes longer and shorter than the batch's columns)
    q.run(prompt + answer)
    assert batched_continuations(target, [n + i for i, _ in swaps], [d for _, d in swaps], budgets, lambda b, c: c, batch=2)[0] == conts
    q.run(prompt + answer)
    order = [3, 0, 2, 1]  # the longest prefix first, then shorter ones join a batch already wider
    again, h2 = batched_continuations(target, [n + swaps[j][0] for j in order], [swaps[j][1] for j in order],
                                      [budgets[j] for j in order], lambda b, c: c, batch=2)
    assert again == [conts[j] for j in order] and torch.allclose(h2, h[order], atol=1e-9)
    # stop: every row ends as soon as stop() holds (here: after 3 tokens)
    q.run(prompt + answer)
    short, _ = batched_continuations(target, [n + i for i, _ in swaps], [d for _, d in swaps], budgets,
                                     lambda b, c: c, stop=lambda c: len(c) >= 3)
    assert [len(c) for c in short] == [3, 3, 3, 3]


def test_pipelined_mining_labels_every_mismatch_as_one_sequence_would(tmp_path, one_thread):
    # float64: every row of the batch must give what a one-sequence greedy decode gives
    cfg = compose_cfg(["model=tiny_random", "hardware.dtype=float64"])
    run, _ = validate(cfg)
    target, draft = load_model(run.model.target, run.hardware), load_model(run.model.draft, run.hardware)
    from spsamp.autojudge.journal import MiningJournal
    from spsamp.autojudge.mining import MiningPrompt, greedy_continue, mine

    check = Continuation(window=4, match_len=3, tau=0.8)
    decode = lambda ids: target.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    texts = ["Why?", "Count: 1 2 3", "Hello there", "Name a colour", "2 + 2 ="]
    prompts = [MiningPrompt(f"p{j}", t, encode(target.tokenizer, [{"role": "user", "content": t}], False)) for j, t in enumerate(texts)]
    # a batch of 3 rows: answers of later prompts share it with earlier prompts' continuations
    mined = mine(target, draft, prompts, 20, check, batch=3)
    assert mined.prompts == 5 and len(mined) >= 8 and mined.decoded_tokens > 0 and mined.seconds > 0
    assert mined.prompt_ids == sorted(mined.prompt_ids, key=lambda pid: int(pid[1:]))  # yielded in stream order
    seen = 0
    for pr in prompts:
        prompt = pr.ids.tolist()
        answer, _ = greedy_continue(PrefixCache(target), prompt, 20)
        rows = [j for j, pid in enumerate(mined.prompt_ids) if pid == pr.id]
        d_arg = PrefixCache(draft).run(prompt + answer)[0].logits.argmax(-1).tolist()
        miss = [i for i in range(len(answer)) if d_arg[len(prompt) - 1 + i] != answer[i]]
        assert [mined.positions[j] for j in rows] == miss
        for j, i in zip(rows, miss):
            d = d_arg[len(prompt) - 1 + i]
            cont, ref_h = greedy_continue(PrefixCache(target), prompt + answer[:i] + [d], 20 - i - 1)
            assert mined.labels[j] == int(check(answer, answer[:i] + [d] + cont, i, decode))
            assert torch.allclose(mined.h_q[j], ref_h, atol=1e-6)  # batched shapes sum in another order
            ref_p = PrefixCache(draft).run(prompt + answer[:i] + [d], hidden=True)[0].hidden[-1]
            assert torch.allclose(mined.h_p[j], ref_p, atol=1e-6)  # the draft's state at d_i, from one batched forward
            seen += 1
    assert seen == len(mined)
    # one row: the same samples; a target count stops admitting prompts once the expected mismatches cover it
    one = mine(target, draft, prompts, 20, check, batch=2)
    assert one.labels == mined.labels and one.positions == mined.positions
    few = mine(target, draft, iter(prompts), 20, check, batch=3, target_samples=1)
    assert 1 <= few.prompts < 5 and len(few) >= 1
    # the journal: a stopped job's prompts are read back, the rest mined, the same samples either way
    journal = lambda: MiningJournal(tmp_path / "mining", {"recipe": 1})  # noqa: E731
    mine(target, draft, prompts[:2], 20, check, batch=3, journal=journal())
    again = mine(target, draft, prompts, 20, check, batch=3, journal=journal())
    assert again.resumed == 2 and again.labels == mined.labels and again.positions == mined.positions
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(again.h_q, mined.h_q))  # other batch neighbours


def test_tests_check_labels_by_pass_fail():
    from spsamp.autojudge.checks import make_check

    prob = {"task_id": "t/add", "prompt": "def add(a, b):\n", "entry_point": "add",
            "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"}
    texts = {
        (1,): "```python\ndef add(a, b):\n    return a + b\n```",
        (2,): "```python\ndef add(a, b):\n    return b + a\n```",  # different tokens, same outcome
        (3,): "```python\ndef add(a, b):\n    return a - b\n```",  # fails
    }
    decode = lambda ids: texts[tuple(ids)]  # noqa: E731
    bound = make_check("tests", timeout_s=5).bind(prob)
    assert bound([1], [2], 0, decode) is False and bound([1], [3], 0, decode) is True
    assert bound.stop("```python\nx = 1\n```") and not bound.stop("```python\nx = 1\n")
    with pytest.raises(ValueError, match="mining_source=humaneval"):
        make_check("tests").bind(None)
    with pytest.raises(ConfigError, match="method.importance_check: tests needs prompts with unit tests"):
        validate(compose_cfg(["model=tiny_random", "method=autojudge", "method.importance_check=tests"]))


def test_humaneval_mining_never_uses_the_test_half(tmp_path):
    cfg = compose_cfg(["model=tiny_random", "method=autojudge", "method.mining_source=humaneval", "method.importance_check=tests",
                       "method.mining_prompts=5", "dataset=humaneval", "dataset.split=test"])
    run, params = validate(cfg)
    from spsamp.data import load_prompts

    target = load_model(run.model.target, run.hardware)
    mp = _decoder(params).mining_prompts(target, run)
    test_ids = {p.id for p in load_prompts(run.dataset)}
    assert len(mp) == 5 and not {m.id for m in mp} & test_ids and all(m.reference["task_id"] == m.id for m in mp)


# ---- the mining journal: a killed mining job resumes, a changed recipe mines afresh ------------------


def _count_mined(monkeypatch):
    """Patch the miner to record the id of every prompt it mines (not read back from a journal)."""
    import spsamp.autojudge.mining as mining_mod

    mined_ids: list[str] = []
    real = mining_mod._mine_one

    def counting(q, p, pr, *a, **k):
        mined_ids.append(pr.id)
        return real(q, p, pr, *a, **k)

    monkeypatch.setattr(mining_mod, "_mine_one", counting)
    return mined_ids, counting


def test_mining_journal_resumes_and_keys_on_the_recipe(tmp_path, monkeypatch, caplog):
    import spsamp.autojudge.mining as mining_mod
    from spsamp.autojudge.journal import MiningJournal

    _, run, params, target, draft = _setup(tmp_path, ["method.mining_prompts=4"])
    dec = _decoder(params)
    prompts = dec.mining_prompts(target, run)
    mined_ids, counting = _count_mined(monkeypatch)
    check = Continuation(8, 4, 0.8)

    def run_mine(recipe, n):
        return mining_mod.mine(target, draft, prompts[:n], 10, check, journal=MiningJournal(tmp_path / "mining", recipe))

    recipe = dec.mining_recipe(run)
    part = run_mine(recipe, 2)  # a job that stopped after two prompts
    assert mined_ids == [p.id for p in prompts[:2]] and part.resumed == 0
    full = run_mine(recipe, 4)  # rerun with all four: only the last two are mined
    assert mined_ids[2:] == [p.id for p in prompts[2:4]] and full.resumed == 2
    fresh = mining_mod.mine(target, draft, prompts[:4], 10, check)  # no journal: everything mined again
    assert full.labels == fresh.labels and full.positions == fresh.positions and full.prompt_ids == fresh.prompt_ids
    assert all(torch.equal(a, b) for a, b in zip(full.h_q, fresh.h_q)) and all(torch.equal(a, b) for a, b in zip(full.h_p, fresh.h_p))
    assert full.answer_tokens == fresh.answer_tokens and full.seconds > 0
    # another answer length is another recipe: nothing is read back from the first
    mined_ids.clear()
    other = run_mine({**recipe, "max_tokens": 11}, 2)
    assert other.resumed == 0 and mined_ids == [p.id for p in prompts[:2]]
    # a damaged prompt file is moved aside and that prompt mined again
    journal = MiningJournal(tmp_path / "mining", recipe)
    victim = sorted(journal.dir.glob("*.safetensors"))[0]
    victim.write_bytes(victim.read_bytes()[:40])
    mined_ids.clear()
    again = run_mine(recipe, 4)
    assert len(mined_ids) == 1 and again.resumed == 3 and again.labels == fresh.labels
    assert victim.with_name(victim.name + ".damaged").exists() and "unreadable" in caplog.text


# ---- mining at scale: endless sources, a target count, chunked resume, the AUC curve ------------------


def test_sources_do_not_run_out_and_skip_evaluation_prompts(tmp_path):
    from spsamp.autojudge.journal import prompt_sha
    from spsamp.autojudge.sources import disjoint, evaluation_prompts, source_items
    from spsamp.config import DatasetConfig
    from spsamp.data import load_prompts
    from spsamp.data.arithmetic import write_question_file

    far = list(itertools.islice(source_items("problems", 1000), 5000, 5003))  # read lazily, far past any fixed count
    assert [i for i, _, _ in far] == [f"arith-s1000-{i}" for i in range(5000, 5003)]
    assert far[0] == next(itertools.islice(source_items("problems", 1000), 5000, None))  # a pure function of (seed, index)
    # an evaluation prompt that reads exactly like mining problem 3 (another id) is skipped, as is the same id
    clash = generate_problems(5, seed=1000)
    qfile = write_question_file([dataclasses.replace(clash[3], id="eval-7"), clash[1]], tmp_path / "eval.jsonl")
    ids, shas = evaluation_prompts(DatasetConfig(name="mt_bench", path=str(qfile)), "problems")
    got = [i for i, _, _ in itertools.islice(disjoint(source_items("problems", 1000), ids, shas), 4)]
    assert got == ["arith-s1000-0", "arith-s1000-2", "arith-s1000-4", "arith-s1000-5"]
    # the problems source also avoids the arithmetic evaluation set, whatever the run evaluates
    arith = load_prompts(DatasetConfig(name="arithmetic"))
    _, shas = evaluation_prompts(DatasetConfig(name="builtin"), "problems")
    assert {prompt_sha(p.turns[0]) for p in arith} <= shas
    # HumanEval: only the train half, all of it, none of the test half evaluation uses
    test_half = load_prompts(DatasetConfig(name="humaneval", split="test"))
    ids, shas = evaluation_prompts(DatasetConfig(name="humaneval", split="test", max_samples=3), "humaneval")
    assert ids == {p.id for p in test_half}  # all of the test half, not only max_samples of it
    he = list(disjoint(source_items("humaneval", 1000), ids, shas))
    assert len(he) == len(load_prompts(DatasetConfig(name="humaneval", split="train"))) > 80
    assert not {i for i, _, _ in he} & ids and all(ref["task_id"] == i for i, _, ref in he)


def test_mining_target_stops_and_resumes_in_chunks(tmp_path, monkeypatch):
    import spsamp.autojudge.mining as mining_mod
    from spsamp.autojudge.journal import MiningJournal

    _, run, params, target, draft = _setup(tmp_path, ["method.mining_source=problems", "method.importance_check=final_answer"])
    dec = _decoder(params)
    check = FinalAnswer()
    read: list[str] = []

    def stream():  # endless, and records how far mining read it
        for pr in dec.mining_stream(target, run):
            read.append(pr.id)
            yield pr

    mined_ids, counting = _count_mined(monkeypatch)
    recipe = dec.mining_recipe(run)
    journal = lambda: MiningJournal(tmp_path / "mining", recipe)  # noqa: E731
    first = mining_mod.mine(target, draft, stream(), 10, check, journal=journal(), target_samples=12)
    assert len(first) >= 12 and first.prompts == len(read) == len(mined_ids)
    assert sum(p != first.prompt_ids[-1] for p in first.prompt_ids) < 12  # it stopped with the prompt that reached the target
    # the next chunk crashes in the middle of its third new prompt: nothing of that prompt is kept
    n_first = first.prompts
    calls = {"n": 0}

    def crash_on_third(q, p, pr, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed mid-prompt")
        return counting(q, p, pr, *a, **k)

    monkeypatch.setattr(mining_mod, "_mine_one", crash_on_third)
    read.clear()
    mined_ids.clear()
    with pytest.raises(KeyboardInterrupt):
        mining_mod.mine(target, draft, stream(), 10, check, journal=journal(), target_samples=60)
    assert len(mined_ids) == 2 and len(list(journal().entries())) == n_first + 2
    # rerun: the finished prompts are read back, never mined again; mining continues with the interrupted one
    monkeypatch.setattr(mining_mod, "_mine_one", counting)
    read.clear()
    mined_ids.clear()
    done = mining_mod.mine(target, draft, stream(), 10, check, journal=journal(), target_samples=60)
    assert done.resumed == n_first + 2 and mined_ids == read[n_first + 2:] and len(mined_ids) >= 1 and len(done) >= 60
    fresh = mining_mod.mine(target, draft, itertools.islice(dec.mining_stream(target, run), done.prompts), 10, check)
    assert done.labels == fresh.labels and done.prompt_ids == fresh.prompt_ids and done.positions == fresh.positions


def test_decoder_mines_to_a_target_and_reuses_by_target(tmp_path):
    _, run, params, target, draft = _setup(tmp_path, ["method.mining_target=25", "method.mining_prompts=2"])
    dec = _decoder(params)
    dec.prepare(target, draft, run)
    meta = dec.meta
    assert meta["mining"]["mismatches"] >= 25 and meta["mining"]["target"] == 25
    assert meta["mining"]["prompts"] == len(meta["split"]["prompt_sha"]) > 2  # the target, not mining_prompts, decided
    again = _decoder(params)
    again.prepare(target, draft, run)
    assert again.reused
    with pytest.raises(ConfigError, match="method.mining_target: checkpoint .* was made with mining_target=25"):
        _decoder(params, mining_target=30).prepare(target, draft, run)
    with pytest.raises(ConfigError, match="method.mining_target"):
        validate(compose_cfg(["model=tiny_random", "method=autojudge", "method.mining_target=-1"]))


def _synthetic_journal(root, recipe, n_prompts, per_prompt, signal, seed=0):
    """Prompts with ``per_prompt`` mismatches each; a label is 1 with P = sigmoid(signal * h_q[0])."""
    from spsamp.autojudge.journal import MiningJournal, PromptEntry

    g = torch.Generator().manual_seed(seed)
    journal = MiningJournal(root, recipe)
    for k in range(n_prompts):
        hq = torch.randn(per_prompt, 6, generator=g)
        hp = torch.randn(per_prompt, 3, generator=g)
        y = (torch.rand(per_prompt, generator=g) < torch.sigmoid(signal * hq[:, 0])).long()
        samples = [(i, 7, int(y[i]), hp[i], hq[i]) for i in range(per_prompt)]
        journal.put(f"p{k}", f"{k:016x}", PromptEntry(samples, 20, 0, 1.0))
    return journal


def test_auc_curve_on_a_synthetic_journal(tmp_path):
    from spsamp.autojudge.__main__ import main
    from spsamp.autojudge.curve import auc_curve, best_c, read_journal
    from spsamp.autojudge.judge import C_GRID

    signal = _synthetic_journal(tmp_path / "a", {"r": 1}, 60, 8, signal=4.0)
    m = read_journal(signal.dir)
    assert m.x.shape == (480, 9) and len(set(m.groups)) == 60
    pts = auc_curve(m, c=1.0, sizes=[40, 200, 480], repeats=3)
    assert [p.asked for p in pts] == [40, 200, 480] and all(p.samples >= p.asked for p in pts)
    assert pts[0].prompts == 5 and pts[-1].prompts == 60 and pts[-1].repeats == 1  # whole prompts; all of them once
    assert pts[-1].auc_mean > 0.85 and pts[-1].auc_mean >= pts[0].auc_min - 0.05
    noise = read_journal(_synthetic_journal(tmp_path / "b", {"r": 2}, 60, 8, signal=0.0, seed=1).dir)
    assert abs(auc_curve(noise, c=1.0, sizes=[480])[0].auc_mean - 0.5) < 0.12
    # a prompt-identity leak: every sample of a prompt shares its label and a prompt fingerprint in the
    # features. Ungrouped folds would score it near 1; held-out prompts reveal that nothing generalises.
    leak = read_journal(_synthetic_journal(tmp_path / "c", {"r": 3}, 60, 8, signal=0.0, seed=2).dir)
    g = torch.Generator().manual_seed(5)
    finger = {p: torch.randn(9, generator=g) * 3 for p in set(leak.groups)}
    lab = {p: float(i % 2) for i, p in enumerate(sorted(set(leak.groups)))}
    leak.x = torch.stack([finger[p] for p in leak.groups]) + 0.01 * leak.x
    leak.y = torch.tensor([lab[p] for p in leak.groups], dtype=torch.float64)
    assert auc_curve(leak, c=1.0, sizes=[480])[0].auc_mean < 0.75
    assert best_c(m) in C_GRID
    # the CLI prints the table and writes the plot
    png = tmp_path / "curve.png"
    main(["curve", str(signal.dir), "--sizes", "40,480", "--repeats", "2", "--c", "1", "--plot", str(png),
          "--out", str(tmp_path / "rep")])
    assert png.stat().st_size > 1000 and (tmp_path / "rep" / "auc_curve.png").stat().st_size > 1000
    table = pd.read_csv(tmp_path / "rep" / "tables" / "auc_curve.csv")  # a report table: benchmark pages import it
    assert list(table["asked"]) == [40, 480] and set(table["mismatches"]) == {480} and set(table["c"]) == {1.0}
    assert table["auc_mean"].iloc[-1] > 0.85 and table["important"].iloc[0] == int(m.y.sum())
    with pytest.raises(ValueError, match="no mined samples"):
        read_journal(tmp_path)


@pytest.mark.parametrize("batch", [1, 3])
def test_speculative_answers_mine_the_same_labels(tmp_path, batch):
    """mining_answer_k (the target's greedy answers found with the draft) changes the cost, not what
    is mined: in float32 the same answers, mismatches, labels and states as one target pass per token."""
    cfg = compose_cfg(["model=tiny_random", "hardware.dtype=float32"])
    run, _ = validate(cfg)
    target, draft = load_model(run.model.target, run.hardware), load_model(run.model.draft, run.hardware)
    import spsamp.autojudge.mining as mining_mod

    texts = ["Hello there", "Count: 1 2 3 4 5 6", "Why?", "1 1 1 1 1 1 1 1"]
    prompts = [mining_mod.MiningPrompt(f"p{i}", t, encode(target.tokenizer, [{"role": "user", "content": t}], False)) for i, t in enumerate(texts)]
    check = Continuation(window=4, match_len=3, tau=0.8)
    plain = mining_mod.mine(target, draft, prompts, 24, check, batch=batch)
    spec = mining_mod.mine(target, draft, prompts, 24, check, batch=batch, answer_k=4)
    assert len(plain) >= 8 and plain.answer_tokens == spec.answer_tokens
    assert plain.labels == spec.labels and plain.positions == spec.positions and plain.prompt_ids == spec.prompt_ids
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(plain.h_q, spec.h_q))
    # with a draft that always agrees (a second copy of the target) every proposal is kept: k + 1 tokens a pass
    q, p = mining_mod.PrefixCache(target), mining_mod.PrefixCache(load_model(run.model.target, run.hardware))
    ids = prompts[3].ids.tolist()
    calls = {"n": 0}
    real_run = q.run

    def counted(seq, **kw):
        calls["n"] += 1
        return real_run(seq, **kw)

    q.run = counted
    cont, _ = mining_mod.greedy_continue(q, ids, 24, draft=p, k=4, vocab=target.vocab_size)
    ref, _ = mining_mod.greedy_continue(mining_mod.PrefixCache(target), ids, 24)
    assert cont == ref and len(cont) == 24
    assert calls["n"] == 1 + 5  # the prompt's pass gives token 1, then 5 passes of 4 drafted + 1 (and the budget's last 3)
