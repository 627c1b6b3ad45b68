"""``method.k=auto`` / ``method.budget=auto``: a drafter whose proposal size the cost model picks.

:class:`AutoSized` wraps any drafter (chain or tree). The loop asks ``size(st)`` before every step;
the wrapper first scores the previous step — which of the proposal's nodes the target accepted,
read back from the tokens that reached ``st.seq`` — into the acceptance estimate, then returns
the size of :class:`~spsamp.cost_model.AutoSize` (the k or budget with the best predicted speedup
under the measured costs). Choices adapt within a row; every row starts from the probe's costs and
the priors (sizing state belongs to a row, so a row sizes its steps the same decoded alone or after others).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from spsamp.cost_model import T1_EVERY, AutoSize, Costs, LookupStates, measure_costs, probe_costs
from spsamp.proposals import tree_path

log = logging.getLogger(__name__)

K_MAX = 16  # longest chain k=auto may choose
BUDGET_MAX = 64  # largest tree budget=auto may choose (v(n) is measured up to 64 new tokens)


def tree_visits(tokens: list[int], parents: list[int], after: list[int]) -> list[tuple[int, Optional[int]]]:
    """The nodes a descent visited, as (children offered, 1-based rank of the one the target took or
    None), from a proposal (``tokens``/``parents``, siblings in decreasing draft probability —
    the order both drafters emit them) and the tokens that followed the root in the output."""
    children: dict[int, list[tuple[int, int]]] = {}
    for i, (tok, par) in enumerate(zip(tokens, parents)):
        children.setdefault(par, []).append((tok, i))
    visits: list[tuple[int, Optional[int]]] = []
    node = -1
    for tok in after:
        kids = children.get(node, [])
        if not kids:
            break  # a leaf: nothing was offered here
        rank = next((r for r, (t, _) in enumerate(kids, 1) if t == tok), None)
        visits.append((len(kids), rank))
        if rank is None:
            break
        node = kids[rank - 1][1]
    return visits


class AutoSized:
    """A drafter that proposes ``auto.choose()`` tokens/nodes per step (see module doc).

    ``tree``: choose a best-first tree's budget (``width`` nodes per batched draft pass, at most
    ``max_depth`` deep) instead of a chain's k. Costs are measured by :meth:`prepare` (the
    decoder's prepare hook, once per job, on a random probe prompt) or, if nobody called it, in
    place at the first step (on top of the caches of the decode in progress).
    """

    def __init__(self, drafter: Any, tree: bool = False, width: int = 1, max_depth: int = 64):
        self.drafter = drafter
        self.tree, self.width, self.max_depth = tree, width, max_depth
        self.auto: Optional[AutoSize] = None
        self.needs_model = drafter.needs_model
        # (state, len(seq) at proposal, proposal, its draft, target and rest seconds before the step, lookup state)
        self._last: Optional[tuple[Any, int, Any, float, float, float, Optional[int]]] = None
        self._state: Optional[int] = None  # the lookup state the step being sized begins in
        self._costs: Optional[Costs] = None
        self._row_start = self._row_t1_start = 0  # this row's first sized and plain step (indices)

    def prepare(self, target: Any, draft: Any) -> None:
        self.set_costs(probe_costs(target, draft))

    def set_costs(self, costs: Costs) -> None:
        self._costs = costs
        self._fresh()
        log.info("%s=auto: measured c=%.3f, %s", "budget" if self.tree else "k", costs.c, costs.v.describe())

    def _fresh(self) -> None:
        """Sizing state from the probe's costs and the priors only (a row's start)."""
        costs = self._costs
        t1_every = self.auto.t1_every if self.auto is not None else (0 if self.tree else T1_EVERY)
        self.auto = AutoSize(costs.c, costs.v, BUDGET_MAX if self.tree else K_MAX, tree=self.tree, width=self.width,
                             max_depth=self.max_depth, vd=costs.vd, stop=getattr(self.drafter, "stop_below", None) is not None,
                             t1_every=t1_every, lookup=LookupStates() if getattr(self.drafter, "lookup", 0) else None)
        self.auto.observed.observe_probe(costs.target_pass_s)  # a T1 timing too (median of five passes)

    def start(self, st: Any) -> None:
        """A new row: fresh sizing state (the probe's costs and the priors); its metrics start here."""
        self.drafter.start(st)
        self.observe()  # the last row's last step, into the state about to be dropped
        if self._costs is not None:
            self._fresh()
        self._row_start = self._row_t1_start = 0

    def size(self, st: Any) -> int:
        if self.auto is None:
            self.set_costs(measure_costs(st.target, st.draft))  # no prepare(): measure in place, once
        self.observe()
        state = getattr(self.drafter, "lookup_state", None)
        self._state = state(st) if state is not None and self.auto.lookup is not None else None
        room = getattr(st, "room", None)  # a step keeps its path + one target token: room - 1 draft tokens
        return self.auto.choose(self._state, None if room is None else room - 1)

    def propose(self, st: Any, size: int, max_depth: int, hidden: bool) -> Any:
        prop = self.drafter.propose(st, size, max_depth, hidden)
        self._last = (st, len(st.seq), prop, st.draft_s, st.target_s, st.rest_s, self._state)  # seconds so far: the step's are added after it
        return prop

    def observe(self) -> None:
        """Score the last proposal against what its state's output now holds (once)."""
        if self._last is None:
            return
        st, base, prop, draft_s, target_s, rest_s, state = self._last
        self._last = None
        if prop.size and self.auto is not None:
            self.auto.observed.observe_rest(st.rest_s - rest_s)
            tokens, parents, after = prop.tokens.tolist(), prop.parents.tolist(), list(st.seq[base:])
            visits = tree_visits(tokens, parents, after)
            kept = sum(1 for _, rank in visits if rank == 1)  # draft tokens the target kept
            self.auto.acceptance.observe(visits)
            if self.auto.confidence is not None and isinstance(prop.stats, list):  # a stopped chain's sure flags
                self.auto.confidence.observe(prop.stats, kept)
            spent = self._spent(prop)
            if state is not None and spent is not None:
                self.auto.lookup.observe(state, spent, prop.size, visits)
            if self.auto.built is not None:
                self.auto.built.observe(tree_path(tokens, parents, after), prop.depths().tolist(), spent)
            self.auto.observed.observe(st.draft_s - draft_s, spent if spent is not None else float(prop.draft_calls),
                                       st.target_s - target_s, self.auto.v(prop.size + 1))
            if log.isEnabledFor(logging.DEBUG) and self.auto.step_costs:  # a step's prediction beside its outcome
                t1 = self.auto.observed.t1()
                log.debug("step of %s at T=%g: size %d, lookup state %s, predicted %.2f tokens for %.3f T1; kept %d (+1), drafted in %.1f ms, "
                          "verified in %.1f ms, T1 %s ms", self.describe(), st.gen.temperature, prop.size, state, self.auto.predicted[-1] * self.auto.step_costs[-1],
                          self.auto.step_costs[-1], kept, (st.draft_s - draft_s) * 1e3, (st.target_s - target_s) * 1e3,
                          f"{t1 * 1e3:.1f}" if t1 else "-")
        elif self.auto is not None:  # a plain step (cost_model.plain_step, or no room left): one single-token target pass
            self.auto.observed.observe_t1(st.target_s - target_s)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("plain step of %s at T=%g: %s", self.describe(), st.gen.temperature,
                          self.auto.observed.plain_trace(st.target_s - target_s))

    def _spent(self, prop: Any) -> Optional[float]:
        """The proposal's draft passes in draft single-token units: each at vd(tokens it fed) when
        the drafter says (``Proposal.pass_widths``), else the root pass, then passes of
        ``expanded / passes`` nodes on average (None if the drafter keeps no such stats)."""
        vd = (self.auto.vd or self.auto.v) if self.auto is not None else None
        if prop.pass_widths is not None and vd is not None:
            return sum(vd(w) for w in prop.pass_widths)
        passes, expanded = prop.draft_calls - 1, getattr(prop.stats, "expanded", None)
        if expanded is None or vd is None:
            return None
        return 1.0 + (passes * vd(max(1, round(expanded / passes))) if passes > 0 else 0.0)

    def describe(self) -> str:
        """What is sized, for logs: ``"budget=auto"``, ``"k=auto"``, ``"k=auto lookup=10"``."""
        lookup = getattr(self.drafter, "lookup", 0)
        return ("budget=auto" if self.tree else "k=auto") + (f" lookup={lookup}" if lookup else "")

    def metrics(self) -> dict[str, Any]:
        """This row's choices (for ``metrics_json``), its last step included."""
        self.observe()
        return self.auto.metrics(self._row_start, self._row_t1_start) if self.auto is not None else {}

    def __getattr__(self, name: str) -> Any:
        if name == "drafter":
            raise AttributeError(name)  # not set yet (copy / unpickle): no recursion
        return getattr(self.drafter, name)  # the wrapped drafter's own settings
