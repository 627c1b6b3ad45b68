"""Sizing a step from the row's own evidence: ``method.k=auto`` (:class:`ChainSizer`) and
``method.grow=cost`` (:class:`TreeSizer`).

A sized drafter holds one sizer per row (``Drafter.start`` makes it afresh from the probe's
:class:`~spsamp.cost_model.Costs` and :data:`~spsamp.cost_model.PRIORS`): one cost estimate
(:class:`~spsamp.cost_model.StepCost`) and one acceptance estimate for its kind of proposal. A
batch of rows (``generation.batch_size`` > 1) holds one :class:`RowsChainSizer` per batch: the
batch's cost estimate and one acceptance estimate per row, one k per step. The
loop hands the drafter each finished step (:class:`spsamp.loop.Step`), which it passes on to
:meth:`Sizer.observe`. Every choice is logged with its prediction, for the row's ``sizing_*``
metrics (docs/records.md). Terms and formulas: docs/methods.md, "Sizing".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from spsamp.cost_model import (PRIORS, Costs, Rate, SizingPriors, StepCost, best_k, best_rows_k, best_stopped_k,
                               expected_tokens_per_step, pooled_speedup, rows_chain_step)
from spsamp.proposals import Proposal, RowsStep


def draft_units(prop: Proposal, vd) -> float:
    """The proposal's draft work in single-token draft passes: each pass at vd(tokens it fed)
    (``Proposal.pass_widths``), else one per draft call."""
    return sum(vd(w) for w in prop.pass_widths) if prop.pass_widths is not None else float(prop.draft_calls)


@dataclass
class Choice:
    """One sized step: its size, the lookup state it began in, and the predicted tokens per step
    and step cost (verify units) it was chosen for."""

    size: int
    state: Optional[int]
    tokens: float
    cost: float


class Sizer:
    """What both sizers share: the cost estimate, the log of choices, the row's metrics."""

    def __init__(self, costs: Costs, priors: SizingPriors = PRIORS):
        self.priors = priors
        self.cost = StepCost(costs, priors)
        self.choices: list[Choice] = []

    def record(self, size: int, speedup: float, cost: float, state: Optional[int] = None) -> None:
        self.choices.append(Choice(size, state, speedup * cost, cost))

    def observe_cost(self, prop: Proposal, draft_s: float, target_s: float, overhead_s: float) -> float:
        """The step's seconds into :class:`StepCost`; returns its draft units."""
        units = draft_units(prop, self.cost.vd)
        self.cost.observe(draft_s, units, target_s, prop.size + 1, overhead_s)
        return units

    def metrics(self) -> dict[str, object]:
        """The row's ``sizing_*`` metrics (docs/records.md)."""
        return choice_metrics(self.choices, self.cost) if self.choices else {}


def choice_metrics(choices: list[Choice], cost: StepCost) -> dict[str, object]:
    """The ``sizing_*`` metrics of a row's sized steps (``choices``, in step order) and its costs."""
    sizes = [ch.size for ch in choices]
    hist: dict[str, int] = {}
    for s in sizes:
        hist[str(s)] = hist.get(str(s), 0) + 1
    n = len(sizes)
    return {
        "sizing_steps": n,
        "sizing_size_mean": sum(sizes) / n,
        "sizing_size_last": sizes[-1],
        "sizing_size_hist": hist,
        "sizing_sizes": sizes,
        "sizing_predicted_step_tokens": sum(ch.tokens for ch in choices) / n,
        "sizing_predicted_step_cost": sum(ch.cost for ch in choices) / n,
        "sizing_predicted_speedup": pooled_speedup([ch.tokens / ch.cost for ch in choices], [ch.cost for ch in choices]),
        **cost.metrics(),
    }


class ChainEstimate:
    """A chain's acceptance, per lookup state (0: no guess in hand, 1: a guess in hand; None: no
    lookup): alpha = tokens kept / tokens tested, and the draft units a drafted token costs
    (1 for a plain chain, fewer where looked-up guesses ride along). With ``stop`` (method.stop_below)
    also the share of sure tokens and the acceptance of sure and of unsure ones.

    ``calibration``: draft tokens the target kept per token Leviathan's formula expected at the
    step's alpha and k (as the tree's, :class:`TreeSizer`). The formula assumes every token is
    accepted independently at one rate; where acceptance comes in runs (text that restates its
    context, then new text), a decayed alpha lags each switch and the formula errs one way for
    long stretches: the ratio of kept to expected corrects that.

    With lookup, each state's alpha and units start from the two states pooled (worth
    ``prior_steps`` observations), not from the fixed priors: a state the row has seen little of is
    priced as the row so far, and its own steps take over as they come."""

    def __init__(self, priors: SizingPriors, lookup: bool, stop: bool, calibrated: bool = True):
        w, d = priors.prior_steps, priors.decay
        self.calibrated = calibrated and not stop  # a stopped chain is priced by stopped_chain, uncalibrated
        self.priors_range = priors.calibration_range
        self.weight = w
        self.pooled_alpha, self.pooled_units = Rate(priors.alpha, w, d), Rate(1.0, w, d)
        # per lookup state: its own steps only (no prior); read shrunk towards the pooled figure
        self.alpha = {s: Rate(0.0, 0.0, d) for s in ((0, 1) if lookup else ())}
        self.units = {s: Rate(0.0, 0.0, d) for s in self.alpha}
        self.stop = stop
        self.sure = Rate(priors.sure, w, d)
        self.alpha_sure, self.alpha_unsure = Rate(priors.alpha, w, d), Rate(priors.unsure_alpha, w, d)
        self.kept = Rate(priors.calibration, w, d)

    @property
    def calibration(self) -> float:
        lo, hi = self.priors_range
        return min(hi, max(lo, self.kept.value))

    def _shrunk(self, own: dict[Optional[int], Rate], pooled: Rate, state: Optional[int]) -> float:
        if state not in own:
            return pooled.value
        rate = own[state]
        return (rate.num + self.weight * pooled.value) / (rate.den + self.weight)

    def alpha_of(self, state: Optional[int]) -> float:
        """P(the target keeps a draft token) in steps begun in ``state`` (None: all steps)."""
        return self._shrunk(self.alpha, self.pooled_alpha, state)

    def units_of(self, state: Optional[int]) -> float:
        """Draft units per drafted token in steps begun in ``state`` (None: all steps)."""
        return self._shrunk(self.units, self.pooled_units, state)

    def observe(self, state: Optional[int], proposed: int, kept: int, units: float, sure: Optional[list[bool]]) -> None:
        """A step begun in ``state`` drafted ``proposed`` tokens for ``units`` draft units; the target
        kept the first ``kept`` (the next, if any, was tested and rejected)."""
        if proposed < 1:
            return
        expected = float(expected_tokens_per_step(self.alpha_of(state), proposed)) - 1.0  # before alpha learns this step
        self.kept.observe(kept, expected)
        tested = kept + (kept < proposed)
        self.pooled_alpha.observe(kept, tested)
        self.pooled_units.observe(units, proposed)
        if state in self.alpha:
            self.alpha[state].observe(kept, tested)
            self.units[state].observe(units, proposed)
        if self.stop and sure:
            self.sure.observe(sum(sure), len(sure))
            for flag in (True, False):
                tested = [i for i, s in enumerate(sure) if s == flag and i <= kept]
                (self.alpha_sure if flag else self.alpha_unsure).observe(sum(1 for i in tested if i < kept), len(tested))

    def metrics(self, choices: list[Choice]) -> dict[str, object]:
        out: dict[str, object] = {}
        if not self.alpha:
            out["sizing_alpha"] = self.pooled_alpha.value
        else:
            out["sizing_lookup_share"] = sum(ch.state == 1 for ch in choices) / len(choices) if choices else None
            for state, name in ((1, "hit"), (0, "miss")):
                out[f"sizing_alpha_{name}"], out[f"sizing_units_per_token_{name}"] = self.alpha_of(state), self.units_of(state)
        if self.stop:
            out.update(sizing_sure=self.sure.value, sizing_alpha_sure=self.alpha_sure.value, sizing_alpha_unsure=self.alpha_unsure.value)
        if self.calibrated:
            out["sizing_calibration"] = self.calibration
        return out


class ChainSizer(Sizer):
    """k=auto: before each step, the k (within the row's room) with the best predicted speedup

        tokens(k) / (c u k + v(k + 1) + overhead)

    (u: draft units per drafted token in the step's lookup state; tokens(k): Leviathan's
    E[tokens/step] with its draft tokens scaled by the row's calibration, or
    :func:`~spsamp.cost_model.stopped_chain` with a confidence stop)."""

    def __init__(self, costs: Costs, lookup: bool, stop: bool, priors: SizingPriors = PRIORS):
        super().__init__(costs, priors)
        self.estimate = ChainEstimate(priors, lookup, stop)

    def choose(self, state: Optional[int], room: int) -> int:
        """The next step's k; ``room``: the most draft tokens the step can still use (0: a plain step)."""
        k_max = min(self.priors.k_max, room)
        if k_max < 1:
            return 0
        est = self.estimate
        per_token = self.cost.c * est.units_of(state)
        if est.stop:
            size, speedup, cost = best_stopped_k(per_token, self.cost.verify, est.alpha_sure.value, est.alpha_unsure.value,
                                                 est.sure.value, k_max)
        else:
            size, speedup = best_k(est.alpha_of(state), per_token, self.cost.verify, k_max, est.calibration)
            cost = size * per_token + self.cost.verify(size + 1)
        self.record(size, speedup, cost, state)
        return size

    def observe(self, prop: Proposal, kept: int, draft_s: float, target_s: float, overhead_s: float) -> None:
        units = self.observe_cost(prop, draft_s, target_s, overhead_s)
        state = self.choices[-1].state if self.choices else None
        self.estimate.observe(state, prop.size, kept, units, prop.sure)

    def metrics(self) -> dict[str, object]:
        base = super().metrics()
        return {**base, **self.estimate.metrics(self.choices)} if base else {}


def pays_back(tokens: float, cost: float, plain_tokens: int, plain_cost: float, left: int, once: float) -> bool:
    """Whether steps of ``tokens`` at ``cost`` (verify units), against plain steps of ``plain_tokens``
    at ``plain_cost``, save more than a one-time cost ``once`` over the ``left`` tokens still to
    decode: left (plain_cost / plain_tokens - cost / tokens) > once."""
    return left * (plain_cost / plain_tokens - cost / tokens) > once


class RowsChainSizer(Sizer):
    """k=auto for a batch (:func:`spsamp.loop.speculate_rows`): one k for every row of a step, the
    k in 0..k_max with the most expected tokens per unit of the step's cost
    (:func:`~spsamp.cost_model.best_rows_k`). Each pass is priced by the tokens it feeds: the verify
    pass of B rows at k costs v(B (k + 1)), so as the batch widens the pass, a chain must win more
    tokens to pay for it, and k = 0 (a plain batched step, no draft pass) wins when none does.

    The batch's sizing state: one :class:`~spsamp.cost_model.StepCost` (the batch's passes; v keyed
    on the tokens a pass feeds) and one acceptance estimate per row (:class:`ChainEstimate`: rows
    accept differently). A row's choices are the batch's steps while it was live, each recorded with
    the row's share of the step's predicted tokens and the step's cost in plain batched steps (k = 0
    costs 1; a step whose draft pass catches up costs that too), so its predicted speedup is over
    plain batched decoding."""

    def __init__(self, costs: Costs, rows: int, priors: SizingPriors = PRIORS):
        super().__init__(costs, priors)
        self.estimates = [ChainEstimate(priors, False, False, calibrated=False) for _ in range(rows)]
        self.row_choices: list[list[Choice]] = [[] for _ in range(rows)]
        # a plain step measures no acceptance, so a batch that chose k = 0 would keep the estimate that
        # made it choose so: after `explore_after` plain steps in a row, one k = 1 step measures it
        # again (at the batch's first step too), the wait doubling each time it finds no chain pays
        self.plain_run, self.explore_after = 0, 0

    def choose(self, rooms: list[Optional[int]], fed: int) -> int:
        """The step's k; ``rooms[i]``: the most draft tokens row i can still use (None: finished);
        ``fed``: the most tokens the draft's first pass must feed a row — 1, or 2 after a full
        accept, more when the draft catches up (on the prompts before the batch's first draft pass,
        on the tokens of plain steps since its last)."""
        live = [i for i, r in enumerate(rooms) if r is not None]
        if not live:
            return 0
        alphas = [self.estimates[i].alpha_of(None) for i in live]
        cap = [rooms[i] for i in live]
        first = min(2, fed)
        args = (self.cost.c, self.cost.verify, self.cost.vd, len(rooms), first)
        catch_up = self.cost.c * (self.cost.vd.wide(len(rooms) * fed) - self.cost.vd.wide(len(rooms) * first))
        plain = best_rows_k(alphas, cap, *args, k_max=0)[2]  # a plain batched step's cost
        size, tokens, cost = best_rows_k(alphas, cap, *args, k_max=self.priors.k_max)
        if size > 0 and not pays_back(tokens, cost, len(live), plain, sum(cap) + len(live), catch_up):
            size = 0  # chains would pay per step, but not for the draft's catch-up in the tokens left
        if size > 0:
            self.plain_run, self.explore_after = 0, self.priors.explore_after
        elif self.plain_run >= self.explore_after and max(cap) >= 1 and self.could_pay(cap, args, plain, catch_up):
            size, (tokens, cost) = 1, rows_chain_step(alphas, cap, 1, *args)
            self.plain_run, self.explore_after = 0, max(self.priors.explore_after, 2 * self.explore_after)
        else:
            self.plain_run += 1
        if size > 0:
            cost += catch_up  # this step's draft pass pays it: the prediction must too
        for i in live:
            self.row_choices[i].append(Choice(size, None, tokens / len(live), cost / plain))
        self.choices.append(Choice(size, None, tokens, cost))
        return size

    def could_pay(self, cap: list[int], args: tuple, plain: float, catch_up: float) -> bool:
        """Whether drafting could pay at the acceptance of a good pair (``SizingPriors.explore_alpha``):
        re-measuring acceptance (a k = 1 step, and the draft's catch-up before it) is worth it only
        then. A batch whose wide verify pass or catch-up costs more than such chains save stays
        plain without trying."""
        size, tokens, cost = best_rows_k([self.priors.explore_alpha] * len(cap), cap, *args, k_max=self.priors.k_max)
        return size > 0 and pays_back(tokens, cost, len(cap), plain, sum(cap) + len(cap), catch_up)

    def observe_rows(self, step: RowsStep) -> None:
        units = sum(self.cost.vd(w) for w in step.draft_widths)
        # a first pass wider than 2 tokens a row caught the draft up (on the prompts, or on plain
        # steps' tokens): a one-time cost choose() does not price — read as a draft pass, it would
        # make the draft look many times dearer and stop every later chain
        if step.draft_widths and step.draft_widths[0] > 2 * len(step.proposals):
            units = 0.0
        self.cost.observe(step.draft_s, units, step.target_s, step.verify_width, step.overhead_s)
        for est, prop, kept in zip(self.estimates, step.proposals, step.kept):
            if kept is not None:
                est.observe(None, prop.size, kept, float(prop.size), None)

    def row_metrics(self, row: int) -> dict[str, object]:
        """Row ``row``'s ``sizing_*`` metrics: the batch's choices while it was live, its costs and the row's acceptance."""
        choices = self.row_choices[row]
        if not choices:
            return {}
        return {**choice_metrics(choices, self.cost), **self.estimates[row].metrics(choices)}


class TreeSizer(Sizer):
    """grow=cost: the tree drafter asks, pass by pass, how many nodes to expand
    (:func:`~spsamp.cost_model.expansion_width`) and which prefix to verify
    (:func:`~spsamp.cost_model.tree_speed`), under the row's costs and ``calibration``: tokens the
    target accepted per unit of the draft's own expectation (the verified nodes' path probabilities)."""

    def __init__(self, costs: Costs, priors: SizingPriors = PRIORS):
        super().__init__(costs, priors)
        self.accepted = Rate(priors.calibration, priors.prior_steps, priors.decay)

    @property
    def calibration(self) -> float:
        lo, hi = self.priors.calibration_range
        return min(hi, max(lo, self.accepted.value))

    def observe(self, prop: Proposal, kept: int, draft_s: float, target_s: float, overhead_s: float) -> None:
        if prop.stats is None:
            return
        self.observe_cost(prop, draft_s, target_s, overhead_s)
        if prop.size:
            self.accepted.observe(kept, prop.stats.expected)

    def metrics(self) -> dict[str, object]:
        base = super().metrics()
        return {**base, "sizing_calibration": self.calibration} if base else {}
