#!/usr/bin/env python
"""Time the same arms at two commits of spsamp, interleaved in one process on the same loaded models.

A refactor's speed check: is the code at HEAD (``new``) as fast as at ``--old REF``? Separate runs
of the two commits differ by the machine's drift between them; here every prompt is decoded by the
plain baseline and by each arm at both commits, round-robin in ABBA order, so drift hits all alike.

    python scripts/compare_commits.py --old 33ca234 --arm kauto=method=speculative,method.k=auto,method.lookup=10 \\
        model=qwen25_coder_05b_15b dataset=humaneval dataset.max_samples=8 generation.max_new_tokens=128

The old commit's ``spsamp/`` and ``conf/`` are extracted with ``git archive`` and imported as the
package ``spsamp_old``; both commits' decoders run on the models HEAD loads (same weights, same
kernels), each composed and validated by its own commit's config. Overrides after the options are
applied to both commits (model, dataset, generation, hardware). Prints, per arm and commit, the
speedup over the baseline (geometric mean of per-prompt ratios, 95 % bootstrap), the decode-phase
speedup beside the cost model's prediction where the arm makes one (per prompt, and pooled over the
run's decode seconds), and per arm new / old with its
interval; ``--out`` writes the per-row timings as CSV.
"""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from spsamp.analysis.paired import bootstrap_geomean, geomean  # noqa: E402
from spsamp.config import GenerationConfig, validate  # noqa: E402
from spsamp.data import load_prompts  # noqa: E402
from spsamp.data.chat import encode, messages_for  # noqa: E402
from spsamp.decoders.base import truncate_at_eos  # noqa: E402
from spsamp.models import load_model  # noqa: E402
from spsamp.models.threads import set_threads  # noqa: E402
from spsamp.system_info import system_info  # noqa: E402

log = logging.getLogger("compare_commits")
OLD = "spsamp_old"
# a sized arm's own prediction of its decode-phase speedup over plain decoding, by the names commits used
PREDICTED = ("sizing_predicted_speedup", "auto_predicted_speedup", "grow_predicted_speedup")


def extract(ref: str, into: Path) -> Path:
    """``spsamp/`` and ``conf/`` of ``ref`` under ``into``, the package renamed ``spsamp_old``."""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "spsamp", "conf"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    (into / "spsamp").rename(into / OLD)
    word = re.compile(r"\bspsamp(?=[.\s:]|$)", re.M)
    for path in [*(into / OLD).rglob("*.py"), *(into / "conf").rglob("*.yaml")]:
        path.write_text(word.sub(OLD, path.read_text()))
    return into


def composed(conf: Path, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def decoders(conf: Path, validate_fn, common: list[str], arms: dict[str, list[str]]) -> dict:
    """Each arm's decoder and validated run config, composed from ``conf`` by its own commit."""
    out = {}
    for name, extra in arms.items():
        cfg = composed(conf, [*common, *extra])
        run = validate_fn(cfg)[0]
        out[name] = (instantiate(cfg.method), run)
    return out


def parse_arm(text: str) -> tuple[str, list[str]]:
    name, sep, rest = text.partition("=")
    if not sep or not name.isidentifier() or not rest:
        raise SystemExit(f"compare_commits: --arm {text!r}: write NAME=OVERRIDE,OVERRIDE,... (e.g. kauto=method=speculative,method.k=auto)")
    return name, re.split(r",(?=[\w.+~]+=)", rest)


def abba(names: list[str], i: int) -> list[str]:
    return names if i % 2 == 0 else names[::-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", help="the commit to compare HEAD with (any git ref)")
    ap.add_argument("--arm", action="append", metavar="NAME=OVERRIDES", help="a method's overrides, comma-separated; repeat for more arms")
    ap.add_argument("--report", metavar="CSV", help="only print the tables of an earlier run's --out CSV")
    ap.add_argument("--out", default=None, help="CSV of per-row timings, rewritten after every prompt")
    ap.add_argument("--per-category", type=int, default=None, metavar="N", help="the first N prompts of each category, round-robin")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for both commits (model, dataset, generation, hardware)")
    args = ap.parse_args()
    if args.report:
        return report(pd.read_csv(args.report))
    if not args.old or not args.arm:
        ap.error("--old and at least one --arm are required (or --report CSV)")
    logging.basicConfig(level=logging.INFO, format="# %(name)s: %(message)s")
    arms = dict(parse_arm(a) for a in args.arm)
    tmp = extract(args.old, Path(tempfile.mkdtemp(prefix="spsamp_old_")))
    sys.path.insert(0, str(tmp))

    base_cfg = composed(ROOT / "conf", [*args.overrides, "method=baseline"])
    run = validate(base_cfg)[0]
    new = {"baseline": (instantiate(base_cfg.method), run), **decoders(ROOT / "conf", validate, args.overrides, arms)}
    old_validate = importlib.import_module(f"{OLD}.config").validate
    importlib.import_module(f"{OLD}.decoders").register_schemas()  # the old commit's method schemas, for its compose
    old = decoders(tmp / "conf", old_validate, args.overrides, arms)
    importlib.import_module("spsamp.decoders").register_schemas()

    set_threads(run.hardware.num_threads)
    target = load_model(run.model.target, run.hardware, run.paths.cache_dir)
    draft = load_model(run.model.draft, run.hardware, run.paths.cache_dir) if run.model.draft is not None else None
    rows = {"baseline": new["baseline"], **{f"{a}@new": new[a] for a in arms}, **{f"{a}@old": old[a] for a in arms}}
    for dec, arm_run in rows.values():
        dec.prepare(target, draft, arm_run)
    prompts = load_prompts(run.dataset)
    if args.per_category:
        cats = {p.category: [q for q in prompts if q.category == p.category][: args.per_category] for p in prompts}
        prompts = [p for group in zip(*cats.values()) for p in group]
    gen = run.generation
    ids = [encode(target.tokenizer, messages_for(run.dataset.system_prompt, p.turns[:1], []), gen.use_chat_template) for p in prompts]
    warm = GenerationConfig(**{**vars(gen), "max_new_tokens": min(8, gen.max_new_tokens)})
    for dec, _ in rows.values():
        dec.generate(target, draft, ids[0], warm, torch.Generator().manual_seed(0))
    info = system_info()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | {info.get('cpu_model')} | threads={torch.get_num_threads()} | "
          f"torch {torch.__version__} | transformers {info.get('transformers_version')} | new=HEAD old={args.old}")
    print("# " + " ".join(["python", "scripts/compare_commits.py", *sys.argv[1:]]))
    records = []
    for i, (prompt, x) in enumerate(zip(prompts, ids)):
        for name in abba(list(rows), i):
            dec, _ = rows[name]
            t0 = time.perf_counter()
            out = dec.generate(target, draft, x, gen, torch.Generator().manual_seed(1000 + i))
            dt = time.perf_counter() - t0
            n = len(truncate_at_eos(out.tokens, target.eos_ids, gen.max_new_tokens)[0])
            extra = getattr(out.stats, "extra", None) or {}
            pred = next((extra[k] for k in PREDICTED if isinstance(extra.get(k), (int, float))), float("nan"))
            records.append({"prompt": prompt.id, "row": name, "tokens": n, "seconds": dt, "ttft_s": out.ttft_s, "predicted": pred})
        if args.out:  # after every prompt: a killed run keeps what it measured
            pd.DataFrame(records).to_csv(args.out, index=False)
        log.info("prompt %d/%d done", i + 1, len(prompts))
    report(pd.DataFrame(records))


def report(df: pd.DataFrame) -> None:
    df = df.assign(tps=df.tokens / df.seconds, dps=(df.tokens - 1) / (df.seconds - df.ttft_s), decode_s=df.seconds - df.ttft_s)
    wide = df.pivot(index="prompt", columns="row")
    print("\n| row | speedup [95 % CI] | decode speedup | predicted (decode) | prediction error | pooled decode speedup | pooled predicted | pooled error |")
    print("|---|---|---|---|---|---|---|---|")
    for row in [r for r in wide["tps"].columns if r != "baseline"]:
        s = wide["tps"][row] / wide["tps"]["baseline"]
        d = geomean(wide["dps"][row] / wide["dps"]["baseline"])
        lo, hi = bootstrap_geomean(s.to_numpy())
        pred = wide["predicted"][row].mean()
        err = f"{(pred / d - 1) * 100:+.0f} %" if pred == pred else "–"
        # the run's decode phase as one: what the baseline would take for the arm's tokens (at each
        # prompt's baseline rate; sampled answers differ in length) over what the arm took, predicted
        # as that time over each prompt's predicted speedup (short answers weigh what they take)
        base = (wide["tokens"][row] - 1) / wide["dps"]["baseline"]
        pooled, pooled_pred = base.sum() / wide["decode_s"][row].sum(), base.sum() / (base / wide["predicted"][row]).sum()
        perr = f"{(pooled_pred / pooled - 1) * 100:+.0f} %" if pooled_pred == pooled_pred else "–"
        print(f"| {row} | {geomean(s):.2f} [{lo:.2f}, {hi:.2f}] | {d:.2f} | {pred:.2f} | {err} | {pooled:.2f} | {pooled_pred:.2f} | {perr} |")
    print("\n| arm | new / old tokens/s [95 % CI] |\n|---|---|")
    for arm in sorted({r.rsplit("@", 1)[0] for r in wide["tps"].columns if "@" in r}):
        r = wide["tps"][f"{arm}@new"] / wide["tps"][f"{arm}@old"]
        lo, hi = bootstrap_geomean(r.to_numpy())
        print(f"| {arm} | {geomean(r):.3f} [{lo:.3f}, {hi:.3f}] |")


if __name__ == "__main__":
    main()
