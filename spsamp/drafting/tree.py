"""SpecExec's draft tree (Svirschevski et al. 2024, Sec. 3.1-3.2, Alg. 2 "build tree"): the
``budget`` most likely continuations under p, by cumulative draft log-probability
log p(path) = sum of log p along the path.

Growth follows the official implementation (SpecExec v4b ``grow_tree``): every node discovered so
far is a candidate, and the tree is always the ``budget`` best of them. Each batched draft forward
expands (feeds to the draft, with tree positions and a tree mask) the ``parallel_branches`` best
tree nodes not expanded yet, so the tree deepens one level per pass however wide the pass is; their
top children become candidates. Growth stops when no tree node could still have a child good enough
to enter the tree (children are never likelier than their parent). A child whose cumulative
probability falls below ``branch_prune_threshold`` is pruned; nodes at ``max_depth`` are not expanded.

Because the tree is the best ``budget`` of one ranking, a smaller budget builds the first nodes of
a larger budget's tree (nodes are emitted in that ranking).

``grow="cost"`` (``method.grow=cost``) makes ``budget`` a cap and sizes each tree from the
row's costs (:class:`spsamp.drafting.sizing.TreeSizer`: the probe's c, v(n), vd(w), then the
row's own pass times): each pass
expands only as many of the best unexpanded nodes as raise the predicted speedup, growth stops
when another pass cannot pay for itself, and the target verifies the best-first prefix with the
highest predicted speedup (:func:`~spsamp.cost_model.expansion_width`,
:func:`~spsamp.cost_model.tree_speed`). A confident draft then grows a deep narrow tree, an
unsure one a shallow wide one — per step, not per run (EAGLE-2's dynamic tree, Li et al. 2024,
with SpecExec's exact acceptance). Node values are path probabilities times a calibration learnt
from what the target accepted (``TreeSizer.calibration``).

``lookup`` (``method.lookup``): each draft pass also feeds up to ``lookup`` tokens that followed the
latest n-gram's earlier occurrence in prompt + output + the path to the pass's best node (the
anchor: the root in the first pass), as the chain drafter does (spsamp.drafting.chain). The draft's
rows at those positions are the distributions of the looked-up path's nodes: each guess token
that is one of its parent's top children is then an expanded node for free (its KV entry is
exactly the one a later pass would have built), and growth continues below it. The first guess
token that is not stops the walk; its entry and the rest are never visible to a node and are
dropped with the step's other unused entries. The tree is still the ``budget`` best nodes of the
same ranking; only the passes spent reaching deep ones fall.

Ranking distribution: the draft at the generation temperature (top-k/top-p applied as for the
target); at temperature 0 the draft's plain softmax (T=1), since a one-hot draft would collapse
the tree to a chain. The tree's shape never affects exactness (see acceptance.tree).
"""

from __future__ import annotations

import heapq
import logging
import math
from typing import Any

import torch

from spsamp.acceptance.rejection import fit_logits
from spsamp.config import GenerationConfig
from spsamp.cost_model import PRIORS, Costs, SizingPriors, expansion_width, measure_costs, probe_costs, tree_speed
from spsamp.drafting.lookup import lookup
from spsamp.drafting.sizing import TreeSizer
from spsamp.proposals import Proposal, Step, TreeStats
from spsamp.sampling import logits_to_probs
from spsamp.verification import attention_masks

log = logging.getLogger(__name__)


class TreeDrafter:
    needs_model = True

    def __init__(self, budget: int, parallel_branches: int, branch_prune_threshold: float, max_depth: int,
                 grow: str = "budget", lookup: int = 0, lookup_ngram: int | None = None, lookup_min_ngram: int | None = None,
                 priors: SizingPriors = PRIORS):
        if lookup and not (lookup_ngram and lookup_min_ngram):
            raise ValueError("TreeDrafter: lookup needs lookup_ngram and lookup_min_ngram (SpecExecDecoder.Params holds the defaults)")
        self.lookup, self.lookup_ngram, self.lookup_min_ngram = lookup, lookup_ngram, lookup_min_ngram
        self.budget = budget
        self.parallel_branches = parallel_branches
        self.threshold = branch_prune_threshold
        self.log_threshold = math.log(branch_prune_threshold) if branch_prune_threshold > 0 else -math.inf
        self.max_depth = max_depth
        self.grow = grow
        self.priors = priors
        self.costs: Costs | None = None  # grow=cost: set by prepare(), else measured at the first row
        self.sizer: TreeSizer | None = None  # grow=cost: this row's

    def prepare(self, target: Any, draft: Any) -> None:
        """grow=cost: measure c, v(n) and vd(w) once per job (the decoder's prepare hook)."""
        if self.grow == "cost":
            self.costs = probe_costs(target, draft)
            log.info("grow=cost: measured c=%.3f, %s, draft %s", self.costs.c, self.costs.v.describe(), self.costs.vd.describe("vd"))

    def start(self, st: Any) -> None:
        """grow=cost: a row's sizing state is its own, from the probe's costs and the priors."""
        if self.grow == "cost":
            if self.costs is None:  # nobody called prepare(): measure on top of the caches, once
                self.costs = measure_costs(st.target, st.draft)
            self.sizer = TreeSizer(self.costs, self.priors)

    def size(self, st: Any) -> int:
        return self.budget

    def observe(self, step: Step) -> None:
        if self.sizer is not None:
            self.sizer.observe(step.proposal, step.kept, step.draft_s, step.target_s, step.overhead_s)

    def _probs(self, logits: torch.Tensor, gen: GenerationConfig, vocab: int) -> torch.Tensor:
        temp = gen.temperature if gen.temperature > 0 else 1.0
        return logits_to_probs(fit_logits(logits, vocab), temp, gen.top_k, gen.top_p)

    def propose(self, state: Any, size: int, max_depth: int, hidden: bool = False) -> Proposal:
        """Feed the pending tokens (ending with the root) to the draft, then grow a tree of at most
        ``size`` nodes and ``min(self.max_depth, max_depth)`` levels (no hidden states: no tree
        rule asks for them). Nodes come out best first (parents before children)."""
        depth_cap = min(self.max_depth, max_depth)
        if size < 1 or depth_cap < 1:
            return Proposal.empty()  # nothing could be used: not even the pending tokens are fed
        draft, gen, vocab, budget = state.draft, state.gen, state.vocab, size
        by_cost = self.grow == "cost"
        st = TreeStats()
        if by_cost:
            if self.sizer is None:
                self.start(state)
            sizer = self.sizer
            vd, scale, c, verify = sizer.cost.vd, sizer.calibration, sizer.cost.c, sizer.cost.verify
        pending = state.seq[draft.cache_len :]
        # every node discovered so far (candidates); the tree is the `budget` best of them
        tokens: list[int] = []
        parents: list[int] = []
        depths: list[int] = []
        path_lp: list[float] = []  # log p(path to node)
        slots: list[int] = []  # draft-cache index once expanded, else -1
        known = (tokens, parents, depths, path_lp, slots)

        guess = self._guess(state, known, -1, depth_cap)
        start = draft.cache_len
        logits = draft.forward(torch.tensor(pending + guess, dtype=torch.long), last_only=not guess).logits
        st.draft_calls = 1
        widths = [1 + len(guess)]  # tokens fed per pass (the root pass: root + guess), priced at vd(width)
        base = start + len(pending)  # prefix + root: every node sees all of it
        root_pos = base - 1
        key_pos = list(range(draft.cache_len))  # position of each draft-cache entry (sliding-window masks)
        probs = self._probs(logits[-(len(guess) + 1) :], gen, vocab)
        tops = self._discover(known, probs[:1], [-1], budget, st)
        tops += self._follow(known, guess, -1, base, probs[1:], depth_cap, budget, st)
        spent = vd(1 + len(guess)) if by_cost else 1.0  # draft passes paid for, in draft single-token passes
        while True:
            tree = self._best(path_lp, depths, budget)
            full = len(tree) == budget
            lowest = path_lp[tree[-1]] if tree else 0.0
            # children are never likelier than their parent: a node at the tree's lowest
            # probability cannot add a child to a full tree
            frontier = [i for i in tree if slots[i] < 0 and depths[i] < depth_cap and (not full or path_lp[i] > lowest)]
            if not frontier:
                break
            batch = frontier[: self.parallel_branches]
            if by_cost:
                child = sum(tops) / len(tops) if tops else 1.0
                m = expansion_width([math.exp(path_lp[i]) for i in tree], [math.exp(path_lp[i]) for i in batch], child,
                                    spent, c, verify, vd, budget, scale)
                if m == 0:
                    break  # no pass would pay for itself
                batch = batch[:m]
            anchor = batch[0]  # the best node this pass expands: a lookup continues its path
            guess = self._guess(state, known, anchor, depth_cap - depths[anchor])
            if by_cost:
                spent += vd(len(batch) + len(guess))
            # expand the batch in one draft forward: node j at position root_pos + depth(j), seeing
            # the prefix, its ancestors (expanded earlier: they are how it was found) and itself;
            # then the guess after the anchor, each token seeing the anchor's view and the guess so far
            cached, width = draft.cache_len, len(batch) + len(guess)
            visible = torch.zeros(width, cached + width, dtype=torch.bool)
            visible[:, :base] = True
            for j, i in enumerate(batch):
                a = parents[i]
                while a >= 0:
                    visible[j, slots[a]] = True
                    a = parents[a]
                visible[j, cached + j] = True
                slots[i] = cached + j
            for j in range(len(guess)):
                row = len(batch) + j
                visible[row] = visible[0]
                visible[row, cached + len(batch) : cached + row + 1] = True
            positions = [root_pos + depths[i] for i in batch] + [root_pos + depths[anchor] + 1 + j for j in range(len(guess))]
            pos = torch.tensor([positions], dtype=torch.long)
            key_pos += positions
            ids = torch.tensor([tokens[i] for i in batch] + guess, dtype=torch.long)
            mask = attention_masks(draft, visible, pos[0], torch.tensor(key_pos, dtype=torch.long))
            probs = self._probs(draft.forward(ids, position_ids=pos, attention_mask=mask).logits, gen, vocab)
            st.draft_calls += 1
            widths.append(width)
            st.expanded += len(batch)
            tops += self._discover(known, probs[: len(batch)], batch, budget, st)
            tops += self._follow(known, guess, anchor, cached + len(batch), probs[len(batch) :], depth_cap, budget, st)
        # `tree` is final: the loop leaves right after choosing it, with nothing expanded since
        if by_cost:  # verify only the best-first prefix whose predicted speedup is highest
            values = [math.exp(path_lp[i]) for i in tree]
            m, predicted = tree_speed(values, spent, c, verify, scale)
            st.cut, st.expected, tree = len(tree) - m, sum(values[:m]), tree[:m]
            cost = c * spent + verify(m + 1)
            sizer.record(m, predicted * cost, cost)
        index = {old: new for new, old in enumerate(tree)}
        has_child = {parents[i] for i in tree}
        st.size = len(tree)
        st.depth = max((depths[i] for i in tree), default=0)
        st.leaves = sum(1 for i in tree if i not in has_child)
        prop = Proposal(
            tokens=torch.tensor([tokens[i] for i in tree], dtype=torch.long),
            parents=torch.tensor([index[parents[i]] if parents[i] >= 0 else -1 for i in tree], dtype=torch.long),
            slots=[slots[i] for i in tree],
            draft_calls=st.draft_calls,
            pass_widths=widths,
            stats=st,
            _depths=torch.tensor([depths[i] for i in tree], dtype=torch.long),
        )
        return prop

    def _guess(self, state: Any, known: tuple, anchor: int, room: int) -> list[int]:
        """Up to ``room`` lookup tokens to continue the path to ``anchor`` (-1: the root) in the pass
        expanding it (its children lie ``room`` levels above the depth cap at most)."""
        if not self.lookup or room < 1:
            return []
        tokens, parents = known[0], known[1]
        path: list[int] = []
        while anchor >= 0:
            path.append(tokens[anchor])
            anchor = parents[anchor]
        return lookup(state.seq + path[::-1], min(self.lookup, room), self.lookup_ngram, state.eos_ids, self.lookup_min_ngram)

    def _follow(self, known: tuple, guess: list[int], anchor: int, first_slot: int, probs: torch.Tensor, depth_cap: int,
                budget: int, st: TreeStats) -> list[float]:
        """Walk a guess fed after ``anchor`` (its tokens at draft-cache slots ``first_slot``...,
        their rows ``probs``): each token that is a discovered child of the node before it becomes
        an expanded node (its top children discovered from its row); the first that is not ends
        the walk. Returns the top child probabilities, as :meth:`_discover`."""
        tokens, parents, depths, _, slots = known
        st.guessed += len(guess)
        node, tops = anchor, []
        for j, g in enumerate(guess):
            child = next((i for i in range(len(tokens)) if parents[i] == node and tokens[i] == g), None)
            if child is None or slots[child] >= 0:
                break
            slots[child] = first_slot + j
            st.guess_kept += 1  # not in `expanded`: that counts the batches' nodes (effective_parallelism)
            if depths[child] >= depth_cap:
                break  # a node at the depth cap has no children in the tree: its row is not needed
            tops += self._discover(known, probs[j : j + 1], [child], budget, st)
            node = child
        return tops

    @staticmethod
    def _best(path_lp: list[float], depths: list[int], budget: int) -> list[int]:
        # ties go to the shallower node, then the earlier found: a parent always precedes its
        # children (a child's log p(path) is at most its parent's), so the first b nodes are a tree
        return heapq.nsmallest(budget, range(len(path_lp)), key=lambda i: (-path_lp[i], depths[i], i))

    def _discover(self, known: tuple, probs: torch.Tensor, nodes: list[int], budget: int, st: TreeStats) -> list[float]:
        """Add the top children of each expanded node to the candidates; returns each node's top
        child probability (what grow=cost expects of the next expansion)."""
        # at most budget - depth children of a node can fit (its ancestors and itself come
        # first); log p(child path) = log p(parent) + log p(token | parent)
        tokens, parents, depths, path_lp, slots = known
        node_depths = [depths[node] if node >= 0 else 0 for node in nodes]
        m = min(budget - min(node_depths), probs.shape[-1])
        if m <= 0:
            return []
        top_p, top_i = torch.topk(probs, m, dim=-1)  # one call for the batch; each row keeps its own share
        rows_lp = torch.log(top_p).tolist()
        for node, depth, row_lp, row_id in zip(nodes, node_depths, rows_lp, top_i.tolist()):
            base_lp = path_lp[node] if node >= 0 else 0.0
            keep = max(0, budget - depth)
            row_lp, row_id = row_lp[:keep], row_id[:keep]
            for j, (lp, tok) in enumerate(zip(row_lp, row_id)):
                if lp == -math.inf:
                    break  # zero-probability children (top-k / top-p cut) are no candidates
                st.candidates += 1
                if base_lp + lp < self.log_threshold:
                    # sorted: every later child is below the threshold too
                    rest = sum(1 for x in row_lp[j:] if x != -math.inf)
                    st.candidates += rest - 1
                    st.pruned += rest
                    break
                tokens.append(tok)
                parents.append(node)
                depths.append(depth + 1)
                path_lp.append(base_lp + lp)
                slots.append(-1)
        return [math.exp(row[0]) for row in rows_lp]
