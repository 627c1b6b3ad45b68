#!/usr/bin/env python
"""Mined samples per minute, this checkout's miner against an older commit's, interleaved in one process.

    .venv/bin/python scripts/mining_throughput.py --before 4d6f9d1 --batch-before 16 --prompts 8 --blocks 2 \\
        --tokens 384 model=qwen25_coder_05b_15b method=autojudge_arithmetic

Loads the pair once, imports ``spsamp/autojudge/mining.py`` as it was at ``--before`` (``git show``)
beside the current one, and mines the same prompts (the start of ``method.mining_source``'s stream)
with both, in ``--blocks`` consecutive blocks of prompts (a batched miner fills its batch across
the prompts of a block), alternating which goes first per block so that a busy shared machine
slows both alike. Prints per block the seconds and samples of each, whether the labels agree, and
the totals as samples per minute. No journal: every prompt is mined by both. ``--batch-before``
sets the older miner's ``mining_batch`` (default: the same as this checkout's).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import itertools
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from spsamp.autojudge import mining as after  # noqa: E402
from spsamp.autojudge.checks import make_check  # noqa: E402
from spsamp.config import validate  # noqa: E402
from spsamp.decoders.autojudge import AutoJudgeDecoder  # noqa: E402
from spsamp.models import load_model  # noqa: E402


def module_at(rev: str):
    src = subprocess.run(["git", "show", f"{rev}:spsamp/autojudge/mining.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "mining_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("spsamp.autojudge.mining_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="main", help="git revision of the miner to compare against")
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64, help="mining_max_tokens")
    ap.add_argument("--blocks", type=int, default=0, help="blocks of prompts (default: one per prompt)")
    ap.add_argument("--batch-before", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*args.overrides, f"method.mining_max_tokens={args.tokens}"])
    run, params = validate(cfg)
    before = module_at(args.before)
    t = time.perf_counter()
    target, draft = load_model(run.model.target, run.hardware), load_model(run.model.draft, run.hardware)
    print(f"models loaded in {time.perf_counter() - t:.0f}s", flush=True)
    dec = AutoJudgeDecoder(**asdict(params))
    prompts = list(itertools.islice(dec.mining_stream(target, run), args.prompts))
    check = make_check(params.importance_check, params.continuation_window, params.continuation_match_len, params.continuation_tau,
                       timeout_s=run.dataset.check_timeout_s)
    need_p = params.features == "concat"
    total = {"before": [0.0, 0], "after": [0.0, 0]}
    same = True
    blocks = max(1, min(args.blocks or len(prompts), len(prompts)))
    batches = {"before": params.mining_batch if args.batch_before is None else args.batch_before, "after": params.mining_batch}
    for k in range(blocks):
        block = prompts[k * len(prompts) // blocks : (k + 1) * len(prompts) // blocks]
        order = [("before", before), ("after", after)] if k % 2 == 0 else [("after", after), ("before", before)]
        got = {}
        for name, mod in order:
            t = time.perf_counter()
            # settings an older miner lacks stay at its behaviour; those it has are set alike for both
            new = {"answer_k": params.mining_answer_k} if "answer_k" in inspect.signature(mod.mine).parameters else {}
            m = mod.mine(target, draft, block, args.tokens, check, need_draft_hidden=need_p, batch=batches[name], **new)
            dt = time.perf_counter() - t
            total[name][0] += dt
            total[name][1] += len(m)
            got[name] = (m.labels, m.positions, dt, m.decoded_tokens)
        agree = got["before"][:2] == got["after"][:2]
        same &= agree
        print(f"{','.join(pr.id for pr in block)}: before {got['before'][2]:.1f}s {len(got['before'][0])} samples "
              f"({got['before'][3]} continuation tokens), after {got['after'][2]:.1f}s {len(got['after'][0])} samples "
              f"({got['after'][3]} continuation tokens), labels {'agree' if agree else 'DIFFER'}", flush=True)
    for name, (s, n) in total.items():
        print(f"{name}: {n} samples in {s:.1f}s = {60 * n / s:.1f} samples/min")
    print(f"speedup {total['before'][0] / total['after'][0]:.2f}x (time for the same prompts); labels {'identical' if same else 'differ'}")


if __name__ == "__main__":
    main()
