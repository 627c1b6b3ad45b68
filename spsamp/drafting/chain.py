"""Chain drafting for exact speculative sampling (Leviathan et al. 2023, Alg. 1, lines 1-3):
x_i ~ p(. | prefix, x_<i) for i = 1..k, autoregressively with the draft's KV cache.

With ``lookup`` the chain is drafted faster, not differently: a vertical cascade (Chen et al. 2023,
"Cascade Speculative Drafting", with prompt lookup as the model-free bottom drafter). Before a
draft pass, up to ``lookup`` tokens that followed the latest n-gram's earlier occurrence in prompt
+ output (:func:`spsamp.drafting.lookup.lookup`) ride along in the same pass, and the draft checks
them as a target would check a proposal — exact rejection sampling with a one-hot proposal
(:func:`spsamp.acceptance.rejection.rejection_sampling`, p_j = the draft's own rows). The chain is
then distributed exactly as the draft's own k-token chain (at T=0 token for token the same one, up
to how the draft rounds a multi-token pass against single-token ones: exact in float64), and every
kept token still comes with the p_i it follows, so the target-level rule is untouched. Only the
number of draft passes falls — by how much the output repeats its context (measured: an answer
that restates the prompt's code, 0.3 passes per token; MT-Bench chat, 0.8).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from spsamp.acceptance.rejection import fit_logits, rejection_sampling
from spsamp.batching import forward_cols
from spsamp.cost_model import PRIORS, Costs, SizingPriors, measure_costs, probe_costs
from spsamp.drafting.lookup import lookup
from spsamp.drafting.sizing import ChainSizer, RowsChainSizer
from spsamp.proposals import Proposal, RowsStep, Step
from spsamp.sampling import sample_rows

log = logging.getLogger(__name__)


class ChainDrafter:
    """Draft ``k`` tokens with at most ``k`` draft forwards (``k`` without ``lookup``). The k-th token
    is not fed back: if all k are accepted, the loop feeds it next step with the target's bonus token.

    k="auto": each step's k is chosen by a :class:`~spsamp.drafting.sizing.ChainSizer`, made afresh
    for every row (:meth:`start`) from the probe's costs (:meth:`prepare`; measured in place at the
    first row when nobody called it).

    stop_below: end the chain early, after the first token whose draft probability p_i(x_i) is below
    it (transformers' ``assistant_confidence_threshold``): an unlikely draft token is likely rejected,
    so the passes after it are mostly wasted. Still exact: the stop depends only on the draft's own
    tokens, so given the accepted prefix the next output is q's either way (bonus token or ratio test).
    A fixed k only: k=auto does not price the stop (SpeculativeDecoder.Params refuses the pair).

    lookup / lookup_ngram / lookup_min_ngram: tokens looked up per draft pass (0: none), the longest
    and the shortest n-gram matched (module doc). A chain drafted so says what each pass fed
    (``Proposal.pass_widths``), and :meth:`lookup_state` tells k=auto whether a step begins with a
    guess in hand: it prices a chain by the draft units per token and the acceptance seen in that state.
    """

    needs_model = True

    def __init__(self, k: int | str, stop_below: float | None = None, lookup: int = 0, lookup_ngram: int | None = None,
                 lookup_min_ngram: int | None = None, priors: SizingPriors = PRIORS):
        if lookup and not (lookup_ngram and lookup_min_ngram):
            raise ValueError("ChainDrafter: lookup needs lookup_ngram and lookup_min_ngram (SpeculativeDecoder.Params holds the defaults)")
        self.k, self.stop_below = k, stop_below
        self.lookup, self.lookup_ngram, self.lookup_min_ngram = lookup, lookup_ngram, lookup_min_ngram
        self.priors = priors
        self.costs: Costs | None = None  # k=auto: the probe's (prepare), else measured in place at the first row
        self.sizer: ChainSizer | None = None  # k=auto: this row's
        self.rows_sizer: RowsChainSizer | None = None  # k=auto in a batch: this batch's

    def prepare(self, target: Any, draft: Any, rows: int = 1) -> None:
        """k=auto: the probe's costs, once per job; for a batch of ``rows`` rows, with the batch's own
        passes timed (:func:`~spsamp.cost_model.probe_costs`: v and vd keyed on the tokens a pass feeds)."""
        if self.k == "auto":
            self.costs = probe_costs(target, draft, rows, self.priors.k_max)
            log.info("k=auto%s: measured c=%.3f, %s, draft %s", f" (batches of {rows})" if rows > 1 else "", self.costs.c,
                     self.costs.v.describe(), self.costs.vd.describe("vd"))

    def start(self, st: Any) -> None:
        if self.k == "auto":
            if self.costs is None:
                self.costs = measure_costs(st.target, st.draft)  # on top of the caches, cropped back after
            self.sizer = ChainSizer(self.costs, bool(self.lookup), self.priors)

    def size(self, st: Any) -> int:
        if self.k != "auto":
            return self.k
        if self.sizer is None:
            self.start(st)
        state = self.lookup_state(st) if self.lookup else None
        return self.sizer.choose(state, st.room - 1)  # a step keeps its path + one target token

    def observe(self, step: Step) -> None:
        if self.sizer is not None:
            self.sizer.observe(step.proposal, step.kept, step.draft_s, step.target_s, step.overhead_s)

    @staticmethod
    def _confidence(st: Any, logits: torch.Tensor, p_i: torch.Tensor, token: int) -> float:
        # greedy p_i is one-hot, so the draft's confidence there is its untempered softmax
        return float(p_i[token] if st.gen.temperature > 0 else torch.softmax(logits.float(), -1)[token])

    def _guess(self, st: Any, chain: list[int], room: int) -> list[int]:
        if not self.lookup or room < 1:
            return []
        return lookup(st.seq + chain, min(self.lookup, room), self.lookup_ngram, st.eos_ids, self.lookup_min_ngram)

    def lookup_state(self, st: Any) -> int | None:
        """1 if the text so far continues an earlier n-gram (the first pass would feed a guess), 0 if
        not; None without lookup (one state: k=auto's pooled estimates)."""
        return int(bool(self._guess(st, [], 1))) if self.lookup else None

    def propose(self, st: Any, size: int, max_depth: int, hidden: bool) -> Proposal:
        draft, k = st.draft, max(0, min(size, max_depth))
        base = len(st.seq)  # after the pending tokens, node i sits at draft-cache slot base + i
        chain: list[int] = []
        rows: list[torch.Tensor] = []
        states: list[torch.Tensor] = []  # states[i] = draft hidden state with node i as input
        feed = st.seq[draft.cache_len :]  # not yet seen by the draft; ends with the root
        guesses: list[int] = []  # guess tokens fed with each pass
        while len(chain) < k:
            # the pass's last position yields one more token, so a guess may fill the chain but not pass it
            guess = self._guess(st, chain, k - len(chain) - 1)
            start = draft.cache_len
            out = draft.forward(torch.tensor(feed + guess, dtype=torch.long), last_only=not guess, hidden=hidden)
            guesses.append(len(guess))
            # rows j = 0..g: p(. | prefix, chain, guess_<j), from the positions that took the last fed
            # token and each guess token; p = p_i under the same temperature/top-k/top-p as the target
            logits = fit_logits(out.logits[-(len(guess) + 1) :], st.vocab)
            p = st.probs(logits)
            # draft-level SpS of the one-hot guess against p: x_j = g_j kept w.p. p_j(g_j), the first
            # miss resampled from p_j without g_j — each token is still a draw from p_j; with no guess
            # this is x ~ p_0, the plain chain's draw (uniforms are drawn where the generator lives)
            g = torch.tensor(guess, dtype=torch.long)
            n, nxt = rejection_sampling(g, None, p.to(st.rng.device) if st.rng is not None else p, st.rng)
            new = guess[:n] + [nxt]
            if guess:
                draft.crop(start + len(feed) + n)  # entries of rejected guess tokens are not the chain's
                extra = st.stats.extra  # -> the row's metrics_json
                extra["lookup_offered"] = extra.get("lookup_offered", 0) + len(guess)
                extra["lookup_kept"] = extra.get("lookup_kept", 0) + n
            if hidden:
                # rows: the last fed token (a node once the chain has begun; else the root), then each guess
                h = out.hidden[-(len(guess) + 1) :]
                states += list(h[(0 if chain else 1) : n + 1])
            for j, token in enumerate(new):
                chain.append(token)
                rows.append(p[j])
                if self.stop_below is not None and len(chain) < k and self._confidence(st, logits[j], p[j], token) < self.stop_below:
                    k = len(chain)  # the rest of this pass's tokens are dropped with the stop
                    break
            feed = [chain[-1]]
        # at T=0 every p_i is one-hot: a deterministic proposal, no [k, V] tensor needed
        p_dist = torch.stack(rows) if rows and st.gen.temperature > 0 else None
        return Proposal.chain(
            torch.tensor(chain, dtype=torch.long),
            p_dist,
            hidden=torch.stack(states[: k - 1]) if hidden and k > 1 else None,
            slots=[base + i for i in range(k - 1)] + [-1] * min(k, 1),
            draft_calls=len(guesses),
            pass_widths=[1 + g for g in guesses] if self.lookup else None,
        )

    # ---- a batch of rows (spsamp.loop.speculate_rows; plain chains: no stop_below, no lookup) ----

    def start_rows(self, target: Any, draft: Any, rows: int) -> None:
        if self.stop_below is not None or self.lookup:
            raise ValueError("ChainDrafter: a batch drafts plain chains only (no stop_below, no lookup)")
        self.rows_sizer = None
        if self.k == "auto":
            if self.costs is None:  # nobody called prepare(): probe now, before the batch's prefill
                self.prepare(target, draft, rows)
            self.rows_sizer = RowsChainSizer(self.costs, rows, self.priors)

    def size_rows(self, rows: Any) -> int:
        if self.rows_sizer is None:
            return self.k
        live = rows.live
        rooms = [st.room - 1 if not st.done else None for st in rows.sts]
        return self.rows_sizer.choose(rooms, max(len(rows.sts[i].seq) - rows.seen[i] for i in live))

    def observe_rows(self, step: RowsStep) -> None:
        if self.rows_sizer is not None:
            self.rows_sizer.observe_rows(step)

    def row_metrics(self, row: int) -> dict[str, Any]:
        return self.rows_sizer.row_metrics(row) if self.rows_sizer is not None else {}

    def propose_rows(self, rows: Any, size: int) -> tuple[list[Proposal], list[int]]:
        """Every live row's chain of k_i = min(size, room_i - 1) tokens in max k_i draft passes over
        the batch: the first feeds each row what the draft has not seen (ending with its root; rows
        with less to feed are padded with masked columns on the left), each later pass one drafted
        token per row (masked for rows whose chain is complete). The last token of the longest chains
        is not fed: the target's verdict comes first. Each row draws with its own generator, in the
        order it draws alone."""
        sts, draft = rows.sts, rows.sts[0].draft
        b = len(sts)
        ks = [0 if st.done else max(0, min(size, st.room - 1)) for st in sts]
        depth = max(ks)
        if depth == 0:
            rows.droot = -1
            return [Proposal.empty() for _ in sts], []
        pending = [[] if st.done else st.seq[rows.seen[i]:] for i, st in enumerate(sts)]
        width = max(len(p) for p in pending)
        cols = [[rows.pad] * (width - len(p)) + p for p in pending]
        valid = [[False] * (width - len(p)) + [True] * len(p) for p in pending]
        rows.droot = rows.dmask.shape[1] + width - 1
        chain = [[rows.pad] * depth for _ in range(b)]
        p_rows: list[list[torch.Tensor]] = [[] for _ in range(b)]
        widths: list[int] = []
        for j in range(depth):
            out, rows.dmask = forward_cols(draft, cols, valid, rows.dmask)
            widths.append(b * len(cols[0]))
            drawing = [i for i in range(b) if j < ks[i]]
            p = sts[0].probs(fit_logits(out[:, -1], sts[0].vocab))  # p_i under the same temperature/top-k/top-p as the target
            for i, tok in zip(drawing, sample_rows(p[drawing], [sts[i].rng for i in drawing])):
                chain[i][j] = tok
                p_rows[i].append(p[i])
            if j + 1 < depth:
                cols = [[chain[i][j]] for i in range(b)]
                valid = [[j < ks[i]] for i in range(b)]
        props = []
        for i, k in enumerate(ks):
            fed = min(k, depth - 1)  # x_1 .. x_fed went through the draft, x_j in column droot + j
            p_dist = torch.stack(p_rows[i]) if p_rows[i] and sts[i].gen.temperature > 0 else None
            props.append(Proposal.chain(torch.tensor(chain[i][:k], dtype=torch.long), p_dist,
                                        slots=[rows.droot + 1 + j for j in range(fed)] + [-1] * (k - fed), draft_calls=k))
        return props, widths
