#!/usr/bin/env python
"""How many intra-op threads pay on this machine now: decode passes timed with each thread count,
interleaved (round-robin, so load from other processes hits every count alike), medians compared.

    .venv/bin/python scripts/bench_threads.py                          # SmolLM2, 1 vs all cores
    .venv/bin/python scripts/bench_threads.py --model qwen25_coder_05b_15b --threads 1,2 --rounds 5

Prints the machine, the load average, the default spsamp would pick (spsamp/models/threads.py)
and per thread count the median single-token pass time relative to 1 thread.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from spsamp.config import validate  # noqa: E402
from spsamp.models import load_model  # noqa: E402
from spsamp.models.threads import default_threads, usable_cpus  # noqa: E402
from spsamp.system_info import system_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--threads", default=None, help="thread counts, comma-separated (default: 1 and every usable core)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--passes", type=int, default=8, help="single-token passes per round and thread count")
    ap.add_argument("--cpu-linear", default="auto")
    args = ap.parse_args()
    counts = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, len(usable_cpus())})
    default, why = default_threads()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={args.model}", f"hardware.cpu_linear={args.cpu_linear}"])
    run, _ = validate(cfg)
    torch.set_num_threads(default)
    lm = load_model(run.model.target, run.hardware, run.paths.cache_dir)
    prompt = torch.randint(0, lm.vocab_size, (64,), generator=torch.Generator().manual_seed(0))
    lm.prefill(prompt)
    n, tok = lm.cache_len, prompt[-1:]
    times: dict[int, list[float]] = {t: [] for t in counts}
    for rnd in range(args.rounds + 1):  # round 0 warms every count up
        for t in counts if rnd % 2 else counts[::-1]:
            torch.set_num_threads(t)
            t0 = time.perf_counter()
            for _ in range(args.passes):
                lm.forward(tok)
                lm.crop(n)
            if rnd:
                times[t].append((time.perf_counter() - t0) / args.passes)
    info = system_info()
    print(f"# bench_threads {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC | {info.get('cpu_model')} | "
          f"{len(usable_cpus())} usable cores | load average {os.getloadavg()[0]:.2f} | torch {torch.__version__} | "
          f"{args.model} target ({lm.info.get('dtype')}, cpu_linear={lm.info.get('cpu_linear')})")
    print(f"# spsamp default: {default} thread(s) — {why}")
    ref = statistics.median(times[counts[0]])
    print("\n| threads | median pass time / 1 thread's | worst / best pass |")
    print("|---|---|---|")
    for t in counts:
        med = statistics.median(times[t])
        print(f"| {t} | {med / ref:.2f} | {max(times[t]) / min(times[t]):.1f} |")


if __name__ == "__main__":
    main()
