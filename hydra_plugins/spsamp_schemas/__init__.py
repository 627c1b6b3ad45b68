"""Registers spsamp's config defaults (the ``GenerationConfig`` and decoder ``Params`` dataclasses)
with Hydra's ConfigStore. Hydra imports every module under ``hydra_plugins`` before it composes a
config — in ``run.py``, in the compose API (tests, notebooks) and in launcher workers — so
``conf/`` can name these nodes without anyone importing spsamp first."""

from spsamp.decoders import register_schemas

register_schemas()
