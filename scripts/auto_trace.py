"""Summarise a k=auto step trace (``scripts/bench_lossless.py --trace FILE``): per sized row and
temperature, each step's predicted tokens and cost (in the run's own T1) against what the step
kept and spent — whether a prediction's error is in its model or in its time unit; and the plain
steps' single-token passes beside the verify unit they were paired with (T1 = verify unit x their ratio).

    python scripts/auto_trace.py TRACE [--split N]   # --split: first N steps of each row apart (traces without T=)
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

LINE = re.compile(r"^\d+ step of (?P<who>.+?)(?: at T=(?P<temp>[\d.]+))?: size \d+, lookup state \w+, predicted (?P<pt>[\d.]+) tokens "
                  r"for (?P<pc>[\d.]+) T1; kept (?P<kept>\d+) \(\+1\), drafted in (?P<d>[\d.]+) ms, verified in (?P<v>[\d.]+) ms, "
                  r"T1 (?P<t1>[\d.]+) ms")

PLAIN = re.compile(r"^\d+ plain step of (?P<who>.+?) at T=(?P<temp>[\d.]+): pass (?P<p>[\d.]+) ms, verify unit (?P<u>[\d.]+) ms")


def summarise(lines, split: int | None = None) -> list[str]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    seen: dict[str, int] = defaultdict(int)
    plain: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for line in lines:
        m = LINE.match(line)
        if not m:
            p = PLAIN.match(line)
            if p:  # plain steps after the verify unit was trusted (before: "verify unit - ms")
                plain[(p["who"], f"T={p['temp']}")].append((float(p["p"]), float(p["u"])))
            continue  # steps before T1 was timed ("T1 - ms") and anything else
        who, temp = m["who"], m["temp"]
        seen[who] += 1
        part = f"T={temp}" if temp is not None else ("all" if split is None else ("first" if seen[who] <= split else "rest"))
        groups[(who, part)].append({k: float(m[k]) for k in ("pt", "pc", "kept", "d", "v", "t1")})
    out = []
    for (who, part), steps in groups.items():
        n = len(steps)
        pt, pc = sum(s["pt"] for s in steps), sum(s["pc"] for s in steps)
        rt = sum(s["kept"] + 1 for s in steps)
        rc = sum((s["d"] + s["v"]) / s["t1"] for s in steps)
        rd = sum(s["d"] / s["t1"] for s in steps)
        out.append(f"{who:20s} {part:6s} n={n:3d} tokens {pt / n:5.2f}/{rt / n:5.2f} ({pt / rt - 1:+.0%}) cost {pc / n:4.2f}/{rc / n:4.2f} "
                   f"({pc / rc - 1:+.0%}) [draft {rd / n:4.2f}] speed {pt / pc:.2f}/{rt / rc:.2f} ({(pt / pc) / (rt / rc) - 1:+.0%})")
    for (who, part), pairs in plain.items():
        ratios = [p / u for p, u in pairs]
        out.append(f"{who:20s} {part:6s} plain steps n={len(pairs):3d}: pass {sum(p for p, _ in pairs) / len(pairs):.1f} ms, "
                   f"verify unit {sum(u for _, u in pairs) / len(pairs):.1f} ms, pass / unit {sum(ratios) / len(ratios):.3f} "
                   f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--split", type=int, default=None)
    args = ap.parse_args()
    with open(args.trace) as f:
        print("\n".join(summarise(f, args.split)))


if __name__ == "__main__":
    main()
