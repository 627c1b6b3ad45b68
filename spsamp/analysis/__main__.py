"""``python -m spsamp.analysis report <outputs dir ...> --out <dir> [--cost-ratio C]``
``python -m spsamp.analysis summary <sweep dir ...>``
``python -m spsamp.analysis spread <launch dir> <launch dir> [...]``"""

from __future__ import annotations

import argparse
import logging
import sys

from spsamp.analysis.report import build_report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spsamp.analysis", description="Tables and plots over spsamp records.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    rep = sub.add_parser("report", help="write report.md, PNG plots and CSV tables")
    rep.add_argument("paths", nargs="+", help="run dirs, sweep dirs, outputs/, records.parquet files or globs")
    rep.add_argument("--out", required=True, help="directory for report.md, *.png and tables/*.csv")
    rep.add_argument("--cost-ratio", type=float, default=None,
                     help="c = draft/target forward-pass cost for the predicted speedup (default: estimated from the records)")
    summ = sub.add_parser("summary", help="print the end-of-sweep tables (paired speedups per comparison, tokens/s, acceptance, "
                                          "mean accepted tokens, pass@1; unpaired table of plain jobs)")
    summ.add_argument("paths", nargs="+", help="run dirs, sweep dirs, records.parquet files or globs")
    spr = sub.add_parser("spread", help="each configuration's speedup in each launch of a study, and its spread over the first")
    spr.add_argument("launches", nargs="+", help="one sweep dir per launch (a comparison, or separate plain jobs)")
    args = ap.parse_args(argv)
    if args.cmd == "spread":
        from spsamp.analysis.spread import launch_spread

        try:
            print(launch_spread(args.launches).round(3).to_string())
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.cmd == "summary":
        from spsamp.analysis.load import load_records
        from spsamp.analysis.summary import summary_text

        try:
            print(summary_text(load_records(args.paths, metrics=False)))
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.cost_ratio is not None and not args.cost_ratio > 0:
        print(f"error: --cost-ratio must be > 0, got {args.cost_ratio}", file=sys.stderr)
        return 2
    try:
        path = build_report(args.paths, args.out, cost_ratio=args.cost_ratio)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
