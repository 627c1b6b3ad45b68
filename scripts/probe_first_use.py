#!/usr/bin/env python
"""Does a pass over a new number of tokens cost more the first time (kernel built at first use)?

    .venv/bin/python scripts/probe_first_use.py --model qwen25_coder_05b_15b --threads 2

k=auto changes k during a decode, so its verification passes meet widths (k+1 tokens) a fixed k
never does. If the linear kernels (oneDNN with ``cpu_linear=onednn``) built a primitive on the
first pass of each new width, k=auto would pay a cost the cost model does not price. This probe
times each width's first pass and the median of the next ``--repeats`` passes, both relative to
a warm 1-token pass, for the target and the draft, widths in a shuffled order after a warm-up
at 1 and 5 tokens only (what a fixed k=4 decode would have warmed). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import random
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_lossless import load_pair  # noqa: E402
from spsamp.cost_model import pass_time  # noqa: E402
from spsamp.models.threads import set_threads  # noqa: E402
from spsamp.system_info import system_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen25_coder_05b_15b")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cpu-linear", default="auto")
    ap.add_argument("--widths", default="2,3,4,6,7,8,9,10,11,12,13", help="new widths to probe (k+1 of k=auto's choices)")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--prefix", type=int, default=100, help="tokens in the cache before each pass")
    args = ap.parse_args()
    set_threads(args.threads)
    _, target, draft = load_pair(args.model, args.cpu_linear)
    widths = [int(w) for w in args.widths.split(",")]
    random.Random(0).shuffle(widths)
    g = torch.Generator().manual_seed(0)
    vocab = min(target.vocab_size, draft.vocab_size, 1000)
    prefix = torch.randint(0, vocab, (args.prefix,), generator=g)
    new = torch.randint(0, vocab, (max(widths),), generator=g)
    info = system_info()
    print("# command: " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]))
    print(f"# probe_first_use {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC | "
          f"{info.get('cpu_model') or platform.processor()} | threads={torch.get_num_threads()} | torch {torch.__version__} | "
          f"target {target.name} ({target.info.get('dtype')}, {target.info.get('cpu_linear')}), draft {draft.name} "
          f"({draft.info.get('dtype')}, {draft.info.get('cpu_linear')})\n")
    print("| model | width | first pass / 1-token pass | later passes (median) / 1-token pass | first - later |")
    print("|---|---|---|---|---|")
    for lm in (target, draft):
        lm.prefill(prefix)

        def timed(w: int) -> float:
            return pass_time(lm, new, w)

        for w in (1, 1, 1, 5, 5, 5):  # warm-up: what a fixed-k decode (k=4) has already run
            timed(w)
        one = statistics.median(timed(1) for _ in range(5))
        diffs = []
        for w in widths:
            first = timed(w) / one
            later = statistics.median(timed(w) for _ in range(args.repeats)) / one
            diffs.append(first - later)
            print(f"| {lm.name} | {w} | {first:.2f} | {later:.2f} | {first - later:+.2f} |")
        print(f"| {lm.name} | mean over widths | | | **{statistics.mean(diffs):+.2f}** |")
        lm.reset()


if __name__ == "__main__":
    main()
