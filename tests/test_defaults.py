"""One source of truth for every default: the dataclasses (``GenerationConfig``, each decoder's
``Params``); ``conf/`` names them through Hydra's ConfigStore and never repeats a value."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import yaml
from hydra.utils import get_class

from conftest import CONF, compose_cfg
from spsamp.config import GenerationConfig, validate
from spsamp.decoders import method_schemas

METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))


def _body(name: str) -> dict:
    return yaml.safe_load((CONF / "method" / f"{name}.yaml").read_text())


def _preset_base(name: str) -> str | None:
    """A preset (e.g. autojudge_humaneval) is a method's own config with some knobs set for one
    setting: ``defaults: [<method>, _self_]``; it has no schema of its own."""
    first = _body(name)["defaults"][0]
    return first if first in METHODS and first != name else None


PRESETS = {m: _preset_base(m) for m in METHODS if _preset_base(m)}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_sets_only_its_methods_keys_and_only_to_non_default_values(name):
    base, body = PRESETS[name], _body(name)
    assert body["defaults"] == [base, "_self_"] and base not in PRESETS
    schema = method_schemas()[base]
    own = set(body) - {"defaults"}
    assert own <= set(schema) - {"name", "_target_"}, f"unknown or fixed keys: {own - set(schema)}"
    assert all(body[k] != schema[k] for k in own), f"conf/method/{name}.yaml repeats defaults"
    composed = compose_cfg([f"method={name}"]).method
    assert all(composed[k] == body[k] for k in own) and composed.name == base


@pytest.mark.parametrize("name", sorted(set(METHODS) - set(PRESETS)))
def test_method_yaml_names_its_class_and_repeats_no_default(name):
    body = _body(name)
    assert body["defaults"] == [f"/spsamp_schema/method/{name}@_here_", "_self_"]
    own = set(body) - {"defaults", "_target_"}
    # only a value that depends on other groups (an interpolation) may live in the YAML
    assert all("${" in str(body[k]) for k in own), f"conf/method/{name}.yaml repeats defaults: {own}"
    cls = get_class(body["_target_"])
    assert cls.Params().name == name
    composed = compose_cfg([f"method={name}"]).method
    for key, value in method_schemas()[name].items():
        if key not in own:
            assert composed[key] == value, f"method.{key}"


def test_every_decoder_module_has_a_config_file():
    assert set(method_schemas()) == set(METHODS) - set(PRESETS)


def test_generation_defaults_come_from_the_dataclass():
    cfg = compose_cfg()
    assert "generation" not in yaml.safe_load((CONF / "config.yaml").read_text())
    assert dict(cfg.generation) == asdict(GenerationConfig())
    run, _ = validate(compose_cfg(["generation.temperature=0.7", "generation.top_k=5"]))
    assert run.generation.temperature == 0.7 and run.generation.top_k == 5 and run.generation.max_new_tokens == 128
