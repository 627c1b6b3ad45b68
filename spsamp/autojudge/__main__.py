"""``python -m spsamp.autojudge curve <journal dir | judge.safetensors>``: the judge's grouped
cross-validated ROC-AUC against the number of mined mismatches (:mod:`spsamp.autojudge.curve`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spsamp.autojudge.curve import auc_curve, best_c, format_curve, plot_curve, read_journal, read_mined_set, write_curve


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m spsamp.autojudge", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    cv = sub.add_parser("curve", help="grouped CV ROC-AUC against mined mismatches")
    cv.add_argument("source", help="a mining journal's recipe directory (<checkpoint dir>/mining/<key>/) or a judge checkpoint")
    cv.add_argument("--features", default="concat", choices=("concat", "target"), help="journal only: judge features")
    cv.add_argument("--c", type=float, default=None, help="inverse L2 strength; default: best grouped CV AUC on all samples")
    cv.add_argument("--sizes", default=None, help="comma-separated sample counts (default 25, 50, 100, ... all)")
    cv.add_argument("--repeats", type=int, default=5, help="random prompt orders per size")
    cv.add_argument("--plot", default=None, help="write the curve as a PNG here")
    cv.add_argument("--out", default=None, help="write tables/auc_curve.csv and auc_curve.png here (a report's layout: "
                                                "scripts/benchmark_pages.py imports it)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    src = Path(args.source).expanduser()
    m = read_journal(src, args.features) if src.is_dir() else read_mined_set(src)
    c = args.c if args.c is not None else best_c(m)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    points = auc_curve(m, c, sizes, repeats=args.repeats)
    print(f"{src}: {len(m.y)} mismatches ({int(m.y.sum())} important) from {len(set(m.groups))} prompts")
    print(format_curve(points, c))
    title = f"{src.name}: {len(m.y)} mismatches"
    if args.plot:
        print(f"plot: {plot_curve(points, args.plot, title=title)}")
    if args.out:
        print(f"table: {write_curve(points, c, m, args.out, title=title)}")


if __name__ == "__main__":
    main()
