#!/usr/bin/env python
"""Benchmark the lossless methods against transformers on the same prompts, in one run.

    .venv/bin/python scripts/bench_lossless.py                      # 4 built-in prompts, 64 tokens, k=4
    .venv/bin/python scripts/bench_lossless.py --prompts 8 --k 1,2,3 --budgets 3,8,24 --temps 0,0.7

Prints, per temperature: spsamp baseline vs HF ``generate``; SpS vs HF assisted generation
(``assistant_model`` = the same draft, ``num_assistant_tokens=k``, constant schedule, no
confidence early-stop), each transformers row twice: on the very models spsamp runs
(``hardware.cpu_linear``, default auto: the implementations compared on equal footing) and on a
second copy with PyTorch's default kernels (``*_stock``: transformers as its users run it);
SpecExec vs SpS at equal and larger draft budgets (tokens/s and tokens per
target call); and the Leviathan et al. 2023 cost-model prediction for SpS beside the measured
speedup (and each auto row's own); and per step of each spsamp speculative row, the seconds
drafting, verifying and the rest, in baseline decode tokens, beside what the cost model charges
for them (which term a prediction's error is in). ``--draft-variant NAME=OVERRIDES`` loads a second form of the draft (e.g. int8 against
bf16) and repeats every spsamp row on it as ``<row>@NAME``. Methods run round-robin per prompt,
every other prompt in reverse order (ABBA: load drift from other processes that is linear over two
prompts hits all alike, whichever row runs first); tokens/s = all new tokens / all wall time
(prefill included), over the prompts.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from spsamp.config import GenerationConfig, validate  # noqa: E402
from spsamp.cost_model import alpha_from_counts, expected_tokens_per_step, measure_costs, predicted_speedup  # noqa: E402
from spsamp.data import load_prompts  # noqa: E402
from spsamp.decoders.base import truncate_at_eos  # noqa: E402
from spsamp.decoders.baseline import BaselineDecoder  # noqa: E402
from spsamp.decoders.hf_assisted import HFAssistedDecoder  # noqa: E402
from spsamp.decoders.hf_generate import HFGenerateDecoder  # noqa: E402
from spsamp.decoders.hf_prompt_lookup import HFPromptLookupDecoder  # noqa: E402
from spsamp.decoders.prompt_lookup import PromptLookupDecoder  # noqa: E402
from spsamp.decoders.specexec import SpecExecDecoder  # noqa: E402
from spsamp.decoders.speculative import SpeculativeDecoder  # noqa: E402
from spsamp.models import load_model  # noqa: E402
from spsamp.models.threads import set_threads  # noqa: E402
from spsamp.data.chat import encode, messages_for  # noqa: E402
from spsamp.system_info import system_info  # noqa: E402


def pair_config(model: str, cpu_linear: str = "auto", overrides: tuple[str, ...] = ()):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={model}", "method=speculative", f"hardware.cpu_linear={cpu_linear}", *overrides])
    return validate(cfg)[0]


def load_pair(model: str, cpu_linear: str = "auto", overrides: tuple[str, ...] = ()):
    run = pair_config(model, cpu_linear, overrides)
    return run, load_model(run.model.target, run.hardware, run.paths.cache_dir), load_model(run.model.draft, run.hardware, run.paths.cache_dir)


def load_draft(model: str, cpu_linear: str, overrides: tuple[str, ...]):
    """Only the draft of ``model`` with ``overrides`` applied (a --draft-variant)."""
    run = pair_config(model, cpu_linear, overrides)
    return load_model(run.model.draft, run.hardware, run.paths.cache_dir)


def parse_variant(item: str) -> tuple[str, tuple[str, ...]]:
    """``"int8=++model.draft.quantization=int8_dynamic;..."`` -> ("int8", (override, ...))."""
    name, sep, rest = item.partition("=")
    if not sep or not name.isidentifier() or not rest:
        raise SystemExit(f"bench_lossless: --draft-variant {item!r}: write NAME=OVERRIDE[;OVERRIDE...], "
                         "e.g. int8=++model.draft.quantization=int8_dynamic")
    return name, tuple(o for o in rest.split(";") if o)


def timed(decoder, target, draft, eos):
    def fn(ids, gen, seed):
        out = decoder.generate(target, draft, ids, gen, torch.Generator().manual_seed(seed))
        toks, _ = truncate_at_eos(out.tokens, eos, gen.max_new_tokens)
        return len(toks), out.stats, out.ttft_s, out.prefill_s
    return fn


def add_split(acc: dict[str, float], st, seconds: float, ttft: float, prefill: float) -> None:
    """Sum one row's decode phase (after the first token) into ``acc``: seconds proposing (draft
    passes and drafting), verifying (target passes) and the rest (acceptance, cache upkeep), with
    the counts to price them. The draft's prefill is what lies between the target's and the first
    token (the first token's own draw, well under a millisecond, with it)."""
    draft = st.extra["draft_time_s"] - (ttft - prefill)
    target = st.extra["target_time_s"] - prefill
    for key, value in (("decode", seconds - ttft), ("draft", draft), ("target", target), ("steps", st.target_calls - 1),
                       ("passes", max(st.draft_calls - 1, 0)), ("nodes", st.proposed)):
        acc[key] = acc.get(key, 0.0) + value


def split_lines(split: dict[str, dict[str, float]], costs, unit_s: float, variant_c: dict[str, float] | None = None,
                rest: dict[str, float] | None = None) -> list[str]:
    """Per step of each row, in baseline decode tokens of the same run (``unit_s`` seconds, the
    unit the cost model's speedups are in): measured draft / verify / rest against what the cost
    model charges (c per draft pass, v(n) per verification of n tokens, and for k=auto / grow=cost
    rows the loop's own work the run measured, ``rest[row]`` in its T1; 0 for the others).
    A ``<row>@NAME`` row is priced at its draft variant's c (``variant_c["@NAME"]``).
    Says which term a prediction's error is in."""
    out = [f"Time per step in baseline decode tokens ({unit_s * 1e3:.0f} ms; the cost probe's 1-token target pass: "
           f"{costs.target_pass_s / unit_s:.2f}): measured (cost model)"]
    for m, a in split.items():
        steps = max(a["steps"], 1)
        draft, target = a["draft"] / steps / unit_s, a["target"] / steps / unit_s
        rest_s = a["decode"] / steps / unit_s - draft - target
        passes, width = a["passes"] / steps, a["nodes"] / steps + 1
        _, at, name = m.partition("@")
        c = (variant_c or {}).get(at + name, costs.c)
        out.append(f"- {m}: draft {draft:.2f} ({passes:.1f} passes; c x passes = {c * passes:.2f}), verify {target:.2f} "
                   f"({width:.1f} tokens; v = {costs.v(round(width)):.2f}), rest {rest_s:.2f} ({(rest or {}).get(m, 0):.2g})")
    return out


def own_unit_error(rows: list[dict], prefix: str, pred: float, tokens_per_s: float) -> str:
    """The prediction against the row's decode speed in its own T1 (tokens per T1 the run timed,
    averaged over the steps it priced, ``<prefix>_t1_mean_s``): what the cost model can know. Over
    baseline it also carries how plain decoding's token time compared with the row's T1 in the
    same minutes, which drifts on a shared machine."""
    t1s = [r.get(f"{prefix}_t1_mean_s") for r in rows]
    if not all(t1s):
        return ""
    own = tokens_per_s * sum(t1s) / len(t1s)
    return f"; {own:.2f} tokens per T1 of its own (error {pred / own - 1:+.0%})"


def run_unit(rows: list[dict], prefix: str, base_token_s: float) -> str:
    """The run's own T1 (its plain steps' single-token target passes, the unit its last prediction
    was priced in) against plain decoding's decode seconds per token in the same run, and the scale
    verify passes were priced at (cost_model.ObservedCost); empty before a T1 was timed."""
    t1 = rows[-1].get(f"{prefix}_t1_s")
    if t1 is None:
        return ""
    plain = sum(r.get(f"{prefix}_t1_steps", 0) for r in rows)
    return (f", run's T1 {t1 * 1e3:.0f} ms ({t1 / base_token_s:.2f} of baseline's decode token; {plain} plain steps), "
            f"verify scale {rows[-1][f'{prefix}_verify_scale']:.2f}")


def pooled_prediction(rows: list[dict], measured_tokens: float) -> tuple[float, str]:
    """k=auto's prediction over a bench row's prompts, pooled as the measurement is (all tokens over
    all time: each prompt's steps x predicted tokens over its steps x predicted cost), and its tokens
    term beside the measured tokens per target call (prefill included). Rows written before the
    terms were recorded: the mean of their predictions, no terms."""
    if not all("auto_predicted_step_cost" in r for r in rows):
        return sum(r["auto_predicted_speedup"] for r in rows) / len(rows), ""
    steps = sum(r["auto_steps"] for r in rows)
    tokens = sum(r["auto_steps"] * r["auto_predicted_step_tokens"] for r in rows)
    cost = sum(r["auto_steps"] * r["auto_predicted_step_cost"] for r in rows)
    return tokens / cost, (f" ({tokens / steps:.2f} tokens per step, measured {measured_tokens:.2f} per target call; "
                           f"a step {cost / steps:.2f} T1)")


def lookup_states(row: dict) -> str:
    """A lookup cascade's pricing by lookup state at the row's end (cost_model.LookupStates), or ''."""
    if "auto_lookup_share" not in row:
        return ""
    fmt = lambda x, spec: "-" if x is None else format(x, spec)  # noqa: E731  (None: a state seen under 3 steps)
    return (f", {fmt(row['auto_lookup_share'], '.0%')} of steps began with a lookup guess (draft units per token "
            f"{fmt(row['auto_units_per_token_hit'], '.2f')} with, {fmt(row['auto_units_per_token_miss'], '.2f')} without; "
            f"alpha {fmt(row['auto_alpha_hit'], '.3f')} / {fmt(row['auto_alpha_miss'], '.3f')})")


@dataclass
class Totals:
    """One row's sums over a temperature's prompts."""
    tokens: int = 0
    seconds: float = 0.0
    decode_s: float = 0.0  # seconds after the first token (the decode phase the cost model predicts)
    target_calls: int = 0
    accepted: int = 0
    rejections: int = 0
    proposed: int = 0


def counterbalanced(methods: dict, i: int) -> list:
    """The rows to time on prompt ``i``: in order on even prompts, reversed on odd ones (an ABBA
    design), so that each row's mean position in time is the same over every two prompts."""
    items = list(methods.items())
    return items[::-1] if i % 2 else items


def round_robin(prompts: list) -> list:
    """Prompts ordered one per category in turn (file order within a category)."""
    by_cat: dict[str, list] = {}
    for p in prompts:
        by_cat.setdefault(p.category, []).append(p)
    out = []
    while any(by_cat.values()):
        out += [q.pop(0) for q in by_cat.values() if q]
    return out


def parse_budget(item: str, width: int) -> tuple[int, int, str]:
    """``"16"`` -> (16, width, "budget"); ``"32x16"`` -> (32, 16, "budget"); a trailing ``c``
    (``"32x16c"``) -> method.grow=cost, the budget a cap."""
    grow = "cost" if item.endswith("c") else "budget"
    b, x, w = item.removesuffix("c").partition("x")
    if b.isdigit() and int(b) >= 1 and (not x or (w.isdigit() and int(w) >= 1)):
        return int(b), int(w) if x else width, grow
    raise SystemExit(f"bench_lossless: --budgets item {item!r}: write B, BxW or either with a trailing c "
                     "(grow=cost), B and W >= 1, e.g. 8,32x16,32x16c")


def parse_stop(item: str) -> str:
    """A ``--stop-below`` item, checked: a probability strictly between 0 and 1, kept as written
    (it names the row ``sps_k<k>_stop<item>``)."""
    try:
        ok = 0 < float(item) < 1
    except ValueError:
        ok = False
    if ok:
        return item
    raise SystemExit(f"bench_lossless: --stop-below item {item!r}: write probabilities in (0, 1), comma-separated, e.g. 0.2,0.4")


def parse_lookup(item: str) -> int:
    """A ``--lookup`` item, checked: tokens looked up per draft pass, an integer >= 1 (it names the
    row ``sps_k<k>_look<item>``)."""
    if item.isdigit() and int(item) >= 1:
        return int(item)
    raise SystemExit(f"bench_lossless: --lookup item {item!r}: write integers >= 1, comma-separated, e.g. 10")


def tree_budget(method: str):
    """The budget of a ``specexec_b<B>[x<W>][c][_look<N>][@variant]`` row (None for other rows and budget=auto)."""
    method = method.partition("@")[0].partition("_look")[0]
    if not method.startswith("specexec_b") or method == "specexec_bauto":
        return None
    return int(method[len("specexec_b"):].partition("x")[0].removesuffix("c"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--prompts", type=int, default=4, help="how many built-in prompts (first turns), in order")
    ap.add_argument("--categories", default=None, help="only built-in prompts of these categories, comma-separated (e.g. coding,extraction)")
    ap.add_argument("--spread", action="store_true", help="take the prompts round-robin over categories (one of each first), not in file order")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--k", default="4", help="SpS / HF assisted draft lengths, comma-separated (each pair compared at equal k)")
    ap.add_argument("--budgets", default="4,16", help="SpecExec budgets, each compared with SpS at k = budget (else the largest k); "
                    "BxW grows that tree W leaves per draft pass (else --parallel-branches); a trailing c (32x16c) "
                    "sizes each tree from the measured costs with the budget as a cap (method.grow=cost), e.g. 8,32x16,32x16c")
    ap.add_argument("--parallel-branches", type=int, default=4)
    ap.add_argument("--max-depth", type=int, default=None, help="SpecExec's deepest tree level (default: method.max_depth's default)")
    ap.add_argument("--temps", default="0,0.7")
    ap.add_argument("--threads", type=int, default=None, help="default: hardware.num_threads' default (spsamp/models/threads.py)")
    ap.add_argument("--cpu-linear", default="auto", help="hardware.cpu_linear for spsamp's models and the hf_* rows (auto | onednn | aten)")
    ap.add_argument("--stock", action=argparse.BooleanOptionalAction, default=True,
                    help="also time transformers on a second copy of the pair with PyTorch's default kernels "
                         "(cpu_linear=aten): what a transformers user runs")
    ap.add_argument("--stop-below", default=None, metavar="P[,P]",
                    help="also time SpS with method.stop_below=P at each k, as sps_k<k>_stop<P> (chains end at a draft token with p < P); "
                         "with --auto also k=auto with the stop, as sps_kauto_stop<P>")
    ap.add_argument("--lookup", default=None, metavar="N[,N]",
                    help="also time SpS with method.lookup=N at each k, as sps_k<k>_look<N> (up to N looked-up tokens checked "
                         "per draft pass), and prompt lookup alone (prompt_lookup_k<N>, hf_prompt_lookup_k<N>_stock, 3-grams); "
                         "with --auto also k=auto with it, as sps_kauto_look<N>; each --budgets tree also with it, as specexec_b<B>..._look<N>")
    ap.add_argument("--trace", default=None, metavar="FILE",
                    help="write each k=auto step's predicted tokens and cost beside its outcome (tokens kept, draft and verify ms), "
                         "and each plain step's pass beside the verify unit (k=auto and grow=cost), to FILE")
    ap.add_argument("--auto", action="store_true", help="also time method.k=auto (sps_kauto) and method.budget=auto (specexec_bauto)")
    ap.add_argument("--only", default=None, help="time only these rows, comma-separated (e.g. baseline,hf_generate_stock)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for spsamp's pair, repeatable (e.g. ++model.draft.quantization=int8_dynamic)")
    ap.add_argument("--draft-variant", action="append", default=[], metavar="NAME=OVERRIDE[;OVERRIDE]",
                    help="a second form of the preset's draft, repeatable: each SpS / SpecExec row (and the auto rows) "
                         "runs again with it as '<row>@NAME', interleaved with the rest, compared with the row on the "
                         "preset's draft (e.g. int8=++model.draft.quantization=int8_dynamic)")
    args = ap.parse_args()
    variants = dict(parse_variant(v) for v in args.draft_variant)
    logging.basicConfig(level=logging.WARNING, format="# %(name)s: %(message)s")
    logging.getLogger("spsamp").setLevel(logging.INFO)  # kernel choice, threads, auto k/budget costs
    if args.trace:  # every k=auto step's prediction beside its outcome, for reading where a prediction errs
        handler = logging.FileHandler(args.trace, mode="w")
        handler.setFormatter(logging.Formatter("%(relativeCreated)d %(message)s"))
        for name in ("spsamp.drafting.autosize", "spsamp.drafting.tree"):  # k=auto's steps; both's plain steps
            logging.getLogger(name).setLevel(logging.DEBUG)
            logging.getLogger(name).addHandler(handler)
        for h in logging.getLogger().handlers:  # the console keeps INFO and up
            h.setLevel(logging.INFO)
    set_threads(args.threads)
    run, target, draft = load_pair(args.model, args.cpu_linear, tuple(args.set))
    prompts = [p for p in load_prompts(run.dataset) if not args.categories or p.category in args.categories.split(",")]
    prompts = (round_robin(prompts) if args.spread else prompts)[: args.prompts]
    ids_list = [encode(target.tokenizer, messages_for(None, p.turns[:1], []), True) for p in prompts]
    eos = target.eos_ids
    trees = [parse_budget(b, args.parallel_branches) for b in args.budgets.split(",")]
    stops = [parse_stop(p) for p in args.stop_below.split(",")] if args.stop_below else []
    looks = [parse_lookup(n) for n in args.lookup.split(",")] if args.lookup else []
    depth = {"max_depth": args.max_depth} if args.max_depth else {}
    ks = [int(k) for k in args.k.split(",")]
    methods = {
        "baseline": timed(BaselineDecoder(), target, None, eos),
        "hf_generate": timed(HFGenerateDecoder(), target, None, eos),
    }
    stock = args.stock and args.cpu_linear != "aten" and (not args.only or "_stock" in args.only)
    if stock:
        _, stock_target, stock_draft = load_pair(args.model, "aten", tuple(args.set))
        methods["hf_generate_stock"] = timed(HFGenerateDecoder(), stock_target, None, eos)
    for k in ks:
        methods[f"hf_assisted_k{k}"] = timed(HFAssistedDecoder(k=k), target, draft, eos)
        if stock:
            methods[f"hf_assisted_k{k}_stock"] = timed(HFAssistedDecoder(k=k), stock_target, stock_draft, eos)
    ngram = SpeculativeDecoder.Params.lookup_ngram  # the cascade's longest n-gram
    for n in looks:  # the cascade's bottom drafter alone (no draft model), spsamp's and transformers' own
        methods[f"prompt_lookup_k{n}"] = timed(PromptLookupDecoder(k=n, max_ngram=ngram), target, None, eos)
        if stock:
            methods[f"hf_prompt_lookup_k{n}_stock"] = timed(HFPromptLookupDecoder(k=n, max_ngram=ngram), stock_target, None, eos)
    # "" = the preset's draft; each --draft-variant repeats spsamp's speculative rows as "<row>@NAME"
    drafts = {"": draft, **{f"@{n}": load_draft(args.model, args.cpu_linear, (*args.set, *o)) for n, o in variants.items()}}
    keep = set(args.only.split(",")) if args.only else None

    def wanted(row: str) -> bool:  # --only names rows on the preset's draft; their @variant twins come along
        return keep is None or row.partition("@")[0] in keep

    for at, d in drafts.items():
        for k in ks:
            methods[f"sps_k{k}{at}"] = timed(SpeculativeDecoder(k=k), target, d, eos)
            for stop in stops:
                methods[f"sps_k{k}_stop{stop}{at}"] = timed(SpeculativeDecoder(k=k, stop_below=float(stop)), target, d, eos)
            for n in looks:
                methods[f"sps_k{k}_look{n}{at}"] = timed(SpeculativeDecoder(k=k, lookup=n), target, d, eos)
        for (b, w, grow), n in ((tree, n) for tree in trees for n in (0, *looks)):  # each tree, then with each lookup
            name = (f"specexec_b{b}" + (f"x{w}" if w != args.parallel_branches else "") + ("c" if grow == "cost" else "")
                    + (f"_look{n}" if n else "") + at)
            dec = SpecExecDecoder(budget=b, parallel_branches=w, grow=grow, lookup=n, **depth)
            if grow == "cost" and wanted(name):
                dec.prepare(target, d, run)  # c, v(n), vd(w) measured as the runner's prepare hook does
            methods[name] = timed(dec, target, d, eos)
        if args.auto:  # sizes chosen by the cost model from costs measured here (prepare) and acceptance seen so far
            autos = [(f"sps_kauto{at}", SpeculativeDecoder(k="auto")),
                     *((f"sps_kauto_stop{stop}{at}", SpeculativeDecoder(k="auto", stop_below=float(stop))) for stop in stops),
                     *((f"sps_kauto_look{n}{at}", SpeculativeDecoder(k="auto", lookup=n)) for n in looks),
                     (f"specexec_bauto{at}", SpecExecDecoder(budget="auto", parallel_branches=args.parallel_branches, **depth))]
            for name, dec in autos:
                if wanted(name):
                    dec.prepare(target, d, run)
                    methods[name] = timed(dec, target, d, eos)
    methods = {m: fn for m, fn in methods.items() if wanted(m)}
    info = system_info()
    print("# command: " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]))
    print(f"# bench_lossless {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC | {info.get('cpu_model') or platform.processor()} | "
          f"threads={torch.get_num_threads()} | torch {torch.__version__} | transformers {info.get('transformers_version')}")
    print(f"# {args.model}: target {target.name} ({target.info.get('dtype')}, cpu_linear={args.cpu_linear} -> {target.info.get('cpu_linear')}), "
          f"draft {draft.name} ({draft.info.get('quantization')}, cpu_linear -> {draft.info.get('cpu_linear')}); "
          f"{len(prompts)} prompts of {run.dataset.name} ({', '.join(p.id for p in prompts)}), {args.max_new_tokens} new tokens, k={ks}, budgets={args.budgets}, parallel_branches={args.parallel_branches}, "
          f"max_depth={args.max_depth or SpecExecDecoder.Params.max_depth}")
    # the cost model's inputs, timed as k=auto / budget=auto time them (interleaved rounds, medians):
    # c = draft / target single-token pass; v(n) = an n-token target pass / a 1-token one (Thm. 3.8
    # assumes v = 1: memory-bound verification)
    costs = measure_costs(target, draft, ids_list[0])
    c = {"": costs.c}
    v = {k: costs.v(k + 1) for k in ks}

    def curve(name: str, vc) -> str:
        return vc.describe(name, " = ")

    # vd(w): a w-token draft pass / a 1-token one (what a tree level of width w costs)
    print(f"# measured costs (spsamp.cost_model.measure_costs on the first prompt): c = {costs.c:.2f}; "
          f"{curve('v', costs.v)}; draft {curve('vd', costs.vd)}")
    for at, d in drafts.items():
        if at:
            dc = measure_costs(target, d, ids_list[0], widths=(1,))
            c[at] = dc.c
            print(f"# draft variant {at[1:]} ({'; '.join(variants[at[1:]])}): {d.name} ({d.info.get('quantization')}, "
                  f"{d.info.get('dtype')}, cpu_linear -> {d.info.get('cpu_linear')}), c = {c[at]:.2f}; {curve('vd', dc.vd)}")
    print()

    for temp in [float(t) for t in args.temps.split(",")]:
        gen = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=temp)
        warm = GenerationConfig(max_new_tokens=8, temperature=temp)
        for fn in methods.values():
            fn(ids_list[0], warm, 0)
        tot = {m: Totals() for m in methods}
        chosen: dict[str, list[dict]] = {m: [] for m in methods}  # auto rows: per-row metrics of the cost model
        split: dict[str, dict[str, float]] = {}  # spsamp's speculative rows: where their decode time went
        for i, ids in enumerate(ids_list):
            # round-robin, every other prompt in reverse order: drift that is linear over two prompts
            # hits every method alike (each sits at the same mean time), not only the ones run first
            for name, fn in counterbalanced(methods, i):
                t0 = time.perf_counter()
                n, st, ttft, prefill = fn(ids, gen, 1000 + i)
                dt = time.perf_counter() - t0
                row = tot[name]
                row.tokens += n
                row.seconds += dt
                row.decode_s += dt - ttft
                if st is not None:
                    row.target_calls += st.target_calls
                    row.accepted += st.accepted
                    row.rejections += st.rejections
                    row.proposed += st.proposed
                    if any(key.startswith(("auto_", "grow_")) for key in st.extra):
                        chosen[name].append(st.extra)
                    if "target_time_s" in st.extra:
                        add_split(split.setdefault(name, {}), st, dt, ttft, prefill)
        tps = {m: r.tokens / r.seconds for m, r in tot.items()}
        # decode phase only (tokens after the first / time after it): what the cost model predicts;
        # tokens/s above also pays the prompt's prefill, which speculation does not speed up
        dps = {m: (r.tokens - len(ids_list)) / r.decode_s if r.decode_s > 0 else float("nan") for m, r in tot.items()}
        print(f"## temperature {temp:g}\n")
        print("| method | tokens | tokens/s | vs | ratio | vs stock | ratio | vs baseline | decode-phase vs baseline | tokens/target call | acceptance |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        refs = {"baseline": "hf_generate", **{f"sps_k{k}": f"hf_assisted_k{k}" for k in ks},
                **{f"sps_k{k}_look{n}": f"hf_assisted_k{k}" for k in ks for n in looks},
                **{f"prompt_lookup_k{n}": f"hf_prompt_lookup_k{n}" for n in looks},
                # SpecExec against SpS at an equal draft budget (budget b nodes ~ k = b), else the largest k
                **{m: f"sps_k{b if b in ks else max(ks)}" for m in tot if (b := tree_budget(m)) is not None},
                # a tree grown with lookup against the same tree without it
                **{m: m.replace(f"_look{n}", "") for m in tot for n in looks if m.startswith("specexec_b") and f"_look{n}" in m},
                # a draft variant's row against the same row on the preset's draft
                **{m: m.partition("@")[0] for m in tot if "@" in m}}
        for m, r in tot.items():
            ref = refs.get(m) if refs.get(m) in tps else None
            ref_stock = f"{ref}_stock" if ref and f"{ref}_stock" in tps else None
            ratio = f"{tps[m] / tps[ref]:.2f}x" if ref else ""
            ratio_stock = f"{tps[m] / tps[ref_stock]:.2f}x" if ref_stock else ""
            per_call = f"{r.tokens / r.target_calls:.2f}" if r.target_calls else ""
            acc = f"{r.accepted / r.proposed:.2f}" if r.proposed else ""
            vs_base = f"{tps[m] / tps['baseline']:.2f}x" if "baseline" in tps else ""
            dec_base = f"{dps[m] / dps['baseline']:.2f}x" if "baseline" in dps else ""
            print(f"| {m} | {r.tokens} | {tps[m]:.1f} | {ref or ''} | {ratio} | {ref_stock or ''} | {ratio_stock} | {vs_base} | {dec_base} "
                  f"| {per_call} | {acc} |")
        print()
        for at, k in ((at, k) for at in drafts for k in ks):
            if f"sps_k{k}{at}" not in tot or "baseline" not in tps:
                continue
            r = tot[f"sps_k{k}{at}"]
            alpha = float(alpha_from_counts(r.accepted, r.rejections))
            pred = float(predicted_speedup(alpha, k, c[at]))
            pred_v = float(expected_tokens_per_step(alpha, k)) / (k * c[at] + v[k])
            # Eq. (1) assumes i.i.d. acceptance; rejections cluster, so also price the tokens per
            # target call actually observed (the rest of the gap: prefill, sampling, cache upkeep)
            pred_obs = (r.tokens / r.target_calls) / (k * c[at] + v[k]) if r.target_calls else float("nan")
            measured = dps[f"sps_k{k}{at}"] / dps["baseline"]
            print(f"SpS{at} cost model (Leviathan et al. 2023, Thm. 3.8): alpha={alpha:.3f}, k={k}, c={c[at]:.2f} -> "
                  f"predicted {pred:.2f}x over baseline ({pred_v:.2f}x with the measured verify cost v={v[k]:.2f}; "
                  f"{pred_obs:.2f}x with it and the observed {r.tokens / max(r.target_calls, 1):.2f} tokens per call); measured {measured:.2f}x in the decode phase "
                  f"(errors {pred / measured - 1:+.0%} / {pred_v / measured - 1:+.0%} / {pred_obs / measured - 1:+.0%})")
        # plain decoding's decode seconds per token: the unit the rows' timings are read in
        base_token = tot["baseline"].decode_s / max(tot["baseline"].tokens - len(ids_list), 1) if "baseline" in tot else float("nan")
        for m, rows in chosen.items():
            if not rows or "baseline" not in tps:
                continue
            measured = dps[m] / dps["baseline"]
            if "grow_calibration" in rows[0]:
                mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
                pred = mean("grow_predicted_speedup")
                print(f"{m}: grow=cost verified {mean('tree_size_mean'):.1f} nodes {mean('tree_depth_mean'):.1f} deep on average "
                      f"({mean('tree_cut_mean'):.1f} of the best-ranked cut, {mean('draft_passes_mean'):.1f} draft passes per step), "
                      f"calibration {rows[-1]['grow_calibration']:.2f}, c {rows[-1]['grow_c']:.2f} (probe {rows[-1]['grow_c_probe']:.2f})"
                      f"{run_unit(rows, 'grow', base_token)} -> predicted {pred:.2f}x over baseline; "
                      f"measured {measured:.2f}x in the decode phase (error {pred / measured - 1:+.0%})"
                      f"{own_unit_error(rows, 'grow', pred, dps[m])}")
                continue
            size = "k" if "auto_k_mean" in rows[0] else "budget"
            mean = sum(r[f"auto_{size}_mean"] for r in rows) / len(rows)
            pred, terms = pooled_prediction(rows, tot[m].tokens / max(tot[m].target_calls, 1))
            sure = (f" (sure of {rows[-1]['auto_sure']:.0%} of draft tokens, accepted {rows[-1]['auto_alpha_sure']:.3f} "
                    f"of those, {rows[-1]['auto_alpha_unsure']:.3f} of the rest)" if "auto_sure" in rows[-1] else "")
            print(f"{m}: {size}=auto chose {size} {mean:.1f} on average (last row: {rows[-1][f'auto_{size}_hist']}), "
                  f"alpha={rows[-1]['auto_alpha']:.3f}{sure}, c={rows[-1]['auto_c']:.2f} (probe {rows[-1]['auto_c_probe']:.2f})"
                  f"{lookup_states(rows[-1])}{run_unit(rows, 'auto', base_token)} -> predicted {pred:.2f}x over baseline{terms}; "
                  f"measured {measured:.2f}x in the decode phase (error {pred / measured - 1:+.0%})"
                  f"{own_unit_error(rows, 'auto', pred, dps[m])}")
        if split and "baseline" in tot:
            print()
            priced = {m: sum(r.get("auto_rest", r.get("grow_rest", 0.0)) for r in rows) / len(rows) for m, rows in chosen.items() if rows}
            for line in split_lines(split, costs, base_token, c, priced):
                print(line)
        print()


if __name__ == "__main__":
    main()
