"""Sweeps: every experiment composes (each job of its grid validates), the smoke sweep runs as a real
multirun, re-launching it redoes exactly the missing rows, and a sweep killed with SIGKILL resumes
without duplicated or lost rows."""

from __future__ import annotations

import itertools
import re
import shlex
import signal
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf

from conftest import ROOT, compose_cfg, kill9_when, run_py
from spsamp.comparison import compose_arms
from spsamp.config import validate
from spsamp.sweeps import job_dirname

EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))


def header_commands(name: str) -> list[list[str]]:
    """The ``python run.py ...`` commands written in an experiment's header, as override lists."""
    cmds = []
    for line in (ROOT / "experiments" / f"{name}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("# ")
        if text.startswith("python run.py"):
            words = shlex.split(text, comments=True)
            cmds.append([w for w in words[2:] if w not in ("-m", "--multirun")])
    return cmds


def conf_commands() -> list[tuple[str, list[str]]]:
    """The ``python run.py ...`` commands in the comments of ``conf/`` (the experiments aside: their
    headers are :func:`header_commands`), as (file, overrides); a line ending in a backslash goes on
    in the next comment line."""
    found = []
    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        if "experiment" in path.relative_to(ROOT / "conf").parts:
            continue
        comments = [line.split("#", 1)[1] for line in path.read_text().splitlines() if line.lstrip().startswith("#")]
        text = re.sub(r"\\\s*\n\s*", " ", "\n".join(comments))
        for cmd in re.findall(r"python run\.py[^`\n]*", text):
            words = [w for w in shlex.split(cmd, comments=True)[2:] if w not in ("-m", "--multirun")]
            if "--cfg" in words:
                del words[words.index("--cfg"):words.index("--cfg") + 2]
            found.append((str(path.relative_to(ROOT)), words))
    return found


@pytest.mark.parametrize("where,cmd", conf_commands(), ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_commands_in_the_configs_comments_compose(where, cmd):
    cfg = compose_cfg([o for o in cmd if not is_sweep(o)], return_hydra_config=True)
    if cfg.get("compare", {}).get("arms"):
        compose_arms(compose_cfg([o for o in cmd if not is_sweep(o)]), cmd, compose_cfg)


def is_sweep(override: str) -> bool:
    value = override.split("=", 1)[1]
    return "," in value and not value.startswith(("[", "{"))


def grid(params, cmd: list[str]) -> tuple[list[str], list[list[str]]]:
    """(fixed overrides, one override list per job) as Hydra's basic sweeper makes them: the file's
    ``hydra.sweeper.params``, where a command-line override of the same key (swept or not)
    replaces the file's list; simple comma lists only."""
    axes = {k: str(v) for k, v in (params or {}).items()}
    fixed = []
    for o in cmd:
        key, value = o.split("=", 1)
        if key in axes or is_sweep(o):
            axes[key] = value
        else:
            fixed.append(o)
    values = [v.split(",") for v in axes.values()]
    return fixed, [[f"{k}={v}" for k, v in zip(axes, combo)] for combo in itertools.product(*values)]


def read_rows(sweep: Path) -> pd.DataFrame:
    files = sorted(sweep.glob("*/records.parquet"))
    return pd.concat([pd.read_parquet(f).assign(job_dir=f.parent.name) for f in files], ignore_index=True)


def test_required_experiments_exist():
    assert {"all_methods", "sweep_k", "sweep_specexec", "sweep_autojudge_threshold", "smoke", "smoke_compare"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_every_job_validates(name):
    text = (ROOT / "experiments" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    cmds = header_commands(name)
    assert cmds and all(f"experiment={name}" in c for c in cmds), f"{name}: header must give the command that runs it"
    for cmd in cmds:
        cfg = compose_cfg([o for o in cmd if not is_sweep(o)], return_hydra_config=True)
        assert cfg.hydra.mode == RunMode.MULTIRUN, "a study sweeps: set hydra.mode: MULTIRUN"
        fixed, jobs = grid(cfg.hydra.sweeper.params, cmd)
        for job in jobs:
            cfg_job = compose_cfg(fixed + job)
            validate(cfg_job)  # raises ConfigError on any bad value, loads no model
            compose_arms(cfg_job, fixed + job, compose_cfg)  # ... and so does every arm of a comparison
    # the sweep dir is named after the experiment: a re-launch finds it, other experiments never share it
    OmegaConf.resolve(cfg)
    assert Path(cfg.hydra.sweep.dir).name == name
    assert Path(cfg.hydra.sweep.dir).parent == Path(cfg.paths.output_dir) / "sweeps"


def test_grids_are_what_the_studies_say():
    def params(name):
        grid = compose_cfg([f"experiment={name}"], return_hydra_config=True).hydra.sweeper.params
        return {k: str(v) for k, v in (grid or {}).items()}

    def arms(name, extra=()):
        cfg = compose_cfg([f"experiment={name}", *extra])
        return {a.name: (a.params.name, getattr(a.params, "k", None)) for a in compose_arms(cfg, [f"experiment={name}", *extra], compose_cfg)}

    # comparisons: one job, every arm paired with the baseline arm
    every = {n: m for n, (m, _) in arms("all_methods").items()}
    assert {n: n for n in ("baseline", "speculative", "specexec", "autojudge", "prompt_lookup", "hf_generate", "hf_assisted")}.items() <= every.items()
    assert every["lossy_typical"] == "lossy"
    assert {n: k for n, (_, k) in arms("sweep_k").items() if n != "baseline"} == {"k1": 1, "k2": 2, "k4": 4, "k8": 8}
    head = arms("headline_qwen_cpu")
    assert head["hf_assisted_k4"] == ("hf_assisted", 4) and head["sps_k4"] == ("speculative", 4) and head["baseline"][0] == "baseline"
    assert not params("all_methods") and not params("sweep_k") and not params("headline_qwen_cpu")
    # grids of comparisons: each job pairs its own configuration (the [] arm) with a baseline arm
    assert set(params("sweep_specexec")) == {"method.parallel_branches", "method.budget"}
    assert arms("sweep_specexec", ["method.budget=8"])["specexec"] == ("specexec", None)
    assert params("sweep_autojudge_threshold")["method.threshold"].count(",") >= 3
    assert compose_cfg(["experiment=sweep_autojudge_threshold"]).method.name == "autojudge"
    assert set(arms("sweep_autojudge_threshold", ["method.threshold=0.5"])) == {"baseline", "autojudge"}
    # without an experiment a sweep keeps a fresh timestamped dir
    cfg = compose_cfg([], return_hydra_config=True)
    OmegaConf.resolve(cfg)
    assert Path(cfg.hydra.sweep.dir).name[:4].isdigit()


def test_job_dirname_is_safe_and_unique():
    assert job_dirname("") == "default"
    assert job_dirname("method=speculative,method.k=4") == "method=speculative,method.k=4"
    a, b = job_dirname("dataset.path=/a/b"), job_dirname("dataset.path=/a_b")
    assert "/" not in a and a != b
    long1, long2 = job_dirname("x=" + "1" * 300), job_dirname("x=" + "1" * 299 + "2")
    assert len(long1) <= 120 and long1 != long2


@pytest.mark.slow
def test_smoke_sweep_runs_and_resume_redoes_exactly_the_missing_rows(tmp_path):
    args = ["-m", "experiment=smoke", f"paths.output_dir={tmp_path}"]
    run_py(args)
    sweep = tmp_path / "sweeps" / "smoke"
    first = read_rows(sweep)
    assert sorted(first.job_dir.unique()) == ["method=baseline", "method=speculative"]
    assert len(first) == 6 and (first.status == "ok").all() and first.resume_key.is_unique
    # every row says which job wrote it
    assert set(first.job_num) == {0, 1} and (first.sweep_dir == str(sweep)).all()
    assert all("experiment=smoke" in o and "method=" in o for o in first.job_overrides)
    assert (first.output_dir == first.job_dir.map(lambda d: str(sweep / d))).all()

    # delete one whole job's records and one row of the other job
    for f in (sweep / "method=baseline").glob("records.*"):
        f.unlink()
    spec = sweep / "method=speculative" / "records.parquet"
    table = pq.read_table(spec)
    dropped = table["resume_key"][1].as_py()
    pq.write_table(table.filter(pc.not_equal(table["resume_key"], dropped)), spec)
    log = spec.with_name("records.jsonl")  # the append log is the source the Parquet derives from: drop it there too
    log.write_text("".join(ln for ln in log.read_text().splitlines(keepends=True) if dropped not in ln))

    proc = run_py(args)
    again = read_rows(sweep)
    assert len(again) == 6 and again.resume_key.is_unique and (again.status == "ok").all()
    assert set(again.resume_key) == set(first.resume_key)
    kept = first.set_index("resume_key").run_id
    redone = again[again.run_id != again.resume_key.map(kept)]
    # exactly the 3 deleted baseline rows and the 1 deleted speculative row were decoded again
    assert sorted(redone.job_dir) == ["method=baseline"] * 3 + ["method=speculative"]
    assert dropped in set(redone.resume_key)
    assert "resume: 2 of 3 rows already finished" in proc.stdout + proc.stderr
    # per-job overhead beyond decoding is logged for every job
    assert (proc.stdout + proc.stderr).count("s overhead") == 2


@pytest.mark.slow
def test_kill9_mid_sweep_then_relaunch_completes_without_duplicates(tmp_path):
    args = ["-m", "experiment=smoke", "dataset.max_samples=8", f"paths.output_dir={tmp_path}"]
    sweep = tmp_path / "sweeps" / "smoke"
    second_job = sweep / "method=speculative" / "records.parquet"  # dataset.max_samples is not in job dir names
    # kill inside the second job, after its first row
    rc = kill9_when(args, second_job.exists, "the second job")
    assert rc == -signal.SIGKILL
    killed = read_rows(sweep)  # every Parquet readable right after the kill
    assert 9 <= len(killed) < 16 and killed.resume_key.is_unique

    run_py(args)
    files = sorted(sweep.rglob("*.parquet"))
    for f in files:
        pq.read_table(f)
    final = read_rows(sweep)
    assert len(final) == 16 and final.resume_key.is_unique and (final.status == "ok").all()
    # rows finished before the kill were kept, not decoded again
    before = killed.set_index("resume_key").run_id
    assert (final[final.resume_key.isin(before.index)].run_id == final.resume_key.map(before).dropna()).all()


@pytest.mark.slow
def test_raising_max_samples_extends_each_job_instead_of_starting_over(tmp_path):
    """A study grown in chunks (8 prompts, then 16) resumes every job's dir: only new prompts run."""
    args = ["-m", "experiment=smoke", f"paths.output_dir={tmp_path}"]
    sweep = tmp_path / "sweeps" / "smoke"
    run_py([*args, "dataset.max_samples=2"])
    first = read_rows(sweep)
    proc = run_py([*args, "dataset.max_samples=3"])
    final = read_rows(sweep)
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == sorted(set(first.job_dir)) and all("max_samples" not in j for j in jobs)
    assert len(final) == len(first) * 3 // 2 and final.resume_key.is_unique and (final.status == "ok").all()
    kept = first.set_index("resume_key").run_id
    assert (final[final.resume_key.isin(kept.index)].run_id == final.resume_key.map(kept).dropna()).all()
    assert "resume: 2 of 3 rows already finished" in proc.stdout + proc.stderr
