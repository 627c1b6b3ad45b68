"""Speedup against batch size (spsamp/analysis/crossover.py): each arm's paired speedup per batch
size, aggregate throughput over batches, and where speculation stops paying, judged by the
interval rather than the point estimate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spsamp.analysis.crossover import batch_crossover, crossover_summary
from spsamp.analysis.plots import plot_batch_crossover
from spsamp.analysis.tables import NoData
from spsamp.records.schema import CORE_NAMES

PROMPTS = 16


def job(bs: int, ratios: dict[str, float], jitter: float = 0.02, prefill: float = 0.0) -> list[dict]:
    """One comparison job at batch size ``bs``: the base arm and each arm of ``ratios`` (its true
    decode speedup) decode PROMPTS prompts in batches of ``bs``; each batch's wall, prefill and
    decode time are shared by its rows, as the runner records them; an arm's batches decode -jitter,
    0, +jitter off its true ratio; every arm's prefill takes ``prefill`` seconds per row."""
    rows = []
    for arm, ratio in {"base": 1.0, **ratios}.items():
        for b in range(PROMPTS // bs):
            decode = bs * (1.0 + 0.05 * bs) / ratio * (1 + (jitter * ((b % 3) - 1) if arm != "base" else 0))
            wall = prefill * bs + decode
            for i in range(b * bs, (b + 1) * bs):
                r = {name: None for name in CORE_NAMES}
                r.update({
                    "run_id": f"run{bs}", "resume_key": f"{bs}-{arm}-{i}", "status": "ok", "run_dir": f"bs{bs}",
                    "comparison": f"bs{bs}", "arm": arm, "reference_arm": "base", "config": "baseline" if arm == "base" else f"speculative {arm}",
                    "method": "baseline" if arm == "base" else "speculative", "prompt_id": f"p{i}", "turn": 1, "repeat": 0,
                    "temperature": 0.0, "cpu_model": "cpu-A", "num_threads": 1, "cpu_linear": "aten", "hostname": "h",
                    "batch_size": bs, "batch_index": b, "new_tokens": 10, "wall_time_s": wall, "tokens_per_sec": 10 / wall,
                    "prefill_s": prefill * bs, "decode_s": decode, "decode_tokens_per_sec": 10 / decode, "target_calls": 10 if arm == "base" else 4, "peak_mem_bytes": 2**30 * bs,
                    "generated_ids": [1, 2],
                })
                rows.append(r)
    return rows


def sweep() -> pd.DataFrame:
    truth = {1: {"sps": 2.0, "lookup": 1.3}, 2: {"sps": 1.5, "lookup": 1.3}, 4: {"sps": 1.0, "lookup": 1.3}, 8: {"sps": 0.7, "lookup": 1.3}}
    return pd.DataFrame([r for bs, ratios in truth.items() for r in job(bs, ratios)])


def test_each_arm_gets_its_paired_speedup_and_aggregate_throughput_per_batch_size():
    tab = batch_crossover(sweep())
    sps = tab[tab["arm"] == "sps"].set_index("batch_size")
    assert list(sps.index) == [1, 2, 4, 8]
    assert list(sps["n_batches"]) == [16, 8, 4, 2]  # rows of one batch share its wall time: one measurement
    assert sps.loc[1, "speedup"] == pytest.approx(2.0, rel=0.05) and sps.loc[8, "speedup"] == pytest.approx(0.7, rel=0.05)
    assert (sps["speedup_lo"] <= sps["speedup"]).all() and (sps["speedup"] <= sps["speedup_hi"]).all()
    base = tab[tab["arm"] == "base"].set_index("batch_size")
    assert base["speedup"].isna().all()  # the reference arm: speedup 1 by definition, left empty
    # aggregate throughput = every batch's tokens over every batch's wall time: bs rows of 10 tokens
    # in bs * (1 + 0.05 bs) seconds (up to the jitter)
    assert base.loc[4, "throughput_tokens_per_sec"] == pytest.approx(10 / 1.2, rel=0.05)
    assert base.loc[8, "peak_mem_gib"] == pytest.approx(8.0)


def test_where_speculation_stops_paying_is_judged_by_the_interval():
    summary = crossover_summary(batch_crossover(sweep())).set_index("arm")
    assert summary.loc["sps", "pays_up_to"] == 2  # 1.0x at batch size 4: the interval includes 1
    assert summary.loc["sps", "stops_paying_at"] == 8
    assert summary.loc["sps", "best_batch_size"] == 1 and summary.loc["sps", "best_speedup"] == pytest.approx(2.0, rel=0.05)
    assert summary.loc["lookup", "pays_up_to"] == 8 and np.isnan(summary.loc["lookup", "stops_paying_at"])


def test_a_single_batch_gets_no_interval_and_is_never_judged():
    rows = [r for bs, ratios in {1: {"sps": 2.0}, 16: {"sps": 0.5}}.items() for r in job(bs, ratios)]
    tab = batch_crossover(pd.DataFrame(rows)).set_index(["arm", "batch_size"])
    assert tab.loc[("sps", 16), "n_batches"] == 1 and np.isnan(tab.loc[("sps", 16), "speedup_lo"])
    assert tab.loc[("sps", 16), "speedup"] == pytest.approx(0.5, rel=0.05)
    assert np.isnan(crossover_summary(tab.reset_index()).set_index("arm").loc["sps", "stops_paying_at"])


def test_decode_speedup_pairs_the_decode_phase_that_the_prefill_dilutes():
    """Every arm pays the same prefill: the whole-batch speedup shrinks towards 1 while the decode
    phase's speedup, paired per batch with its own interval, still shows what the drafter gained."""
    tab = batch_crossover(pd.DataFrame(job(2, {"sps": 2.0}, prefill=1.0) + job(4, {"sps": 2.0}, prefill=1.0)))
    sps = tab[tab["arm"] == "sps"].set_index("batch_size")
    for bs in (2, 4):
        r = sps.loc[bs]
        assert r["decode_speedup"] == pytest.approx(2.0, rel=0.02)
        assert r["decode_speedup_lo"] <= 2.0 <= r["decode_speedup_hi"] and r["decode_speedup_hi"] < 2.1
        assert 1.0 < r["speedup"] < r["decode_speedup"] and r["speedup_hi"] < 2.0  # prefill dilutes it
    assert tab[tab["arm"] == "base"]["decode_speedup"].isna().all()


def test_one_batch_size_has_no_crossover_and_the_plot_renders_otherwise():
    with pytest.raises(NoData, match="one batch size"):
        batch_crossover(pd.DataFrame(job(2, {"sps": 1.5})))
    fig = plot_batch_crossover(sweep())
    assert len(fig.axes) == 3 and all(ax.get_xscale() == "log" for ax in fig.axes)
    assert "decode" in fig.axes[1].get_ylabel()


@pytest.mark.slow
def test_a_batch_size_sweep_reports_its_crossover(tmp_path):
    """run.py over two batch sizes -> build_report: the crossover tables and plot."""
    from conftest import run_py
    from spsamp.analysis.report import build_report

    sweep_dir = tmp_path / "sweep"
    run_py(["-m", "experiment=smoke_compare", "generation.batch_size=1,2", "dataset.max_samples=4", f"hydra.sweep.dir={sweep_dir}"])
    report = build_report(sweep_dir, tmp_path / "report")
    tab = pd.read_csv(tmp_path / "report" / "tables" / "batch_crossover.csv")
    assert sorted(set(tab["batch_size"])) == [1, 2] and set(tab["arm"]) == {"baseline", "speculative"}
    assert tab[tab["arm"] == "speculative"]["speedup"].notna().all()
    assert (tmp_path / "report" / "tables" / "batch_crossover_summary.csv").exists()
    assert "## Where speculation stops paying" in report.read_text() and (tmp_path / "report" / "batch_crossover.png").exists()
