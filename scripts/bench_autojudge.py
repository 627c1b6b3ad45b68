#!/usr/bin/env python
"""AutoJudge benchmark (Garipov et al. 2025): mine + train a judge on a model pair, then decode
held-out prompts with the target alone, exact SpS and AutoJudge at several thresholds.

    .venv/bin/python scripts/bench_autojudge.py                        # SmolLM2 pair, small budget
    .venv/bin/python scripts/bench_autojudge.py --model tiny_random --train-prompts 8 --eval-prompts 3 --open-prompts 2

Held-out math problems come from the built-in generator with a seed different from the mining
seed (the decoder refuses any overlap); open-ended prompts are the built-in non-math prompts.
Printed per method: accepted tokens per target step, judge accept rate, answer accuracy (math),
agreement with the target's greedy output (exact and difflib ratio over token ids), wall time and
speed relative to SpS and to target-only decoding, all measured in this run, prompts interleaved.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from spsamp.autojudge.checks import extract_final_number  # noqa: E402
from spsamp.data.arithmetic import generate_problems, write_question_file  # noqa: E402
from spsamp.config import validate  # noqa: E402
from spsamp.data.builtin import BUILTIN_PROMPTS  # noqa: E402
from spsamp.decoders.autojudge import AutoJudgeDecoder  # noqa: E402
from spsamp.decoders.baseline import BaselineDecoder  # noqa: E402
from spsamp.decoders.speculative import SpeculativeDecoder  # noqa: E402
from spsamp.models import check_same_tokenizer, load_model  # noqa: E402
from spsamp.data.chat import encode, messages_for  # noqa: E402
from spsamp.system_info import system_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--train-prompts", type=int, default=16, help="mining prompts (judge train + validation)")
    ap.add_argument("--mining-max-tokens", type=int, default=64)
    ap.add_argument("--eval-prompts", type=int, default=10, help="held-out math problems")
    ap.add_argument("--open-prompts", type=int, default=3, help="built-in non-math prompts (agreement only)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--thresholds", default="0,q25,q50,q75,1", help="numbers, or qNN = the judge's validation quantile")
    ap.add_argument("--eval-seed", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench_autojudge"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("spsamp.autojudge.mining").setLevel(logging.DEBUG)  # one line per mined prompt
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    problems = generate_problems(args.eval_prompts, seed=args.eval_seed)
    qfile = write_question_file(problems, out / "eval_problems.jsonl")
    ckpt = out / f"judge_{args.model}_n{args.train_prompts}_t{args.mining_max_tokens}.safetensors"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"model={args.model}", "method=autojudge", f"method.k={args.k}", f"method.checkpoint={ckpt}",
            f"method.mining_prompts={args.train_prompts}", f"method.mining_max_tokens={args.mining_max_tokens}",
            "dataset=mt_bench", f"dataset.path={qfile}", f"generation.max_new_tokens={args.max_new_tokens}",
        ])
    run, params = validate(cfg)
    target = load_model(run.model.target, run.hardware, run.paths.cache_dir)
    draft = load_model(run.model.draft, run.hardware, run.paths.cache_dir)
    check_same_tokenizer(target, draft)

    aj = AutoJudgeDecoder(**dataclasses.asdict(params))
    t0 = time.perf_counter()
    aj.prepare(target, draft, run)
    train_s = time.perf_counter() - t0
    tr, mining = aj.meta["training"], aj.meta["mining"]
    print(f"judge: {'reused' if aj.reused else 'mined + trained'} in {train_s:.1f}s -> {ckpt}")
    print(f"  mining: {mining['prompts']} prompts, {mining['answer_tokens']} answer tokens, {mining['mismatches']} mismatches "
          f"({mining['important']} important)")
    print(f"  judge: {tr['train_samples']} train samples ({100 * tr['train_important_frac']:.1f}% important), "
          f"train loss {tr['train_loss']:.4f}, val samples {tr['val_samples']} ({tr['val_important']} important), val AUC {tr['val_auc']}")
    print(f"  candidate thresholds (val quantiles 10/25/50/75/90%): {[round(t, 4) for t in aj.judge.thresholds]}")

    quant = dict(zip(("q10", "q25", "q50", "q75", "q90"), aj.judge.thresholds or [0.5] * 5))
    thresholds = [float(quant[t]) if t in quant else float(t) for t in args.thresholds.split(",")]
    methods: dict[str, object] = {"target": BaselineDecoder(), f"sps(k={args.k})": SpeculativeDecoder(k=args.k)}
    for thr in thresholds:
        methods[f"autojudge@{thr:.3g}"] = AutoJudgeDecoder(**{**dataclasses.asdict(params), "threshold": thr})
    for name, dec in methods.items():
        if isinstance(dec, AutoJudgeDecoder):
            dec.judge, dec.meta, dec.reused, dec.digest = aj.judge, aj.meta, aj.reused, aj.digest

    open_prompts = [p for p in BUILTIN_PROMPTS if p["category"] != "math"][: args.open_prompts]
    items = [("math", p.id, p.prompt, p.answer) for p in problems] + [("open", p["id"], p["turns"][0], None) for p in open_prompts]
    gen = run.generation
    rng = torch.Generator()
    # warm-up every method once (untimed)
    warm = encode(target.tokenizer, messages_for(None, (items[0][2],), []), gen.use_chat_template)
    for dec in methods.values():
        dec.generate(target, draft, warm, dataclasses.replace(gen, max_new_tokens=8), rng)

    res = {m: {"wall": 0.0, "tokens": 0, "steps_len": [], "correct": 0, "exact": {"math": 0, "open": 0}, "ratio": {"math": [], "open": []},
               "same_answer": 0, "judged": 0, "judge_ok": 0} for m in methods}
    ref: dict[str, list[int]] = {}
    for kind, pid, text, answer in items:
        ids = encode(target.tokenizer, messages_for(None, (text,), []), gen.use_chat_template)
        for name, dec in methods.items():  # interleaved: load drift hits every method alike
            t0 = time.perf_counter()
            o = dec.generate(target, draft, ids, gen, rng)
            wall = time.perf_counter() - t0
            r = res[name]
            r["wall"] += wall
            r["tokens"] += len(o.tokens)
            r["steps_len"] += o.stats.accepted_lengths
            r["judged"] += o.stats.extra.get("mismatches_judged", 0)
            r["judge_ok"] += o.stats.extra.get("judge_accepted", 0)
            if name == "target":
                ref[pid] = o.tokens
            r["exact"][kind] += int(o.tokens == ref[pid])
            r["ratio"][kind].append(difflib.SequenceMatcher(None, o.tokens, ref[pid], autojunk=False).ratio())
            if kind == "math":
                out_text = target.tokenizer.decode(o.tokens, skip_special_tokens=True)
                ref_text = target.tokenizer.decode(ref[pid], skip_special_tokens=True)
                got = extract_final_number(out_text)
                r["correct"] += int(got is not None and abs(got - answer) < 1e-6)
                r["same_answer"] += int(got == extract_final_number(ref_text))
        print(f"  done {kind} {pid}", flush=True)

    n_math, n_open = len(problems), len(open_prompts)
    sps = res[f"sps(k={args.k})"]
    rows = []
    hdr = f"{'method':<18} {'tok/step':>8} {'judge_acc':>9} {'acc(math)':>9} {'same_ans':>8} {'exact(m/o)':>10} {'ratio(m/o)':>11} {'tok/s':>7} {'vs SpS':>7} {'vs tgt':>7}"
    print("\n" + hdr + "\n" + "-" * len(hdr))
    for name, r in res.items():
        tps = r["tokens"] / r["wall"]
        row = {
            "method": name,
            "tokens_per_step": sum(r["steps_len"]) / len(r["steps_len"]) if r["steps_len"] else 1.0,
            "judge_accept_rate": r["judge_ok"] / r["judged"] if r["judged"] else None,
            "accuracy_math": r["correct"] / n_math,
            "same_answer_as_target": r["same_answer"] / n_math,
            "exact_match_math": r["exact"]["math"] / n_math,
            "exact_match_open": r["exact"]["open"] / n_open if n_open else None,
            "ratio_math": sum(r["ratio"]["math"]) / n_math,
            "ratio_open": sum(r["ratio"]["open"]) / n_open if n_open else None,
            "tokens_per_sec": tps,
            "speed_vs_sps": tps / (sps["tokens"] / sps["wall"]),
            "speed_vs_target": tps / (res["target"]["tokens"] / res["target"]["wall"]),
        }
        rows.append(row)
        ja = "-" if row["judge_accept_rate"] is None else f"{row['judge_accept_rate']:.2f}"
        eo = "-" if row["exact_match_open"] is None else f"{row['exact_match_open']:.2f}"
        ro = "-" if row["ratio_open"] is None else f"{row['ratio_open']:.2f}"
        print(f"{name:<18} {row['tokens_per_step']:>8.2f} {ja:>9} {row['accuracy_math']:>9.2f} {row['same_answer_as_target']:>8.2f} "
              f"{row['exact_match_math']:>5.2f}/{eo:<4} {row['ratio_math']:>6.2f}/{ro:<4} {tps:>7.1f} {row['speed_vs_sps']:>7.2f} {row['speed_vs_target']:>7.2f}")
    info = system_info()
    report = {
        "date": datetime.now(timezone.utc).isoformat(), "machine": {"cpu": info.get("cpu_model"), "threads": torch.get_num_threads(), "platform": platform.platform()},
        "args": vars(args), "train_s": train_s, "mining": mining, "training": tr, "thresholds": thresholds, "rows": rows,
    }
    (out / "bench_autojudge.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"\n{n_math} held-out math problems + {n_open} open prompts, {args.max_new_tokens} new tokens, k={args.k}; "
          f"machine: {info.get('cpu_model')}, {torch.get_num_threads()} threads; results -> {out / 'bench_autojudge.json'}")


if __name__ == "__main__":
    main()
