#!/usr/bin/env python
"""Benchmark ``method=prompt_lookup`` against transformers' prompt lookup on the same prompts, in one run.

    .venv/bin/python scripts/bench_prompt_lookup.py --mt-bench /work/shared/datasets/mt_bench.jsonl
    .venv/bin/python scripts/bench_prompt_lookup.py --k 4,10 --max-ngram 2 --temps 0,0.7 --mt-bench-questions 10

Prompts: the built-in extraction + coding first turns, plus (with ``--mt-bench``) the first turns
of MT-Bench's extraction + coding questions — tasks whose answers repeat their input, where prompt
lookup pays. Methods (target only, no draft model): spsamp ``baseline`` and transformers
``generate``; per k, ``prompt_lookup`` and ``hf_prompt_lookup``
(``generate(prompt_lookup_num_tokens=k, max_matching_ngram_size=max_ngram)``) on the very same
loaded model. Methods run round-robin per prompt, so drift of a shared machine hits all alike;
tokens/s = all new tokens / all wall time (prefill included). At temperature 0 every method must
give the baseline's tokens (fp32 SmolLM2): the script counts the prompts where they do.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from spsamp.config import GenerationConfig, validate  # noqa: E402
from spsamp.data import load_prompts, read_question_file  # noqa: E402
from spsamp.data.chat import encode, messages_for  # noqa: E402
from spsamp.decoders.baseline import BaselineDecoder  # noqa: E402
from spsamp.decoders.hf_generate import HFGenerateDecoder  # noqa: E402
from spsamp.decoders.hf_prompt_lookup import HFPromptLookupDecoder  # noqa: E402
from spsamp.decoders.prompt_lookup import PromptLookupDecoder  # noqa: E402
from spsamp.loop import truncate_at_eos  # noqa: E402
from spsamp.models import load_model  # noqa: E402
from spsamp.models.threads import set_threads  # noqa: E402
from spsamp.system_info import system_info  # noqa: E402

CATEGORIES = ("extraction", "coding")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2_135m", help="a model preset; only its target is loaded")
    ap.add_argument("--mt-bench", default=None, help="FastChat question file (e.g. /work/shared/datasets/mt_bench.jsonl)")
    ap.add_argument("--mt-bench-questions", type=int, default=20, help="at most this many MT-Bench extraction + coding questions")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--k", default="10", help="prompt_lookup_num_tokens, comma-separated")
    ap.add_argument("--max-ngram", type=int, default=2)
    ap.add_argument("--temps", default="0")
    ap.add_argument("--threads", type=int, default=None, help="default: spsamp/models/threads.py")
    args = ap.parse_args()
    set_threads(args.threads)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={args.model}", "method=prompt_lookup"])
    run, _ = validate(cfg)
    target = load_model(run.model.target, run.hardware, run.paths.cache_dir)
    prompts = [("builtin", p.id, p.turns[0]) for p in load_prompts(run.dataset) if p.category in CATEGORIES]
    if args.mt_bench:
        qs = [q for q in read_question_file(Path(args.mt_bench)) if q.category in CATEGORIES][: args.mt_bench_questions]
        prompts += [("mt_bench", q.id, q.turns[0]) for q in qs]
    ids_list = [encode(target.tokenizer, messages_for(None, (text,), []), True) for _, _, text in prompts]
    ks = [int(k) for k in args.k.split(",")]
    methods = {"baseline": BaselineDecoder(), "hf_generate": HFGenerateDecoder()}
    for k in ks:
        methods[f"prompt_lookup_k{k}"] = PromptLookupDecoder(k=k, max_ngram=args.max_ngram)
        methods[f"hf_prompt_lookup_k{k}"] = HFPromptLookupDecoder(k=k, max_ngram=args.max_ngram)
    info = system_info()
    print(f"# bench_prompt_lookup {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC | "
          f"{info.get('cpu_model') or platform.processor()} | threads={torch.get_num_threads()} | torch {torch.__version__} | "
          f"transformers {info.get('transformers_version')} | git {info.get('git_sha')}")
    print(f"# {args.model} target {target.name} ({target.info.get('dtype')}, cpu_linear -> {target.info.get('cpu_linear')}); "
          f"{sum(s == 'builtin' for s, _, _ in prompts)} built-in + {sum(s == 'mt_bench' for s, _, _ in prompts)} MT-Bench "
          f"{'/'.join(CATEGORIES)} first turns; {args.max_new_tokens} new tokens; k={ks}, max_ngram={args.max_ngram}\n")
    eos = target.eos_ids
    for temp in [float(t) for t in args.temps.split(",")]:
        gen = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=temp)
        for dec in methods.values():  # warm-up
            dec.generate(target, None, ids_list[0], GenerationConfig(max_new_tokens=8, temperature=temp), torch.Generator().manual_seed(0))
        # per source: tokens, seconds, target calls, accepted, proposed, same tokens as baseline
        tot = {(src, m): [0, 0.0, 0, 0, 0, 0] for src in ("builtin", "mt_bench", "all") for m in methods}
        for i, (ids, (src, pid, _)) in enumerate(zip(ids_list, prompts)):
            base_tokens = None
            for name, dec in methods.items():  # round-robin per prompt
                t0 = time.perf_counter()
                out = dec.generate(target, None, ids, gen, torch.Generator().manual_seed(1000 + i))
                dt = time.perf_counter() - t0
                toks, _ = truncate_at_eos(out.tokens, eos, gen.max_new_tokens)
                base_tokens = toks if name == "baseline" else base_tokens
                for key in ((src, name), ("all", name)):
                    r = tot[key]
                    r[0] += len(toks)
                    r[1] += dt
                    r[2] += out.stats.target_calls
                    r[3] += out.stats.accepted
                    r[4] += out.stats.proposed
                    r[5] += int(toks == base_tokens)
            print(f"  {src}/{pid}: done", file=sys.stderr)
        print(f"## temperature {temp:g}\n")
        print("| prompts | method | tokens | tokens/s | vs baseline | vs transformers | tokens/target call | acceptance | same tokens as baseline |")
        print("|---|---|---|---|---|---|---|---|---|")
        for src in ("builtin", "mt_bench", "all"):
            n_prompts = sum(s == src for s, _, _ in prompts) if src != "all" else len(prompts)
            if not n_prompts:
                continue
            tps = {m: tot[(src, m)][0] / tot[(src, m)][1] for m in methods}
            for m in methods:
                r = tot[(src, m)]
                ref = {"baseline": "hf_generate", **{f"prompt_lookup_k{k}": f"hf_prompt_lookup_k{k}" for k in ks}}.get(m)
                vs_ref = f"{tps[m] / tps[ref]:.2f}x {ref}" if ref else ""
                acc = f"{r[3] / r[4]:.2f}" if r[4] else ""
                same = f"{r[5]}/{n_prompts}" if temp == 0 else ""
                print(f"| {src} ({n_prompts}) | {m} | {r[0]} | {tps[m]:.1f} | {tps[m] / tps['baseline']:.2f}x | {vs_ref} | "
                      f"{r[0] / r[2]:.2f} | {acc} | {same} |")
        print()


if __name__ == "__main__":
    main()
