"""scripts/benchmark_pages.py: benchmark pages and the README's headline say only what their
committed CSVs hold, and say "not yet run" where there is none."""

from __future__ import annotations

import importlib.util
import shutil
import sys

import pytest

from conftest import ROOT


@pytest.fixture()
def pages(tmp_path, monkeypatch):
    """The module, pointed at a copy of the README, the pages and their CSVs."""
    spec = importlib.util.spec_from_file_location("benchmark_pages", ROOT / "scripts" / "benchmark_pages.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    shutil.copytree(ROOT / "docs" / "benchmarks", tmp_path / "docs" / "benchmarks")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "BENCH", tmp_path / "docs" / "benchmarks")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "docs" / "benchmarks" / "results")
    yield module
    sys.modules.pop(spec.name, None)


def test_committed_pages_match_their_csvs(pages):
    assert pages.render(check=True) == 0


def test_a_study_without_csv_says_not_yet_run_and_a_csv_row_reaches_page_and_readme(pages, tmp_path):
    results = tmp_path / "docs" / "benchmarks" / "results"
    page = tmp_path / "docs" / "benchmarks" / "all_methods.md"
    for f in results.glob("all_methods.*"):
        f.unlink()  # start from a study that was never imported
    pages.render(check=False)
    assert "Not yet run" in page.read_text()
    (results / "all_methods.csv").write_text("arm,n_prompts,speedup,speedup_lo,speedup_hi\nspeculative,16,1.725,1.5,1.9\n"
                                             "specexec,16,1.5,1.25,1.75\n")
    (results / "all_methods.provenance.csv").write_text(
        "first_row,last_row,rows,git_sha,cpu_model,gpu_name,num_threads,cpu_linear,torch_version,transformers_version\n"
        "2027-01-02 10:00 UTC,2027-01-02 11:00 UTC,32,abcdef1,Some CPU,–,4,aten,2.13.0+cpu,5.24.0\n")
    assert pages.render(check=True) == 1  # the page no longer says what its CSV holds
    assert pages.render(check=False) == 0 and pages.render(check=True) == 0
    text = page.read_text()
    assert "Not yet run" not in text and "| speculative | 16 | 1.73 | 1.5 | 1.9 |" in text
    assert "speedup 1.73 [1.5, 1.9]" in (tmp_path / "README.md").read_text()
    assert "2027-01-02 10:00 UTC" in text and "spsamp abcdef1" in text and "Some CPU" in text
    (results / "all_methods.csv").unlink()
    pages.render(check=False)
    assert "Not yet run" in page.read_text() and "1.73" not in page.read_text()


def test_a_page_without_markers_is_refused(pages, tmp_path):
    page = tmp_path / "docs" / "benchmarks" / "headline_qwen_cpu.md"
    page.write_text("# a page\n")
    with pytest.raises(SystemExit, match="no generated block"):
        pages.render(check=True)


@pytest.mark.slow
def test_import_keeps_the_reports_table_and_the_records_provenance(pages, tmp_path):
    """run.py sweep -> python -m spsamp.analysis report -> import: the page shows the report's rows
    and the provenance the records carry, nothing else."""
    import subprocess

    import pandas as pd
    import torch

    from conftest import run_py
    from spsamp.analysis import load_records

    sweep, report = tmp_path / "sweep", tmp_path / "report"
    run_py(["-m", "experiment=smoke_compare", f"hydra.sweep.dir={sweep}"])
    subprocess.run([sys.executable, "-m", "spsamp.analysis", "report", str(sweep), "--out", str(report)], cwd=ROOT,
                   check=True, capture_output=True, timeout=600)
    pages.import_study("all_methods", report, sweep)
    assert pages.render(check=False) == 0
    table = pd.read_csv(report / "tables" / "paired_speedup.csv")
    kept = pd.read_csv(tmp_path / "docs" / "benchmarks" / "results" / "all_methods.csv")
    assert list(kept.columns) == list(pages.STUDIES["all_methods"].columns)
    assert sorted(kept.arm) == sorted(table.arm) == ["baseline", "speculative"]
    text = (tmp_path / "docs" / "benchmarks" / "all_methods.md").read_text()
    rows = load_records(sweep, metrics=False)
    assert "Not yet run" not in text and f"({len(rows)} rows)" in text and f"torch {torch.__version__}" in text
    assert all(f"| {a} | {c} |" in text for a, c in zip(kept.arm, kept.config))
    readme = (tmp_path / "README.md").read_text()
    assert "| speculative | speedup " in readme and "| specexec | not in the committed results |" in readme
    assert f"spsamp {rows.git_sha.iloc[0][:7]}" in text


def test_each_cell_of_a_study_has_its_own_section_and_only_the_default_reaches_the_readme(pages, tmp_path):
    results = tmp_path / "docs" / "benchmarks" / "results"
    page = tmp_path / "docs" / "benchmarks" / "headline_qwen_cpu.md"
    cells = dict(pages.STUDIES["headline_qwen_cpu"].cells)
    assert "" in cells and "mt_bench" in cells
    for f in results.glob("headline_qwen_cpu.mt_bench.*"):
        f.unlink()  # start from a cell that was never imported
    pages.render(check=False)
    before = page.read_text()
    assert f"### {cells['mt_bench']}" in before
    section = before.split(f"### {cells['mt_bench']}", 1)[1].split("###", 1)[0]
    assert "Not yet run" in section and "this setting" in section
    (results / "headline_qwen_cpu.mt_bench.csv").write_text("arm,speedup\nsps_auto_lookup,1.234\n")
    (results / "headline_qwen_cpu.mt_bench.provenance.csv").write_text(
        "first_row,last_row,rows,git_sha,cpu_model,gpu_name,num_threads,cpu_linear,torch_version,transformers_version\n"
        "2027-01-02 10:00 UTC,2027-01-02 11:00 UTC,16,abcdef1,Some CPU,–,1,aten,2.13.0+cpu,5.24.0\n")
    assert pages.render(check=True) == 1 and pages.render(check=False) == 0
    section = page.read_text().split(f"### {cells['mt_bench']}", 1)[1].split("###", 1)[0]
    assert "| sps_auto_lookup | 1.23 |" in section and "Not yet run" not in section
    assert "1.23" not in (tmp_path / "README.md").read_text()  # the README shows the default cell only


def test_an_unknown_cell_is_refused_naming_the_study_cells(pages, tmp_path):
    with pytest.raises(SystemExit, match="--cell 'nope'.*mt_bench"):
        pages.import_study("headline_qwen_cpu", tmp_path, tmp_path, cell="nope")


def test_a_studys_extra_tables_render_under_its_table_and_a_study_without_headline_rows_stays_off_the_readme(pages, tmp_path):
    results = tmp_path / "docs" / "benchmarks" / "results"
    page = tmp_path / "docs" / "benchmarks" / "sweep_batch_size.md"
    (results / "sweep_batch_size.csv").write_text("arm,batch_size,speedup\nsps_auto,1,1.75\nsps_auto,16,0.98\n")
    (results / "sweep_batch_size.batch_crossover_summary.csv").write_text("arm,pays_up_to,stops_paying_at\nsps_auto,8,16\n")
    (results / "sweep_batch_size.provenance.csv").write_text(
        "first_row,last_row,rows,git_sha,cpu_model,gpu_name,num_threads,cpu_linear,torch_version,transformers_version\n"
        "2027-01-02 10:00 UTC,2027-01-02 11:00 UTC,80,abcdef1,Some CPU,–,1,onednn,2.13.0+cpu,5.24.0\n")
    assert pages.render(check=False) == 0
    text = page.read_text()
    assert "| sps_auto | 16 | 0.98 |" in text and "`tables/batch_crossover_summary.csv`:" in text and "| sps_auto | 8 | 16 |" in text
    readme = (tmp_path / "README.md").read_text()
    assert "sweep_batch_size" not in readme.split(pages.BEGIN, 1)[1].split(pages.END, 1)[0]


def test_a_filtered_extra_shows_only_its_rows_and_links_the_whole_table(pages, tmp_path):
    """Per-problem verdicts: the page lists the problems where the arms disagree, the CSV keeps all."""
    results = tmp_path / "docs" / "benchmarks" / "results"
    stem = "lossy_frontier.humaneval_test"
    for f in results.glob(f"{stem}*"):
        f.unlink()
    (results / f"{stem}.csv").write_text("arm,speedup\nbaseline,1\nsps,2.5\n")
    (results / f"{stem}.provenance.csv").write_text(
        "first_row,last_row,rows,git_sha,cpu_model,gpu_name,num_threads,cpu_linear,torch_version,transformers_version\n"
        "2027-01-02 10:00 UTC,2027-01-02 11:00 UTC,6,abcdef1,Some CPU,–,1,onednn,2.13.0+cpu,5.24.0\n")
    (results / f"{stem}.per_problem.csv").write_text(
        "prompt_id,baseline,sps,disagree\nHumanEval/1,1,1,False\nHumanEval/7,1,0,True\nHumanEval/9,0,0,False\n")
    assert pages.render(check=False) == 0
    text = (tmp_path / "docs" / "benchmarks" / "lossy_frontier.md").read_text()
    assert "| HumanEval/7 | 1 | 0 |" in text and "HumanEval/1 " not in text and "HumanEval/9" not in text
    assert "the 1 of 3 rows where `disagree` holds" in text and f"(results/{stem}.per_problem.csv)" in text
    (results / f"{stem}.per_problem.csv").write_text("prompt_id,baseline,sps,disagree\nHumanEval/1,1,1,False\n")
    pages.render(check=False)
    assert "the 0 of 1 rows where `disagree` holds" in (tmp_path / "docs" / "benchmarks" / "lossy_frontier.md").read_text()


def test_all_in_a_studys_columns_keeps_every_arm_column_and_drops_the_comparison_keys(pages):
    import pandas as pd

    table = pd.DataFrame(columns=["run_dir", "comparison", "prompt_id", "turn", "repeat", "baseline", "sps", "my_rule", "disagree"])
    assert pages._columns(table, ("prompt_id", pages.ALL, "disagree")) == ["prompt_id", "baseline", "sps", "my_rule", "disagree"]
    assert pages._columns(table, ("prompt_id", "sps")) == ["prompt_id", "sps"]


def test_a_study_measured_in_named_cells_reaches_the_readme_from_its_first_cell_labelled_by_it(pages, tmp_path):
    results = tmp_path / "docs" / "benchmarks" / "results"
    first, second = (cell for cell, _ in pages.STUDIES["lossy_frontier"].cells[:2])
    for f in results.glob("lossy_frontier*"):
        f.unlink()
    prov = ("first_row,last_row,rows,git_sha,cpu_model,gpu_name,num_threads,cpu_linear,torch_version,transformers_version\n"
            "2027-01-02 10:00 UTC,2027-01-04 11:00 UTC,6,abcdef1,Some CPU,–,1,onednn,2.13.0+cpu,5.24.0\n")
    for cell, speedup in ((first, "2.51"), (second, "7.77")):
        (results / f"lossy_frontier.{cell}.csv").write_text(f"arm,speedup,speedup_lo,speedup_hi\nsps,{speedup},2.4,2.6\n")
        (results / f"lossy_frontier.{cell}.provenance.csv").write_text(prov)
    assert pages.render(check=False) == 0
    readme = (tmp_path / "README.md").read_text()
    assert f"| sps ({first}) | speedup 2.51 [2.4, 2.6], pass_at_1 –" in readme and "7.77" not in readme
    assert "2027-01-02 to 2027-01-04" in readme  # a study decoded over several days says so


def test_a_studys_figure_is_kept_beside_its_table_and_dropped_when_a_report_has_none(pages, tmp_path, monkeypatch):
    import pandas as pd

    import spsamp.analysis

    rows = pd.DataFrame({"started_at": ["2027-01-02T10:00:00+00:00"], "git_sha": ["abcdef1234"], "cpu_model": ["Some CPU"]})
    monkeypatch.setattr(spsamp.analysis, "load_records", lambda *a, **k: rows)
    report, spec = tmp_path / "report", pages.STUDIES["lossy_frontier"]
    (report / "tables").mkdir(parents=True)
    for name, columns in [(spec.table, spec.columns), *spec.extra]:
        columns = [c for c in columns if c != pages.ALL]
        (report / "tables" / f"{name}.csv").write_text(",".join(columns) + "\n" + ",".join("1" for _ in columns) + "\n")
    (report / spec.figure).write_bytes(b"\x89PNG figure")
    cell = spec.cells[1][0]
    kept = tmp_path / "docs" / "benchmarks" / "results" / f"lossy_frontier.{cell}.png"
    pages.import_study("lossy_frontier", report, tmp_path, cell=cell)
    pages.render(check=False)
    assert kept.read_bytes() == b"\x89PNG figure"
    assert f"](results/lossy_frontier.{cell}.png)" in (tmp_path / "docs" / "benchmarks" / "lossy_frontier.md").read_text()
    (report / spec.figure).unlink()  # a report that could not draw it: no figure of other rows stays on the page
    pages.import_study("lossy_frontier", report, tmp_path, cell=cell)
    pages.render(check=False)
    assert not kept.exists() and f"lossy_frontier.{cell}.png" not in (tmp_path / "docs" / "benchmarks" / "lossy_frontier.md").read_text()
