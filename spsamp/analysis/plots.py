"""Matplotlib figures over the derived tables, built as bare ``Figure`` objects (no pyplot state, no\nGUI backend: ``savefig`` renders with Agg; a notebook displays them inline).

Each ``plot_*`` returns a Figure or raises :class:`~spsamp.analysis.tables.NoData` with the reason
(e.g. no SpecExec rows), so a report can skip it with a note. Error bars are the IQR over prompts.
"""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from spsamp.analysis import frontier as F
from spsamp.analysis import paired as P
from spsamp.analysis import tables as T
from spsamp.analysis.crossover import batch_crossover
from spsamp.analysis.load import label_params
from spsamp.cost_model import expected_tokens_per_step

# descriptors added to a series label when they differ between the plotted configurations
# (every key of a configuration is here, so labels are unique among the plotted configurations)
_CONTEXT = [
    ("model_preset", "{}"), ("model", "{}"), ("target_dtype", "{}"), ("target_quantization", "q:{}"), ("device", "{}"),
    ("draft_model", "draft {}"), ("draft_dtype", "draft {}"), ("draft_quantization", "draft q:{}"),
    ("temperature", "T={}"), ("top_p", "top_p={}"), ("top_k", "top_k={}"), ("max_new_tokens", "{} new"),
    ("seed", "seed={}"), ("use_chat_template", "chat={}"), ("cpu_model", "@{}"), ("gpu_name", "@{}"), ("num_threads", "{} threads"),
    ("cpu_linear", "{}"), ("dataset", "{}"), ("batch_size", "batch {}"), ("arm", "arm {}"),
]


def _fmtv(v: object) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _series_labels(df: pd.DataFrame, drop: Sequence[str], ref: Optional[pd.DataFrame] = None, by_arm: bool = False) -> pd.Series:
    """Label per row: method + parameters not in ``drop`` + the context columns that vary (in ``ref``, default ``df``).
    ``by_arm``: a comparison arm's row is named by its arm (which names its configuration within the
    job) and the varying context alone — for plots with one series per configuration, where full
    configurations of a many-arm job would crowd the legend out."""
    ref = df if ref is None else ref
    shown = label_params(ref)
    varying = [(c, f) for c, f in _CONTEXT if c in ref.columns and c in df.columns and ref[c].astype(str).nunique() > 1]

    def label(r: pd.Series) -> str:
        if by_arm and pd.notna(r.get("arm")):
            return " ".join([f"arm {r['arm']}"] + [f.format(_fmtv(r[c])) for c, f in varying if c != "arm"])
        parts = [str(r["method"])]
        for c in shown.get(r["method"], []):
            if c in drop:
                continue
            if pd.notna(r.get(c)):
                parts.append(f"{c[len(T.PARAM_PREFIX):]}={_fmtv(r[c])}")
        parts += [f.format(_fmtv(r[c])) for c, f in varying]
        return " ".join(parts)

    return df.apply(label, axis=1)


def _iqr_err(d: pd.DataFrame, col: str) -> np.ndarray:
    return np.vstack([d[f"{col}_median"] - d[f"{col}_q25"], d[f"{col}_q75"] - d[f"{col}_median"]]).clip(min=0)


def _subplots(nrows: int, ncols: int, figsize: tuple[float, float]):
    fig = Figure(figsize=figsize, dpi=120, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _finish(fig: Figure, ax_list, title: str) -> Figure:
    for ax in ax_list:
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=13)
    return fig


def _chain(ss: pd.DataFrame) -> pd.DataFrame:
    if ss.empty or "param_k" not in ss.columns:
        raise T.NoData("no speculative/autojudge rows with param_k matched to a baseline")
    d = ss[ss["param_k"].notna()]
    if "param_budget" in d.columns:
        d = d[d["param_budget"].isna()]
    if d.empty:
        raise T.NoData("no chain-method rows with param_k matched to a baseline")
    return d


def plot_speedup_vs_k(df: pd.DataFrame, sp: Optional[pd.DataFrame] = None) -> Figure:
    """Median speedup over baseline (tokens/s ratio) against k, one line per configuration family."""
    sp = T.speedups(df) if sp is None else sp
    d = _chain(T.speedup_summary(sp))
    d = d.assign(series=_series_labels(d, ["param_k"])).sort_values("param_k")
    fig, axs = _subplots(1, 1, (7, 4.5))
    ax = axs[0, 0]
    for name, s in d.groupby("series", sort=True):
        ax.errorbar(s["param_k"], s["speedup_median"], yerr=_iqr_err(s, "speedup"), marker="o", capsize=3, label=name)
    ax.axhline(1.0, color="grey", ls="--", lw=1, label="baseline (1×)")
    ax.set_xlabel("k (draft tokens proposed per step)")
    ax.set_ylabel("speedup over baseline (× tokens/s)")
    ax.set_xticks(sorted(d["param_k"].unique()))
    ax.legend(fontsize=9)
    return _finish(fig, [ax], "Speedup vs k (median over prompts, bars: IQR)")


def plot_accept_length_vs_k(df: pd.DataFrame, pred: Optional[pd.DataFrame] = None) -> Figure:
    """Measured mean tokens per step against k, with Leviathan et al. 2023 Eq. (1),
    (1 − α^(k+1))/(1 − α), for the α pooled over all k of the same family."""
    pred = T.predicted_vs_measured(df) if pred is None else pred
    d = pred[pred["tokens_per_step"].notna()]
    if d.empty:
        raise T.NoData("no chain-method rows with accepted-length counts")
    d = d.assign(series=_series_labels(d, ["param_k"])).sort_values("k")
    fig, axs = _subplots(1, 1, (7, 4.5))
    ax = axs[0, 0]
    kmax = float(d["k"].max())
    for i, (name, s) in enumerate(d.groupby("series", sort=True)):
        color = f"C{i}"
        ax.plot(s["k"], s["tokens_per_step"], "o", color=color, ms=7, label=f"{name}: measured")
        acc, rej = s["accepted"].sum(), s["rejections"].sum()
        if acc + rej > 0:
            alpha = acc / (acc + rej)
            ks = np.linspace(0, kmax, 200)
            ax.plot(ks, expected_tokens_per_step(alpha, ks), "--", color=color,
                    label=f"{name}: " + r"$(1-\alpha^{k+1})/(1-\alpha)$" + f", α={alpha:.2f}")
    ks = np.linspace(0, kmax, 200)
    ax.plot(ks, ks + 1, ":", color="grey", lw=1, label="upper bound k+1 (α=1)")
    ax.set_xlabel("k (draft tokens proposed per step)")
    ax.set_ylabel("mean tokens per target step (incl. target's token)")
    ax.set_xticks(sorted({0.0, *d["k"].unique()}))
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return _finish(fig, [ax], "Mean accepted length vs k: measured and i.i.d. theory")


def plot_specexec(df: pd.DataFrame, method: str = "specexec") -> Figure:
    """SpecExec: new tokens per target verification call (prefill excluded) against the tree budget
    (one line per parallel_branches) and against parallel_branches (one line per budget)."""
    d = df[(df["method"] == method) & (df["status"] == "ok")] if "method" in df else df.iloc[0:0]
    if d.empty or "param_budget" not in d.columns:
        raise T.NoData(f"no ok rows of method={method} with param_budget")
    pp = T.per_prompt(d)
    keys = [k for k in T.config_keys(d) if k in pp.columns]
    g = pp.groupby(keys, dropna=False, sort=True)
    sums = g[["step_tokens", "steps"]].sum(min_count=1)
    agg = sums.assign(tokens_per_call=T._ratio(sums["step_tokens"], sums["steps"])).reset_index()
    if "param_parallel_branches" not in agg.columns:
        agg["param_parallel_branches"] = np.nan
    fig, axs = _subplots(1, 2, (11, 4.5))
    axes = axs[0]
    for ax, x, line in ((axes[0], "param_budget", "param_parallel_branches"), (axes[1], "param_parallel_branches", "param_budget")):
        sub = agg[agg[x].notna()]
        if sub.empty:
            ax.text(0.5, 0.5, f"no {x[len(T.PARAM_PREFIX):]} recorded", ha="center", va="center", transform=ax.transAxes)
        labels = _series_labels(sub, ["param_budget", "param_parallel_branches"]) if len(sub) else pd.Series(dtype=str)
        for (name, lv), s in sub.assign(series=labels).groupby(["series", line], dropna=False, sort=True):
            s = s.sort_values(x)
            ax.plot(s[x], s["tokens_per_call"], "o-", label=f"{name} {line[len(T.PARAM_PREFIX):]}={_fmtv(lv)}")
        ax.set_xlabel({"param_budget": "budget (draft tree size, tokens)", "param_parallel_branches": "parallel branches"}[x])
        if len(sub):
            ax.set_xticks(sorted(sub[x].unique()))
        ax.set_ylabel("new tokens per target call (prefill excluded)")
        if len(sub):
            ax.legend(fontsize=8)
    return _finish(fig, axes, "SpecExec: tokens per target call vs budget and branches")


def plot_autojudge(df: pd.DataFrame, sp: Optional[pd.DataFrame] = None) -> Figure:
    """AutoJudge against the threshold it applied: accepted tokens per step, speedup over baseline,
    quality. Arms of comparison jobs are left to :func:`plot_lossy_frontier` (paired, every rule)."""
    tab = T.autojudge_table(df, sp)
    if "arm" in tab.columns:
        tab = tab[tab["arm"].isna()]
    if tab.empty:
        raise T.NoData("no autojudge rows outside comparison jobs (their arms: lossy_frontier)")
    if tab["threshold"].isna().all():
        raise T.NoData("autojudge rows record no threshold")
    tab = tab.assign(series=_series_labels(tab, ["param_threshold", "param_threshold_quantile"]))
    quality = T.quality_columns(tab) + (["identical_to_baseline"] if "identical_to_baseline" in tab and tab["identical_to_baseline"].notna().any() else [])
    fig, axs = _subplots(1, 3, (14, 4.5))
    axes = axs[0]
    panels = [
        (axes[0], ["accepted_tokens_per_step"], "accepted tokens per step (incl. target's token)"),
        (axes[1], ["speedup_median"] if "speedup_median" in tab else [], "speedup over baseline (× tokens/s)"),
        (axes[2], quality, "quality (metric value / fraction)"),
    ]
    for ax, cols, ylabel in panels:
        drawn = False
        for col in cols:
            for name, s in tab.groupby("series", sort=True):
                s = s.sort_values("threshold")
                if s[col].notna().any():
                    suffix = f" · {col.removeprefix('metric_')}" if len(cols) > 1 or ax is axes[2] else ""
                    ax.plot(s["threshold"], s[col], "o-", label=f"{name}{suffix}")
                    drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not recorded" if ax is not axes[1] else "no matching baseline", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(fontsize=8)
        ax.set_xlabel("judge threshold")
        ax.set_ylabel(ylabel)
    return _finish(fig, axes, "AutoJudge: speed and quality vs threshold")


def plot_categories(df: pd.DataFrame, sp: Optional[pd.DataFrame] = None) -> Figure:
    """Per-category bars: median tokens/s per configuration and, where baselines match, median speedup."""
    cs = T.category_summary(df)
    if cs.empty or "tokens_per_sec_median" not in cs or cs["category"].isna().all():
        raise T.NoData("no ok rows with a category")
    sp = T.speedups(df) if sp is None else sp
    ssc = T.speedup_summary(sp, by=["category"]) if not sp.empty else pd.DataFrame()
    panels = [(cs, "tokens_per_sec", "tokens/s (median over prompts)")]
    if not ssc.empty:
        panels.append((ssc, "speedup", "speedup over baseline (× tokens/s)"))
    full, short = _series_labels(cs, []), _series_labels(cs, [], by_arm=True)
    by_arm = bool(short.groupby(short).apply(lambda g: full[g.index].nunique() == 1).all())  # arm names that stay distinct
    names = sorted((short if by_arm else full).unique())
    # each panel tall enough for its legend (one line per configuration) beside it
    fig, axes = _subplots(len(panels), 1, (11, max(4.0, 0.8 + 0.21 * len(names)) * len(panels)))
    axes = axes[:, 0]
    # one colour per configuration in both panels; tab20 keeps up to 20 configurations distinct
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    colors = {n: cmap(i % cmap.N) for i, n in enumerate(names)}
    for ax, (tab, col, ylabel) in zip(axes, panels):
        tab = tab.assign(series=_series_labels(tab, [], ref=cs, by_arm=by_arm))
        cats = sorted(tab["category"].dropna().unique())
        series = sorted(tab["series"].unique())
        width = min(0.8 / len(series), 0.3)
        x = np.arange(len(cats))
        for i, name in enumerate(series):
            s = tab[tab["series"] == name].set_index("category").reindex(cats)
            err = np.nan_to_num(_iqr_err(s, col))
            ax.bar(x + (i - (len(series) - 1) / 2) * width, s[f"{col}_median"], width, yerr=err, capsize=2, label=name,
                   color=colors.get(name))
        if col == "speedup":
            ax.axhline(1.0, color="grey", ls="--", lw=1)
        ax.set_xticks(x, cats, rotation=20)
        ax.set_xlim(-0.6, len(cats) - 0.4)
        ax.set_xlabel("prompt category")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _finish(fig, axes, "Per-category results (bars: median, whiskers: IQR over prompts)")


def plot_quality_frontier(df: pd.DataFrame, quality: Optional[pd.DataFrame] = None) -> Figure:
    """Quality/speed frontier of a sweep of separate jobs with lossy (AutoJudge) rows: pass@1 (95 %
    Wilson interval) against speedup over baseline and against tokens per target call. AutoJudge
    points are joined by threshold for each k; baseline and SpS (and any other method) are reference
    points. Arms of comparison jobs are left to :func:`plot_lossy_frontier` (paired, every rule)."""
    tab = T.quality_table(df) if quality is None else quality
    if "arm" in tab.columns:
        tab = tab[tab["arm"].isna()]
    lossy = tab[tab["method"] == "autojudge"]
    if lossy.empty:
        raise T.NoData("no lossy (autojudge) rows on a checked dataset outside comparison jobs (their arms: lossy_frontier)")
    fig, axs = _subplots(1, 2, (13, 5))
    axes = axs[0]
    err = np.vstack([tab["pass_at_1"] - tab["pass_at_1_lo"], tab["pass_at_1_hi"] - tab["pass_at_1"]]).clip(min=0)
    tab = tab.assign(_lo=err[0], _hi=err[1])
    lossy = tab[tab["method"] == "autojudge"]
    refs = tab[tab["method"] != "autojudge"]
    series = _series_labels(lossy, ["param_threshold", "param_threshold_quantile"], ref=tab)
    for ax, x, xlabel in ((axes[0], "speedup", "speedup over baseline (× tokens/s)"), (axes[1], "tokens_per_target_call", "tokens per target call")):
        for name, s in lossy.assign(series=series).groupby("series", sort=True):
            s = s.sort_values("threshold") if "threshold" in s else s
            ax.errorbar(s[x], s["pass_at_1"], yerr=[s["_lo"], s["_hi"]], fmt="o-", capsize=3, label=name)
            if "threshold" in s:
                for _, r in s.iterrows():
                    if pd.notna(r[x]):
                        ax.annotate(f"t={r['threshold']:.3g}", (r[x], r["pass_at_1"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        labels = _series_labels(refs, [], ref=tab)
        for (_, r), name in zip(refs.iterrows(), labels):
            xv = 1.0 if r["method"] == T.BASELINE and x == "speedup" else r[x]
            marker = "*" if r["method"] == T.BASELINE else "s"
            ax.errorbar([xv], [r["pass_at_1"]], yerr=[[r["_lo"]], [r["_hi"]]], fmt=marker, ms=10 if marker == "*" else 7, capsize=3, label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("pass@1 (95 % Wilson interval)")
        ax.legend(fontsize=7)
    return _finish(fig, axes, "Quality vs speed: AutoJudge thresholds against baseline and SpS")


def plot_batch_crossover(df: pd.DataFrame, crossover: Optional[pd.DataFrame] = None) -> Figure:
    """Against batch size: each arm's paired speedup over the reference arm (95 % bootstrap
    interval); its decode-phase speedup with the cost model's prediction beside it where the arm
    makes one (hollow markers; the model forecasts the decode phase); aggregate throughput for
    every arm, the reference's included."""
    tab = batch_crossover(df) if crossover is None else crossover
    fig, axs = _subplots(1, 3, (18, 5))
    axes = axs[0]
    cmap = matplotlib.colormaps["tab10"]
    for i, (arm, g) in enumerate(tab.groupby("arm", sort=True)):
        g = g.sort_values("batch_size")
        color = cmap(i % 10)
        label = f"{arm} ({g['config'].iloc[0]})" if pd.notna(g["config"].iloc[0]) else str(arm)
        axes[2].plot(g["batch_size"], g["throughput_tokens_per_sec"], "o-", color=color, label=label)
        s = g[g["speedup"].notna()]
        if s.empty:
            continue
        for ax, col in ((axes[0], "speedup"), (axes[1], "decode_speedup")):
            err = np.vstack([s[col] - s[f"{col}_lo"], s[f"{col}_hi"] - s[col]]).clip(min=0)
            ax.errorbar(s["batch_size"], s[col], yerr=np.nan_to_num(err), fmt="o-", capsize=3, color=color, label=label)
        p = s[s["predicted_speedup"].notna()]
        if not p.empty:
            axes[1].plot(p["batch_size"], p["predicted_speedup"], "o--", mfc="none", color=color, label=f"{arm}: predicted")
    for ax in axes[:2]:
        ax.axhline(1.0, color="black", lw=0.8)
    axes[0].set_ylabel("speedup over the reference arm (× tokens/s, 95 % CI)")
    axes[1].set_ylabel("decode-phase speedup (× decode tokens/s, 95 % CI)")
    axes[2].set_ylabel("aggregate throughput (tokens/s)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.legend(fontsize=7)
    return _finish(fig, axes, "Speedup, decode-phase speedup and throughput against batch size")


_REF_MARKERS = {"target alone": "*", "exact SpS": "s"}  # other lossless arms: "D"


def plot_lossy_frontier(df: pd.DataFrame, frontier: Optional[pd.DataFrame] = None) -> Figure:
    """Every rule of a comparison job on one frontier (:func:`spsamp.analysis.frontier.lossy_frontier`):
    pass@1 (95 % Wilson interval) against the paired speedup over the reference arm (95 % bootstrap
    interval) and against tokens per target call, one series per rule family joined along its knob
    from the exact end, the other lossless arms (exact SpS, ...) as single markers, the reference's
    pass@1 as a dotted line over its shaded interval. One row of panels per comparison job (dataset)."""
    tab = F.lossy_frontier(df) if frontier is None else frontier
    if tab.empty:
        raise T.NoData("no lossy arm (method=lossy or autojudge) in a comparison job")
    jobs = list(tab.groupby(P.JOB_KEYS, dropna=False, sort=False))
    fig, axs = _subplots(len(jobs), 2, (13, 4.8 * len(jobs)))
    families = [f for f in F.FAMILY_ORDER if f in set(tab["family"])] + sorted(set(tab["family"]) - set(F.FAMILY_ORDER))
    colors = {f: f"C{i}" for i, f in enumerate(families)}  # one colour per family in every panel
    for row, ((run_dir, comparison), g) in zip(axs, jobs):
        g = g.assign(_ylo=(g["pass_at_1"] - g["pass_at_1_lo"]).clip(lower=0), _yhi=(g["pass_at_1_hi"] - g["pass_at_1"]).clip(lower=0),
                     _xlo=(g["speedup"] - g["speedup_lo"]).clip(lower=0).fillna(0), _xhi=(g["speedup_hi"] - g["speedup"]).clip(lower=0).fillna(0))
        ref = g[g["arm"] == g["reference_arm"]]
        # two lines: a comparison's path and its machines do not fit one panel's width
        title = f"{g['dataset'].iloc[0]} — {comparison}\nreference: {g['reference_arm'].iloc[0]}; {g['hardware'].iloc[0]}"
        for ax, x, xlabel in ((row[0], "speedup", f"paired speedup over {g['reference_arm'].iloc[0]} (95 % bootstrap)"),
                              (row[1], "tokens_per_target_call", "tokens per target call")):
            xerr = (lambda s: [s["_xlo"], s["_xhi"]]) if x == "speedup" else (lambda s: None)
            for family, s in g[~g["lossless"]].groupby("family", sort=False):
                ax.errorbar(s[x], s["pass_at_1"], xerr=xerr(s), yerr=[s["_ylo"], s["_yhi"]], fmt="o-", capsize=3,
                            color=colors[family], label=family)
                for _, r in s.iterrows():
                    if pd.notna(r[x]) and pd.notna(r["pass_at_1"]):
                        label = r["knob_label"] if isinstance(r["knob_label"], str) and r["knob_label"] else r["arm"]
                        ax.annotate(label, (r[x], r["pass_at_1"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            for _, r in g[g["lossless"] & (g["arm"] != g["reference_arm"])].iterrows():
                marker = _REF_MARKERS.get(r["family"], "D")
                ax.errorbar([r[x]], [r["pass_at_1"]], xerr=None if x != "speedup" else [[r["_xlo"]], [r["_xhi"]]],
                            yerr=[[r["_ylo"]], [r["_yhi"]]], fmt=marker, ms=11 if marker == "*" else 7, capsize=3,
                            color=colors[r["family"]], label=f"{r['family']} ({r['arm']})")
            if len(ref) and pd.notna(ref["pass_at_1"].iloc[0]):
                # the reference sits at x = 1 by definition: a band, so that the axes zoom on the drafting arms
                reference = ref.iloc[0]
                if pd.notna(reference["pass_at_1_lo"]) and pd.notna(reference["pass_at_1_hi"]):
                    ax.axhspan(reference["pass_at_1_lo"], reference["pass_at_1_hi"], color="grey", alpha=0.12, lw=0)
                ax.axhline(reference["pass_at_1"], color="grey", ls=":", lw=1,
                           label=f"{reference['family']} ({reference['arm']}): pass@1, 95 % interval shaded")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("pass@1 (95 % Wilson interval)")
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=7)
    return _finish(fig, axs.ravel(), "Lossy rules: pass@1 vs paired speed and tokens per target call")


PLOTS = {
    "speedup_vs_k": plot_speedup_vs_k,
    "accept_length_vs_k": plot_accept_length_vs_k,
    "specexec_tokens_per_call": plot_specexec,
    "autojudge_threshold": plot_autojudge,
    "quality_frontier": plot_quality_frontier,
    "lossy_frontier": plot_lossy_frontier,
    "categories": plot_categories,
    "batch_crossover": plot_batch_crossover,
}
