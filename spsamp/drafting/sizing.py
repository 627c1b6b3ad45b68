"""Sizing a step from the row's own evidence: ``method.k=auto`` (:class:`ChainSizer`; a batch:
:class:`RowsChainSizer`) and ``method.grow=cost`` (:class:`TreeSizer`).

A sizer is the row's (the batch's) sizing state, made afresh by ``Drafter.start`` from the probe's
:class:`~spsamp.cost_model.Costs` and :data:`~spsamp.cost_model.PRIORS`: one cost estimate
(:class:`~spsamp.cost_model.StepCost`) and one acceptance estimate per row. The drafter passes it
each finished step (:class:`spsamp.proposals.Step`). Every choice is kept with its prediction, for
the row's ``sizing_*`` metrics (docs/records.md). Terms and formulas: docs/methods.md, "Sizing".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from spsamp.cost_model import PRIORS, Costs, Rate, SizingPriors, StepCost, best_chain_k, chain_step, expected_tokens_per_step
from spsamp.proposals import Proposal, RowsStep


def draft_units(prop: Proposal, vd) -> float:
    """The proposal's draft work in single-token draft passes: vd(tokens fed) per pass
    (``Proposal.pass_widths``), else one per draft call."""
    return sum(vd(w) for w in prop.pass_widths) if prop.pass_widths is not None else float(prop.draft_calls)


@dataclass
class Choice:
    """One sized step: its size, the lookup state it began in, and the predicted tokens and cost
    (verify units) it was chosen for."""

    size: int
    state: Optional[int]
    tokens: float
    cost: float


def choice_metrics(choices: list[Choice], cost: StepCost) -> dict[str, object]:
    """The ``sizing_*`` metrics of a row's sized steps (``choices``, in step order) and its costs. The
    predicted speedup pools the steps, predicted tokens over predicted cost, as a run's speedup
    (all tokens over all time) weighs each step by its cost."""
    sizes = [ch.size for ch in choices]
    hist: dict[str, int] = {}
    for s in sizes:
        hist[str(s)] = hist.get(str(s), 0) + 1
    n, tokens, cost_sum = len(sizes), sum(ch.tokens for ch in choices), sum(ch.cost for ch in choices)
    return {"sizing_steps": n, "sizing_size_mean": sum(sizes) / n, "sizing_size_last": sizes[-1], "sizing_size_hist": hist,
            "sizing_sizes": sizes, "sizing_predicted_step_tokens": tokens / n, "sizing_predicted_step_cost": cost_sum / n,
            "sizing_predicted_speedup": tokens / cost_sum if cost_sum > 0 else float("nan"), **cost.metrics()}


class ChainEstimate:
    """A row's chain acceptance, per lookup state (0: no guess in hand, 1: a guess in hand; None: no
    lookup): alpha = tokens kept / tokens tested, and the draft units a drafted token costs (1 for a
    plain chain, fewer where looked-up guesses ride along). A state's figures start from the row's
    pooled ones, worth ``prior_steps`` observations. ``calibration``: draft tokens kept per token
    Leviathan's formula expected at the step's alpha and k; where acceptance comes in runs, a decayed
    alpha lags each switch and the formula alone errs one way for long stretches."""

    def __init__(self, priors: SizingPriors, lookup: bool, calibrated: bool = True):
        w, d = priors.prior_steps, priors.decay
        self.calibrated, self.weight, self.clamp = calibrated, w, priors.calibration_range
        self.pooled_alpha, self.pooled_units = Rate(priors.alpha, w, d), Rate(1.0, w, d)
        self.alpha = {s: Rate(0.0, 0.0, d) for s in ((0, 1) if lookup else ())}  # per state: its own steps only
        self.units = {s: Rate(0.0, 0.0, d) for s in self.alpha}
        self.kept = Rate(priors.calibration, w, d)

    @property
    def calibration(self) -> float:
        return min(self.clamp[1], max(self.clamp[0], self.kept.value)) if self.calibrated else 1.0

    def _shrunk(self, own: dict[Optional[int], Rate], pooled: Rate, state: Optional[int]) -> float:
        if state not in own:
            return pooled.value
        return (own[state].num + self.weight * pooled.value) / (own[state].den + self.weight)

    def alpha_of(self, state: Optional[int]) -> float:
        """P(the target keeps a draft token) in steps begun in ``state`` (None: all steps)."""
        return self._shrunk(self.alpha, self.pooled_alpha, state)

    def units_of(self, state: Optional[int]) -> float:
        """Draft units per drafted token in steps begun in ``state`` (None: all steps)."""
        return self._shrunk(self.units, self.pooled_units, state)

    def observe(self, state: Optional[int], proposed: int, kept: int, units: float) -> None:
        """A step begun in ``state`` drafted ``proposed`` tokens for ``units`` draft units; the target
        kept the first ``kept`` (the next, if any, was tested and rejected)."""
        if proposed < 1:
            return
        self.kept.observe(kept, float(expected_tokens_per_step(self.alpha_of(state), proposed)) - 1.0)  # before alpha learns
        tested = kept + (kept < proposed)
        for alpha, units_rate in ((self.pooled_alpha, self.pooled_units), (self.alpha.get(state), self.units.get(state))):
            if alpha is not None:
                alpha.observe(kept, tested)
                units_rate.observe(units, proposed)

    def metrics(self, choices: list[Choice]) -> dict[str, object]:
        out: dict[str, object] = {}
        if not self.alpha:
            out["sizing_alpha"] = self.pooled_alpha.value
        else:
            out["sizing_lookup_share"] = sum(ch.state == 1 for ch in choices) / len(choices) if choices else None
            for state, name in ((1, "hit"), (0, "miss")):
                out[f"sizing_alpha_{name}"], out[f"sizing_units_per_token_{name}"] = self.alpha_of(state), self.units_of(state)
        if self.calibrated:
            out["sizing_calibration"] = self.calibration
        return out


class ChainSizer:
    """k=auto for one row: before each step, the k in 1..min(k_max, room) with the most expected
    tokens per unit of cost, c u per drafted token (u: draft units a token in the step's lookup state)
    and the verify pass plus overhead (:func:`~spsamp.cost_model.best_chain_k`)."""

    def __init__(self, costs: Costs, lookup: bool, priors: SizingPriors = PRIORS):
        self.priors, self.cost = priors, StepCost(costs, priors)
        self.estimate = ChainEstimate(priors, lookup)
        self.choices: list[Choice] = []

    def choose(self, state: Optional[int], room: int) -> int:
        """The next step's k; ``room``: the most draft tokens the step can still use (0: a plain step)."""
        k_max = min(self.priors.k_max, room)
        if k_max < 1:
            return 0
        est = self.estimate
        size, tokens, cost = best_chain_k([est.alpha_of(state)], [k_max], self.cost.c * est.units_of(state), self.cost.verify,
                                          self.cost.vd, k_max=k_max, scale=est.calibration, k_min=1)
        self.choices.append(Choice(size, state, tokens, cost))
        return size

    def observe(self, prop: Proposal, kept: int, draft_s: float, target_s: float, overhead_s: float) -> None:
        units = draft_units(prop, self.cost.vd)
        self.cost.observe(draft_s, units, target_s, prop.size + 1, overhead_s)
        self.estimate.observe(self.choices[-1].state if self.choices else None, prop.size, kept, units)

    def metrics(self) -> dict[str, object]:
        """The row's ``sizing_*`` metrics (docs/records.md)."""
        return {**choice_metrics(self.choices, self.cost), **self.estimate.metrics(self.choices)} if self.choices else {}


def pays_back(tokens: float, cost: float, plain_tokens: int, plain_cost: float, left: int, once: float) -> bool:
    """Whether steps of ``tokens`` at ``cost``, against plain steps of ``plain_tokens`` at
    ``plain_cost``, save more than a one-time cost ``once`` over the ``left`` tokens still to decode:
    left (plain_cost / plain_tokens - cost / tokens) > once."""
    return left * (plain_cost / plain_tokens - cost / tokens) > once


class RowsChainSizer:
    """k=auto for a batch (:func:`spsamp.loop.speculate_rows`): one k in 0..k_max for every row of a
    step, the one with the most expected tokens per unit of the step's cost
    (:func:`~spsamp.cost_model.best_chain_k`, each pass priced by the tokens it feeds: k = 0, a plain
    batched step, wins when no chain pays for its draft passes and wider verify pass). The batch's
    state: one :class:`~spsamp.cost_model.StepCost` and one :class:`ChainEstimate` per row (rows
    accept differently). A row's choices are the batch's steps while it was live, with the row's share
    of each step's predicted tokens and the step's cost in plain batched steps, so its predicted
    speedup is over plain batched decoding."""

    def __init__(self, costs: Costs, rows: int, priors: SizingPriors = PRIORS):
        self.priors, self.cost = priors, StepCost(costs, priors)
        self.estimates = [ChainEstimate(priors, False, calibrated=False) for _ in range(rows)]
        self.row_choices: list[list[Choice]] = [[] for _ in range(rows)]
        # a plain step measures no acceptance, so a batch at k = 0 would keep the estimate that made it
        # so: after `explore_after` plain steps (and at the first step) one k = 1 step measures it
        # again, the wait doubling each time no chain pays
        self.plain_run, self.explore_after = 0, 0

    def choose(self, rooms: list[Optional[int]], fed: int) -> int:
        """The step's k; ``rooms[i]``: the most draft tokens row i can still use (None: finished);
        ``fed``: the most tokens the draft's first pass must feed a row (1, 2 after a full accept, more
        when the draft catches up on the prompts or on plain steps' tokens)."""
        live = [i for i, r in enumerate(rooms) if r is not None]
        if not live:
            return 0
        alphas, cap = [self.estimates[i].alpha_of(None) for i in live], [rooms[i] for i in live]
        first = min(2, fed)
        args = (self.cost.c, self.cost.verify, self.cost.vd, len(rooms), first)
        catch_up = self.cost.c * (self.cost.vd.wide(len(rooms) * fed) - self.cost.vd.wide(len(rooms) * first))
        plain_tokens, plain = chain_step(alphas, cap, 0, *args)
        size, tokens, cost = best_chain_k(alphas, cap, *args, k_max=self.priors.k_max)
        if size > 0 and not pays_back(tokens, cost, len(live), plain, sum(cap) + len(live), catch_up):
            size, tokens, cost = 0, plain_tokens, plain  # pays per step, not for the catch-up
        if size > 0:
            self.plain_run, self.explore_after = 0, self.priors.explore_after
        elif self.plain_run >= self.explore_after and max(cap) >= 1 and self.could_pay(cap, args, plain, catch_up):
            size, (tokens, cost) = 1, chain_step(alphas, cap, 1, *args)
            self.plain_run, self.explore_after = 0, max(self.priors.explore_after, 2 * self.explore_after)
        else:
            self.plain_run += 1
        cost += catch_up if size > 0 else 0.0  # this step's draft pass pays it
        for i in live:
            self.row_choices[i].append(Choice(size, None, tokens / len(live), cost / plain))
        return size

    def could_pay(self, cap: list[int], args: tuple, plain: float, catch_up: float) -> bool:
        """Whether chains at a good pair's acceptance (``SizingPriors.explore_alpha``) would pay back
        the catch-up: re-measuring acceptance is worth a k = 1 step only then."""
        size, tokens, cost = best_chain_k([self.priors.explore_alpha] * len(cap), cap, *args, k_max=self.priors.k_max)
        return size > 0 and pays_back(tokens, cost, len(cap), plain, sum(cap) + len(cap), catch_up)

    def observe_rows(self, step: RowsStep) -> None:
        # a first pass wider than 2 tokens a row caught the draft up: a one-time cost that choose()
        # prices itself; read as a draft pass, it would make every later chain look too dear
        caught_up = step.draft_widths and step.draft_widths[0] > 2 * len(step.proposals)
        units = 0.0 if caught_up else sum(self.cost.vd(w) for w in step.draft_widths)
        self.cost.observe(step.draft_s, units, step.target_s, step.verify_width, step.overhead_s)
        for est, prop, kept in zip(self.estimates, step.proposals, step.kept):
            if kept is not None:
                est.observe(None, prop.size, kept, float(prop.size))

    def row_metrics(self, row: int) -> dict[str, object]:
        """Row ``row``'s ``sizing_*`` metrics: the batch's choices while it was live, its costs and the row's acceptance."""
        choices = self.row_choices[row]
        return {**choice_metrics(choices, self.cost), **self.estimates[row].metrics(choices)} if choices else {}


class TreeSizer:
    """grow=cost: the tree drafter asks, pass by pass, how many nodes to expand
    (:func:`~spsamp.cost_model.expansion_width`) and which prefix to verify
    (:func:`~spsamp.cost_model.tree_speed`), under the row's costs and ``calibration``: tokens the
    target accepted per unit of the draft's own expectation (the verified nodes' path probabilities)."""

    def __init__(self, costs: Costs, priors: SizingPriors = PRIORS):
        self.priors, self.cost = priors, StepCost(costs, priors)
        self.accepted = Rate(priors.calibration, priors.prior_steps, priors.decay)
        self.choices: list[Choice] = []

    @property
    def calibration(self) -> float:
        lo, hi = self.priors.calibration_range
        return min(hi, max(lo, self.accepted.value))

    def record(self, size: int, tokens: float, cost: float) -> None:
        self.choices.append(Choice(size, None, tokens, cost))

    def observe(self, prop: Proposal, kept: int, draft_s: float, target_s: float, overhead_s: float) -> None:
        if prop.stats is None:
            return
        self.cost.observe(draft_s, draft_units(prop, self.cost.vd), target_s, prop.size + 1, overhead_s)
        if prop.size:
            self.accepted.observe(kept, prop.stats.expected)

    def metrics(self) -> dict[str, object]:
        """The row's ``sizing_*`` metrics (docs/records.md)."""
        return {**choice_metrics(self.choices, self.cost), "sizing_calibration": self.calibration} if self.choices else {}
