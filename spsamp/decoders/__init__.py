"""Decoders, one module per ``method=`` option (``conf/method/<name>.yaml`` names the class).

Each decoder's ``Params`` dataclass is the single source of its keys and defaults: the YAML only
names the class and pulls the defaults in from the node :func:`method_schemas` registers.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import MISSING, fields
from typing import Any

from spsamp.decoders.base import DecodeOutput, DecodeStats, Decoder

__all__ = ["DecodeOutput", "DecodeStats", "Decoder", "SCHEMA_GROUP", "method_schemas", "register_schemas"]

SCHEMA_GROUP = "spsamp_schema"  # conf/config.yaml and conf/method/*.yaml pull their defaults from here


def _defaults(params: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(params):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = "???"
    return out


def method_schemas() -> dict[str, dict[str, Any]]:
    """``{method name: its Params defaults}`` for every decoder module in this package."""
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    schemas: dict[str, dict[str, Any]] = {}
    todo = list(Decoder.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        params = cls.__dict__.get("Params")
        if params is None or not cls.__module__.startswith(__name__ + "."):
            continue
        defaults = _defaults(params)
        if defaults.get("name", "???") != "???":
            schemas[defaults["name"]] = defaults
    return schemas


def register_schemas() -> None:
    """Store every default's single source in Hydra's ConfigStore: ``spsamp_schema/generation``
    (:class:`spsamp.config.GenerationConfig`) and ``spsamp_schema/method/<name>`` (each decoder's
    ``Params``). Plain nodes, not typed ones: types and ranges are checked by
    :func:`spsamp.config.validate`, which reports one line per problem. Called when Hydra scans
    ``hydra_plugins`` (before any composition) and by ``run.py``; storing twice is harmless."""
    from dataclasses import asdict

    from hydra.core.config_store import ConfigStore

    from spsamp.config import GenerationConfig

    cs = ConfigStore.instance()
    cs.store(group=SCHEMA_GROUP, name="generation", node=asdict(GenerationConfig()))
    for name, defaults in method_schemas().items():
        cs.store(group=f"{SCHEMA_GROUP}/method", name=name, node=defaults)
