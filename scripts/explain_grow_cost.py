"""Where a ``method.grow=cost`` prediction's error comes from, step by step, on a real pair.

bench_lossless.py reports grow=cost's predicted speedup against the measured one; this splits the
error into its three factors (the prediction is (1 + scale * expected) / (c * spent + v(n + 1)) per
step, in single-token target passes T1 — the run's own once a plain step timed one, else the
probe's — with v scaled by the run's verify scale; spsamp.cost_model.tree_speed):

- tokens: predicted tokens per step (1 + calibration scale x the verified tree's value) over the
  tokens the step kept;
- cost: the predicted step cost (c x draft units + v(nodes + 1), in T1) over the seconds the step
  spent drafting and verifying, in the T1 it was priced in;
- unit: the baseline's decode seconds per token over T1 (the steps' T1, weighed by their seconds;
  the prediction assumes one T1 per token).

predicted / measured = tokens / (cost x unit), up to the time a step spends outside drafting and
verifying and the pooling of rows.

It runs SpecExec grow=cost and then plain decoding on the same prompts (decode phase only).

    python scripts/explain_grow_cost.py --prompts 6 --temperature 0 [--set dataset=humaneval --set dataset.split=test]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lossless import load_pair, round_robin, timed  # noqa: E402

from spsamp.config import GenerationConfig  # noqa: E402
from spsamp.cost_model import scaled_verify  # noqa: E402
from spsamp.data import load_prompts  # noqa: E402
from spsamp.data.chat import encode, messages_for  # noqa: E402
from spsamp.decoders.baseline import BaselineDecoder  # noqa: E402
from spsamp.decoders.specexec import SpecExecDecoder  # noqa: E402
from spsamp.drafting.tree import TreeDrafter  # noqa: E402
from spsamp.models.threads import set_threads  # noqa: E402
from spsamp.proposals import tree_path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen25_coder_05b_15b")
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--budget", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=["dataset=mt_bench", "dataset.path=../shared/datasets/mt_bench.jsonl"],
                    metavar="KEY=VALUE", help="config overrides (default: MT-Bench first turns)")
    args = ap.parse_args()
    set_threads(args.threads)
    run, target, draft = load_pair(args.model, "auto", tuple(args.set))
    prompts = round_robin(load_prompts(run.dataset))[: args.prompts]
    ids_list = [encode(target.tokenizer, messages_for(None, p.turns[:1], []), True) for p in prompts]
    dec = SpecExecDecoder(budget=args.budget, parallel_branches=args.width, grow="cost")
    dec.prepare(target, draft, run)
    costs = dec.drafter.costs
    # (predicted tokens, kept + 1, predicted cost in T1, seconds, seconds in the T1 the step was priced in)
    steps: list[tuple[float, int, float, float, float]] = []
    observe = TreeDrafter.observe

    def logged(self) -> None:  # the step's outcome, read where the drafter reads it
        if self._last is not None:
            st, base, prop, draft_s, target_s = self._last
            kept = len(tree_path(prop.tokens.tolist(), prop.parents.tolist(), list(st.seq[base:])))
            s = prop.stats
            seconds = st.draft_s - draft_s + st.target_s - target_s
            steps.append((1 + s.calibration * s.expected, 1 + kept, s.c * s.spent + scaled_verify(costs.v, s.v_scale)(prop.size + 1),
                          seconds, seconds / (s.t1_s or costs.target_pass_s)))
        observe(self)

    TreeDrafter.observe = logged
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    decode: dict[str, list[float]] = {"grow": [0.0, 0], "baseline": [0.0, 0]}  # decode seconds, tokens after the first
    predicted: list[float] = []
    for name, fn in (("grow", timed(dec, target, draft, target.eos_ids)), ("baseline", timed(BaselineDecoder(), target, None, target.eos_ids))):
        fn(ids_list[0], GenerationConfig(max_new_tokens=8, temperature=args.temperature), 0)  # warm-up
        if name == "grow":
            steps.clear()  # the warm-up's
        for i, ids in enumerate(ids_list):
            t0 = time.perf_counter()
            n, st, ttft, _ = fn(ids, gen, 1000 + i)
            decode[name][0] += time.perf_counter() - t0 - ttft
            decode[name][1] += n - 1
            if name == "grow":
                predicted.append(st.extra["grow_predicted_speedup"])
    t1 = sum(s[3] for s in steps) / sum(s[4] for s in steps)  # the steps' T1, weighed by their seconds
    tokens = sum(s[0] for s in steps) / sum(s[1] for s in steps)
    cost = sum(s[2] for s in steps) / sum(s[4] for s in steps)
    unit = decode["baseline"][0] / decode["baseline"][1] / t1
    measured = (decode["baseline"][0] / decode["baseline"][1]) / (decode["grow"][0] / decode["grow"][1])
    pred = sum(predicted) / len(predicted)
    print(f"# {args.model}, {len(ids_list)} prompts, T={args.temperature}, budget {args.budget}x{args.width} grow=cost, "
          f"{len(steps)} steps; probe: c={costs.c:.3f}, T1={costs.target_pass_s * 1000:.0f} ms, {costs.v.describe()}; "
          f"the steps' T1: {t1 * 1000:.0f} ms")
    print(f"tokens predicted / kept: {tokens:.3f}")
    print(f"step cost predicted / spent (drafting + verifying, in T1): {cost:.3f}")
    print(f"baseline decode seconds per token / T1: {unit:.3f}")
    print(f"predicted {pred:.2f}x (mean of rows) vs measured {measured:.2f}x in the decode phase: error {pred / measured - 1:+.0%} "
          f"(the three factors give {tokens / (cost * unit) - 1:+.0%}; the rest is time outside drafting and verifying, "
          f"and the rows' pooling)")


if __name__ == "__main__":
    main()
