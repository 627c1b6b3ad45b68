"""Comparisons: one job decodes every prompt under several *arms*, interleaved, on one machine.

An arm is the job's own config plus the arm's Hydra overrides (``compare.arms.<name>``): a list of
override strings (``[method=speculative, method.k=4]``, natural in YAML) or a mapping
(``{method: speculative, method.k: 4}``, natural on the command line); an empty list is the job's
config itself. Each arm is composed with Hydra's compose API from the job's overrides followed by
the arm's, then validated, so a bad arm fails before any model loads as one :class:`ConfigError`
line naming ``compare.arms.<name>``. An arm that picks a config group (``method=...``) owns it: the
job's overrides of that group and its keys (``method=...``, ``method.k=...``) are not applied to it.

The runner (:mod:`spsamp.runner`) decodes task ``i`` (one prompt, turn, repeat) under every arm
before task ``i + 1``, in :func:`abba_order`, so slow drift of the machine lands on every arm
alike, and speedups are paired per prompt (``spsamp.analysis.paired``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from spsamp.config import ConfigError, RunConfig, project_root, validate

Compose = Callable[[list[str]], DictConfig]  # overrides -> the composed config (no hydra node)


@dataclasses.dataclass
class ArmSpec:
    """One arm of a comparison: its name, composed config and the validated parts of it."""

    name: str
    cfg: DictConfig
    run: RunConfig
    params: Any


def _value(v: Any) -> str:
    """A config value as Hydra's override grammar writes it."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def arm_overrides(name: str, spec: Any) -> list[str]:
    """``compare.arms.<name>`` as a list of override strings."""
    if isinstance(spec, (DictConfig, ListConfig)):
        spec = OmegaConf.to_container(spec, resolve=True)
    if spec is None:
        return []
    if isinstance(spec, dict):
        return [f"{k}={_value(v)}" for k, v in spec.items()]
    if isinstance(spec, (list, tuple)) and all(isinstance(o, str) and "=" in o for o in spec):
        return list(spec)
    raise ConfigError(f"compare.arms.{name}: must be a list of overrides or a mapping, got {spec!r} — e.g. "
                      f"compare.arms.{name}: [method=speculative, method.k=4] (command line: '+compare.arms.{name}={{method:speculative,method.k:4}}')")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merged_overrides(job: Sequence[str], arm: Sequence[str]) -> list[str]:
    """The job's overrides then the arm's, less the job's overrides of groups the arm picks."""
    owned = {_key(o) for o in arm if "." not in _key(o) and "/" not in _key(o)}
    owned = {g for g in owned if not g.startswith("compare")}
    kept = [o for o in job if not any(_key(o) == g or _key(o).startswith(g + ".") for g in owned)]
    return kept + list(arm)


def hydra_compose(config_name: str = "config") -> Compose:
    """Compose with the running Hydra's search path (inside ``@hydra.main`` and its launchers'
    workers), else with this checkout's ``conf/`` (tests, notebooks)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def run(overrides: list[str]) -> DictConfig:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name=config_name, overrides=overrides)
        with initialize_config_dir(config_dir=f"{project_root()}/conf", version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)

    return run


def arm_names(cfg: DictConfig) -> list[str]:
    """The arms this job runs, in the order given (after ``compare.only``); [] for a plain job."""
    node = cfg.get("compare")
    if node is None or not node.get("arms"):
        return []
    names = [str(n) for n in node.arms.keys()]
    only = node.get("only")
    if only is not None:
        unknown = [str(n) for n in only if str(n) not in names]
        if unknown:
            raise ConfigError(f"compare.only: no arm named {unknown} — pick from {names}")
        names = [n for n in names if n in {str(x) for x in only}]
        if not names:
            raise ConfigError("compare.only: selects no arm — name at least one of compare.arms")
    return names


def reference_arm(cfg: DictConfig, names: Sequence[str]) -> str:
    ref = cfg.compare.get("reference")
    if ref is None:
        return names[0]
    if str(ref) not in names:
        raise ConfigError(f"compare.reference: {ref!r} is not among the arms run {list(names)} — name one of them "
                          "(compare.only must keep it)")
    return str(ref)


# what every arm must share: arms are paired prompt by prompt, repeat by repeat
# (and the batch size: the runner hands every arm the same batches, decoded in ABBA order batch by batch)
_SHARED = (("dataset", lambda r: r.dataset), ("generation.repeats", lambda r: r.generation.repeats),
           ("generation.batch_size", lambda r: r.generation.batch_size))


def compose_arms(cfg: DictConfig, job_overrides: Sequence[str], compose: Optional[Compose] = None) -> list[ArmSpec]:
    """Every arm of the job's comparison, composed and validated (see module doc); [] for a plain job.

    Raises :class:`ConfigError` naming ``compare.arms.<name>`` for an arm that does not compose or
    validate, or that changes what the arms must share (the dataset, the repeats)."""
    names = arm_names(cfg)
    if not names:
        return []
    reference_arm(cfg, names)
    compose = compose or hydra_compose()
    job_run, _ = validate(cfg)
    arms = []
    for name in names:
        own = arm_overrides(name, cfg.compare.arms[name])
        if not own:
            arm_cfg = cfg
        else:
            try:
                arm_cfg = compose(merged_overrides(job_overrides, own))
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - Hydra's composition errors: one line naming the arm
                lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith(("See ", "Set the "))]
                why = " ".join(lines)[:300] if lines else type(exc).__name__
                raise ConfigError(f"compare.arms.{name}: {why} — fix the arm's overrides {own}") from None
        try:
            run, params = validate(arm_cfg)
        except ConfigError as exc:
            raise ConfigError(f"compare.arms.{name}: {exc}") from None
        for field, get in _SHARED:
            if get(run) != get(job_run):
                raise ConfigError(f"compare.arms.{name}: changes {field} — arms are paired prompt by prompt; "
                                  f"set {field} for the whole job, not per arm")
        arms.append(ArmSpec(name, arm_cfg, run, params))
    return arms


def abba_order(arms: Sequence[Any], index: int) -> list[Any]:
    """The arms in the order task ``index`` runs them: as given on even tasks, reversed on odd ones
    (A B, B A, A B, ...), so neither position's warm caches or drift favour one arm."""
    return list(arms) if index % 2 == 0 else list(reversed(arms))
