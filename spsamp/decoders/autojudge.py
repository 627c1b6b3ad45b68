"""``method=autojudge``: lossy speculative decoding with a trained judge (Garipov et al. 2025,
"AutoJudge: Judge Decoding Without Manual Annotation").

One step is SpS's chain step at temperature 0 (Leviathan et al. 2023, Alg. 1 with one-hot p and
q): the draft p proposes d_1..d_k greedily, the target q scores [root, d_1..d_k] in one forward and
yields its greedy choices g_1..g_{k+1}. Where d_j = g_j the token is kept as in SpS. At a mismatch
d_j != g_j the judge reads the last-layer hidden states of p and q at d_j and predicts
P(important); :func:`autojudge_accept` keeps d_j when P(important) < ``threshold`` and otherwise
takes g_j and ends the step (AutoJudge, Sec. 3.3). ``threshold=0`` is exactly greedy target
decoding; ``threshold=1`` accepts every draft token (greedy *draft* decoding, verified for nothing).

The judge is trained once per (model pair, mining settings) in :meth:`AutoJudgeDecoder.prepare`
(mine labels -> features -> logistic regression, :mod:`spsamp.autojudge`) and saved to
``method.checkpoint``; later jobs (e.g. every point of a threshold sweep) load it.

AutoJudge = :class:`ChainDrafter` (greedy at T=0) + :class:`JudgeRule`, run by the one loop: the
hidden states come through the same drafter and :func:`~spsamp.verification.verify` pass, asked
for only when a judge can change a decision (0 < threshold < 1).
Temperature > 0 is refused (the paper's setting is greedy; a lossy rule has no sampling target).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from spsamp.autojudge import checkpoint as ckpt
from spsamp.autojudge.checks import CHECKS, make_check
from spsamp.autojudge.features import FEATURE_MODES, feature_dim, make_features
from spsamp.autojudge.journal import MiningJournal
from spsamp.autojudge.judge import KINDS, THRESHOLD_QUANTILES, Judge, grouped_cv_auc, train_judge
from spsamp.autojudge.mining import MiningPrompt, mine, prompt_sha, split_prompt_ids
from spsamp.autojudge.sources import SOURCES, disjoint, evaluation_prompts, source_items
from spsamp.config import ConfigError, GenerationConfig
from spsamp.data.chat import encode, messages_for
from spsamp.decoders.base import DecodeOutput, LoopDecoder
from spsamp.drafting.chain import ChainDrafter
from spsamp.loop import Decoding, Verdict
from spsamp.models import CausalLM
from spsamp.models.adapter import Forward
from spsamp.proposals import Proposal

log = logging.getLogger(__name__)


def autojudge_accept(
    draft_tokens: list[int], target_tokens: list[int], p_important: torch.Tensor, threshold: float
) -> tuple[int, int, int, bool]:
    """AutoJudge acceptance over one chain (Garipov et al. 2025, Sec. 3.3).

    draft_tokens d_1..d_k; target_tokens g_1..g_{k+1} (q's argmax after each prefix);
    p_important[j] = judge's P(important) at d_{j+1} (read only at mismatches).
    Returns (draft tokens kept, the step's target token, mismatches accepted by the judge,
    whether the step ended on a judged-important mismatch).
    """
    accepted_mismatches = 0
    for j, (d, g) in enumerate(zip(draft_tokens, target_tokens)):
        if d == g:
            continue  # exact match: kept as in greedy SpS
        # keep d_j iff P(important) < threshold; threshold >= 1 keeps every mismatch (P <= 1)
        if threshold >= 1.0 or float(p_important[j]) < threshold:
            accepted_mismatches += 1
            continue
        return j, target_tokens[j], accepted_mismatches, True
    k = len(draft_tokens)
    return k, target_tokens[k], accepted_mismatches, False


class JudgeRule:
    """AutoJudge's acceptance rule (:class:`spsamp.loop.AcceptanceRule`) over a greedy chain.

    g_1..g_{k+1} = argmax q(. | prefix, d_<j) from the target's pass; at each mismatch d_j != g_j the
    judge reads [h_p(d_j) ; h_q(d_j)] (one batched call per step). Counters for the row's metrics
    go to ``st.stats.extra``.
    """

    def __init__(self, judge: Optional[Judge], threshold: float, features: str):
        self.judge, self.threshold, self.features = judge, threshold, features

    @property
    def needs_hidden(self) -> bool:
        # at 0 / 1 every decision is fixed (target / draft token): no judge, no hidden states
        return 0.0 < self.threshold < 1.0

    def __call__(self, proposal: Proposal, out: Forward, st: Decoding) -> Verdict:
        d, k = proposal.tokens.tolist(), proposal.size
        g = out.logits.argmax(-1).tolist()
        miss = [j for j in range(k) if d[j] != g[j]]
        p_imp = torch.full((k,), math.nan, dtype=torch.float64)
        if miss and self.needs_hidden:
            h_p = list(proposal.hidden) if proposal.hidden is not None else []
            if self.features == "concat" and miss[-1] == k - 1:
                # d_k was never fed to the draft: its state costs one more draft pass (kept in cache)
                slot = st.draft.cache_len
                h_p.append(st.draft.forward(torch.tensor(d[-1:]), last_only=True, hidden=True).hidden[-1])
                st.stats.draft_calls += 1
                if proposal.slots is not None and slot == len(st.seq) + k - 1:
                    proposal.slots[k - 1] = slot
            hp = torch.stack([h_p[j] for j in miss]) if self.features == "concat" else None
            # P(important | h_p(d_j), h_q(d_j)) at every mismatch, one batched judge call
            # on q's device (p's states may sit on another one); the judge's tensors follow its features
            hq = out.hidden[1:][miss]
            feats = make_features(None if hp is None else hp.to(hq.device), hq, self.features)
            p_imp[miss] = self.judge.p_important(feats).cpu()
        n, nxt, judged_ok, fell_back = autojudge_accept(d, g, p_imp, self.threshold)
        extra = st.stats.extra
        extra["judge_accepted"] = extra.get("judge_accepted", 0) + judged_ok
        extra["fallbacks"] = extra.get("fallbacks", 0) + int(fell_back)
        return Verdict(list(range(n)), nxt, rejected=n < k)


class AutoJudgeDecoder(LoopDecoder):
    needs_draft = True
    lossless = False  # keeps the mismatches its judge calls unimportant

    @dataclass
    class Params:
        name: str = "autojudge"
        k: int = 4  # draft tokens per step
        threshold: float = 0.5  # accept a mismatch when P(important) < threshold
        # instead of threshold: accept the share q of mismatches the judge scores lowest on its validation
        # set (threshold = its validation q-quantile of P(important)): one knob that means the same for
        # every judge; q in THRESHOLD_QUANTILES
        threshold_quantile: Optional[float] = None
        checkpoint: str = "???"  # judge safetensors (+ .json sidecar); trained here when absent
        features: str = "concat"  # concat: [h_p ; h_q] | target: h_q only
        judge: str = "logreg"  # logreg (scikit-learn, class-balanced, C by validation ROC-AUC)
        importance_check: str = "final_answer"  # label-mining check: final_answer | continuation | tests
        continuation_window: int = 8  # continuation: re-converge within this many tokens
        continuation_match_len: int = 4  # ... as a run of this many identical token ids
        continuation_tau: float = 0.8  # ... or difflib ratio over token ids >= tau
        mining_source: str = "problems"  # problems (endless generated arithmetic) | file (FastChat questions) | humaneval (its train half)
        mining_file: Optional[str] = None
        mining_prompts: int = 32  # prompts mined (judge-train + judge-validation); unused when mining_target > 0
        mining_target: int = 0  # > 0: read the source until this many mismatches are labelled (instead of mining_prompts prompts)
        mining_max_tokens: int = 64  # target answer length while mining
        mining_seed: int = 1000  # problems: generator seed (eval sets use other seeds); file: shuffle
        val_fraction: float = 0.25  # share of mining prompts (by id) used to validate the judge
        mining_batch: int = 1  # 1 = the paper's sequential walk; B > 1: answers and swapped continuations of many prompts as rows of one batch of B
        mining_answer_k: int = 8  # walk only: >= 1: the target's greedy answers found speculatively with the draft, k tokens per target pass; 0: one pass per token

        def check(self) -> None:
            if self.k < 1:
                raise ConfigError(f"method.k: must be >= 1, got {self.k} — use method=baseline for no drafting")
            if not 0.0 <= self.threshold <= 1.0:
                raise ConfigError(f"method.threshold: must be in [0, 1], got {self.threshold} — 0 = target greedy, 1 = accept every mismatch")
            if self.threshold_quantile is not None and self.threshold_quantile not in THRESHOLD_QUANTILES:
                raise ConfigError(f"method.threshold_quantile: the judge keeps quantiles {list(THRESHOLD_QUANTILES)}, got "
                                  f"{self.threshold_quantile} — use one of them, or null and method.threshold")
            for key, value, options in (
                ("features", self.features, FEATURE_MODES),
                ("judge", self.judge, KINDS),
                ("importance_check", self.importance_check, CHECKS),
                ("mining_source", self.mining_source, SOURCES),
            ):
                if value not in options:
                    raise ConfigError(f"method.{key}: unknown {value!r} — use one of {options}")
            if self.mining_source == "file" and not self.mining_file:
                raise ConfigError("method.mining_file: mining_source=file needs a FastChat question file — set method.mining_file=/path/q.jsonl")
            if self.mining_target < 0:
                raise ConfigError(f"method.mining_target: must be >= 0, got {self.mining_target} — 0 = mine method.mining_prompts prompts, e.g. 2000")
            if self.mining_target == 0 and self.mining_prompts < 2:
                raise ConfigError(f"method.mining_prompts: must be >= 2 (judge train + validation), got {self.mining_prompts} — raise it")
            if self.importance_check == "tests" and self.mining_source != "humaneval":
                raise ConfigError("method.importance_check: tests needs prompts with unit tests — set method.mining_source=humaneval")
            if self.mining_answer_k < 0:
                raise ConfigError(f"method.mining_answer_k: must be >= 0, got {self.mining_answer_k} — 0 = one target pass per answer token, e.g. 8")
            if self.mining_batch < 1:
                raise ConfigError(f"method.mining_batch: must be >= 1, got {self.mining_batch} — 1 = sequential walk, e.g. 16")
            if self.mining_max_tokens < 1:
                raise ConfigError(f"method.mining_max_tokens: must be >= 1, got {self.mining_max_tokens} — raise it")
            if not 0.0 <= self.val_fraction < 1.0:
                raise ConfigError(f"method.val_fraction: must be in [0, 1), got {self.val_fraction} — e.g. 0.25")
            if not 0.0 <= self.continuation_tau <= 1.0:
                raise ConfigError(f"method.continuation_tau: must be in [0, 1], got {self.continuation_tau} — e.g. 0.8")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.drafter = ChainDrafter(self.params.k)  # at T=0: d_j = argmax p(. | prefix, d_<j)
        self.acceptance = JudgeRule(None, self.params.threshold, self.params.features)  # threshold set per call
        self.judge: Optional[Judge] = None
        self.quantile_threshold: Optional[float] = None  # prepare() resolves method.threshold_quantile
        self.meta: dict[str, Any] = {}
        self.reused = False
        self.digest: Optional[str] = None

    @staticmethod
    def check_run(run: Any, params: Any) -> None:
        """Called by :func:`spsamp.config.validate` before any model loads."""
        ckpt.check_location(params.checkpoint)  # a checkpoint that can never be used fails now, not after mining
        if run.generation.temperature != 0:
            raise ConfigError(
                f"generation.temperature: autojudge decodes greedily (Garipov et al. 2025), got {run.generation.temperature} — set generation.temperature=0"
            )

    # ---- judge: load or mine + train ---------------------------------------------------------

    def expected_meta(self, target: CausalLM, draft: CausalLM, run: Any) -> dict[str, Any]:
        hq, hp = int(target.model.config.hidden_size), int(draft.model.config.hidden_size)
        return {
            "target_model": run.model.target.name,
            "draft_model": run.model.draft.name,
            "target_hidden": hq,
            "draft_hidden": hp,
            "feature_mode": self.params.features,
            "feature_dim": feature_dim(self.params.features, hp, hq),
        }

    def prepare(self, target: CausalLM, draft: Optional[CausalLM], run: Any) -> None:
        """Load the judge from ``method.checkpoint``, or mine labels and train it there."""
        self.check_run(run, self.params)
        assert draft is not None
        path = Path(self.params.checkpoint).expanduser()
        expected = self.expected_meta(target, draft, run)
        if ckpt.exists(path):
            judge, meta = ckpt.load(path)
            ckpt.check_compatible(meta, expected, path)
            self._check_same_recipe(meta, path)
            if judge.dim != expected["feature_dim"]:
                raise ConfigError(f"method.checkpoint: {path} holds a judge over {judge.dim} features, expected {expected['feature_dim']} — set a new method.checkpoint")
            self.reused = True
            log.info("autojudge: reusing judge %s (val AUC %s)", path, meta.get("training", {}).get("val_auc"))
        else:
            judge, mined_meta = self.train(target, draft, run, expected)
            meta = ckpt.save(path, judge, mined_meta)
            self.reused = False
            log.info("autojudge: judge saved to %s", path)
        self._check_disjoint(meta, run)
        self.judge, self.meta = judge, meta
        self.digest = ckpt.tensor_digest(judge)
        self.quantile_threshold = self._quantile_threshold(judge, path)

    @property
    def threshold(self) -> float:
        """``method.threshold``, or the judge's validation quantile ``method.threshold_quantile`` names."""
        if self.params.threshold_quantile is None:
            return self.params.threshold
        if self.quantile_threshold is None:
            raise RuntimeError("autojudge: method.threshold_quantile is resolved from the judge — prepare() must run first")
        return self.quantile_threshold

    def _quantile_threshold(self, judge: Judge, path: Path) -> Optional[float]:
        q = self.params.threshold_quantile
        if q is None:
            return None
        table = dict(zip(judge.stats.get("threshold_quantiles") or [], judge.thresholds))
        if q not in table:
            raise ConfigError(f"method.threshold_quantile: the judge {path} has no validation quantiles (trained without a "
                              "validation split) — set method.threshold instead, or mine again with method.val_fraction > 0")
        log.info("autojudge: threshold %.4g = the judge's validation %g-quantile of P(important)", table[q], q)
        return float(table[q])

    def mining_stream(self, target: CausalLM, run: Any) -> Iterator[MiningPrompt]:
        """The source's prompts, evaluation prompts skipped (:mod:`spsamp.autojudge.sources`), encoded
        as they are read."""
        prm = self.params
        ids, shas = evaluation_prompts(run.dataset, prm.mining_source)
        items = disjoint(source_items(prm.mining_source, prm.mining_seed, prm.mining_file), ids, shas)
        sys_prompt, chat = run.dataset.system_prompt, run.generation.use_chat_template
        for i, t, ref in items:
            yield MiningPrompt(i, t, encode(target.tokenizer, messages_for(sys_prompt, (t,), []), chat), ref)

    def mining_prompts(self, target: CausalLM, run: Any) -> list[MiningPrompt]:
        """The first ``mining_prompts`` prompts of :meth:`mining_stream`."""
        return list(itertools.islice(self.mining_stream(target, run), self.params.mining_prompts))

    def mining_recipe(self, run: Any) -> dict[str, Any]:
        """Everything that changes a mined label or feature (the journal's key; not the prompt count)."""
        prm = self.params
        return {
            "target": asdict(run.model.target),
            "draft": asdict(run.model.draft) if run.model.draft is not None else None,
            "dtype_override": run.hardware.dtype,
            "check": prm.importance_check,
            "continuation": [prm.continuation_window, prm.continuation_match_len, prm.continuation_tau]
            if prm.importance_check == "continuation" else None,
            "check_timeout_s": run.dataset.check_timeout_s if prm.importance_check == "tests" else None,
            "max_tokens": prm.mining_max_tokens,
            "batch": prm.mining_batch,
            "schedule": "walk" if prm.mining_batch == 1 else "rows",  # rows: answers and continuations in one batch
            # bf16: a k-token pass may round a near-tie otherwise than 1-token passes (rows: answers are batch rows)
            "answer_k": prm.mining_answer_k if prm.mining_batch == 1 else None,
            "draft_hidden": prm.features == "concat",
            "use_chat_template": run.generation.use_chat_template,
            "system_prompt": run.dataset.system_prompt,
        }

    def train(self, target: CausalLM, draft: CausalLM, run: Any, expected: dict[str, Any]) -> tuple[Judge, dict[str, Any]]:
        prm = self.params
        prompts = self.mining_stream(target, run) if prm.mining_target else self.mining_prompts(target, run)
        check = make_check(prm.importance_check, prm.continuation_window, prm.continuation_match_len, prm.continuation_tau,
                           timeout_s=run.dataset.check_timeout_s)
        need_p = prm.features == "concat"
        journal = MiningJournal(Path(prm.checkpoint).expanduser().parent / "mining", self.mining_recipe(run))
        log.info("autojudge: mining journal %s (a killed job resumes from it)", journal.dir)
        mined = mine(target, draft, prompts, prm.mining_max_tokens, check, need_draft_hidden=need_p, batch=prm.mining_batch,
                     journal=journal, target_samples=prm.mining_target or None, answer_k=prm.mining_answer_k)
        if len(mined) == 0:
            raise RuntimeError(
                f"autojudge: the draft never disagreed with the target on {mined.prompts} mining prompts — "
                "raise method.mining_prompts / method.mining_max_tokens (nothing to learn)"
            )
        # the judge is a CPU model: states are moved to it explicitly (draft and target may sit on GPUs)
        x = make_features(torch.stack(mined.h_p).cpu() if need_p else None, torch.stack(mined.h_q).cpu(), prm.features)
        y = torch.tensor(mined.labels, dtype=torch.float64)
        train_ids, val_ids = split_prompt_ids(list(mined.prompt_shas), prm.val_fraction, prm.mining_seed)
        is_val = torch.tensor([pid in set(val_ids) for pid in mined.prompt_ids], dtype=torch.bool)
        judge = train_judge(x[~is_val], y[~is_val], x[is_val], y[is_val], kind=prm.judge, seed=prm.mining_seed)
        if judge.stats.get("C") is not None:  # every prompt held out once: less flattering than the one split C was chosen on
            judge.stats["cv_auc"] = grouped_cv_auc(x, y, mined.prompt_ids, judge.stats["C"], seed=prm.mining_seed)
            log.info("autojudge judge: grouped 5-fold CV AUC over all %d mined prompts %s (C %s)", mined.prompts, judge.stats["cv_auc"], judge.stats["C"])
        ckpt.save_mined(prm.checkpoint, x, y, mined.prompt_ids, mined.positions)
        meta = {
            **expected,
            "feature_spec": "last-layer hidden state of each model with the mismatching draft token as input; concat = [draft ; target]",
            "mining": {
                "check": prm.importance_check,
                "continuation": {
                    "window": prm.continuation_window,
                    "match_len": prm.continuation_match_len,
                    "tau": prm.continuation_tau,
                    "similarity": "difflib.SequenceMatcher ratio over token ids",
                },
                "source": prm.mining_source,
                "file": prm.mining_file,
                "prompts": mined.prompts,
                "target": prm.mining_target,
                "max_tokens": prm.mining_max_tokens,
                "seed": prm.mining_seed,
                "answer_tokens": mined.answer_tokens,
                "mismatches": len(mined),
                "important": int(sum(mined.labels)),
                "batch": prm.mining_batch,
                "answer_k": prm.mining_answer_k,
                "seconds": mined.seconds,
                "samples_per_minute": mined.samples_per_minute,
                "resumed_prompts": mined.resumed,
                "journal": str(journal.dir),
                "continuation_tokens": mined.decoded_tokens,
                "use_chat_template": run.generation.use_chat_template,
            },
            "split": {
                "by": "prompt id",
                "judge_train_prompt_ids": train_ids,
                "judge_val_prompt_ids": val_ids,
                "prompt_sha": dict(mined.prompt_shas),
            },
        }
        return judge, meta

    def _check_same_recipe(self, meta: dict[str, Any], path: Path) -> None:
        """A reused judge must come from the mining/judge settings this run asks for."""
        prm, mining = self.params, meta.get("mining", {})
        cont = mining.get("continuation", {})
        asked = {
            "judge": (meta.get("judge", {}).get("kind"), prm.judge),
            "importance_check": (mining.get("check"), prm.importance_check),
            "mining_source": (mining.get("source"), prm.mining_source),
            "mining_file": (mining.get("file"), prm.mining_file),
            "mining_target": (mining.get("target", 0), prm.mining_target),
            "mining_max_tokens": (mining.get("max_tokens"), prm.mining_max_tokens),
            "mining_seed": (mining.get("seed"), prm.mining_seed),
            "mining_batch": (mining.get("batch", 1), prm.mining_batch),
            "mining_answer_k": (mining.get("answer_k", 0), prm.mining_answer_k),
        }
        if not prm.mining_target:  # with a target the prompt count is whatever reaching it took
            asked["mining_prompts"] = (mining.get("prompts"), prm.mining_prompts)
        if prm.importance_check == "continuation":
            asked["continuation_window"] = (cont.get("window"), prm.continuation_window)
            asked["continuation_match_len"] = (cont.get("match_len"), prm.continuation_match_len)
            asked["continuation_tau"] = (cont.get("tau"), prm.continuation_tau)
        for key, (had, want) in asked.items():
            if had != want:
                raise ConfigError(
                    f"method.{key}: checkpoint {path} was made with {key}={had!r}, this run asks for {want!r} — "
                    "set method.checkpoint to a new path (or delete it) to mine and train again"
                )

    def _check_disjoint(self, meta: dict[str, Any], run: Any) -> None:
        """Evaluation prompts must not be mining prompts (compared by id and by text hash)."""
        from spsamp.data import load_prompts

        mined = meta.get("split", {}).get("prompt_sha", {})
        shas = set(mined.values())
        clash = [p.id for p in load_prompts(run.dataset) if p.id in mined or prompt_sha(p.turns[0]) in shas]
        if clash:
            raise ConfigError(
                f"dataset: {len(clash)} evaluation prompt(s) were used to train the judge ({clash[:3]}) — "
                "evaluate on other prompts, or mine from another source/seed (method.mining_seed)"
            )

    # ---- decoding ------------------------------------------------------------------------------

    def generate(self, target: CausalLM, draft: Optional[CausalLM], prompt_ids: torch.Tensor, gen: GenerationConfig,
                 rng: torch.Generator) -> DecodeOutput:
        if self.judge is None:
            raise RuntimeError("autojudge: no judge loaded — prepare() must run before generate()")
        if gen.temperature != 0:
            raise ConfigError(f"generation.temperature: autojudge decodes greedily, got {gen.temperature} — set generation.temperature=0")
        if isinstance(self.acceptance, JudgeRule):  # the judge and settings of this call (a sweep edits them)
            self.acceptance.judge, self.acceptance.threshold = self.judge, self.threshold
        return super().generate(target, draft, prompt_ids, gen, rng)

    def metrics(self, st: Decoding) -> dict[str, Any]:
        prm, counts = self.params, st.stats.extra
        judge_accepted, fallbacks = counts.pop("judge_accepted", 0), counts.pop("fallbacks", 0)
        judged = judge_accepted + fallbacks
        training = self.meta.get("training", {})
        return {
            "threshold": self.threshold,
            "threshold_quantile": prm.threshold_quantile,
            "mismatches_judged": judged,
            "judge_accepted": judge_accepted,
            "judge_accept_rate": judge_accepted / judged if judged else None,
            "target_fallback_rate": fallbacks / st.stats.steps if st.stats.steps else None,
            "autojudge_train_samples": training.get("train_samples"),
            "autojudge_train_loss": training.get("train_loss"),
            "autojudge_val_auc": training.get("val_auc"),
            "autojudge_cv_auc": training.get("cv_auc"),
            "autojudge_mining_samples_per_minute": self.meta.get("mining", {}).get("samples_per_minute"),
            "autojudge_checkpoint": str(Path(prm.checkpoint).expanduser()),
            "autojudge_checkpoint_reused": self.reused,
            "autojudge_judge_digest": self.digest,  # sha256 of the judge tensors: same digest, same decisions
        }
