"""Analysis of spsamp records: load every run into pandas, derive speedups and summaries, plot, report.

    from spsamp.analysis import load_records, speedups, speedup_summary, method_summary
    df = load_records("outputs/")            # every records.parquet under runs/ and sweeps/
    speedup_summary(speedups(df))            # per configuration: median [IQR] speedup over baseline

CLI: ``python -m spsamp.analysis report outputs/ --out reports/latest``.
"""

from spsamp.analysis.frontier import best_rules, lossy_frontier
from spsamp.analysis.load import expand_metrics, find_record_files, load_records
from spsamp.analysis.tables import (
    NoData,
    autojudge_table,
    category_summary,
    errors_table,
    estimate_cost_ratio,
    method_summary,
    per_prompt,
    predicted_vs_measured,
    runs_table,
    speedup_summary,
    speedups,
    to_markdown,
)

__all__ = [
    "NoData",
    "autojudge_table",
    "best_rules",
    "build_report",
    "category_summary",
    "errors_table",
    "estimate_cost_ratio",
    "expand_metrics",
    "find_record_files",
    "load_records",
    "lossy_frontier",
    "method_summary",
    "per_prompt",
    "plots",
    "predicted_vs_measured",
    "runs_table",
    "speedup_summary",
    "speedups",
    "to_markdown",
]


def __getattr__(name: str):
    # matplotlib is imported only when plots or the report are used
    if name == "build_report":
        from spsamp.analysis.report import build_report

        return build_report
    if name == "plots":
        import importlib

        return importlib.import_module("spsamp.analysis.plots")
    raise AttributeError(name)
