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


@pytest.mark.parametrize("name", METHODS)
def test_method_yaml_names_its_class_and_repeats_no_default(name):
    body = yaml.safe_load((CONF / "method" / f"{name}.yaml").read_text())
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
    assert set(method_schemas()) == set(METHODS)


def test_generation_defaults_come_from_the_dataclass():
    cfg = compose_cfg()
    assert "generation" not in yaml.safe_load((CONF / "config.yaml").read_text())
    assert dict(cfg.generation) == asdict(GenerationConfig())
    run, _ = validate(compose_cfg(["generation.temperature=0.7", "generation.top_k=5"]))
    assert run.generation.temperature == 0.7 and run.generation.top_k == 5 and run.generation.max_new_tokens == 128
