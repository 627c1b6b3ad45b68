"""Models: the :class:`CausalLM` adapter every decoder uses, and loading from config specs."""

from spsamp.models.adapter import CausalLM, Forward, crop_cache, select_cache_positions
from spsamp.models.loading import ModelLoadError, check_same_tokenizer, clear_model_cache, load_model

__all__ = [
    "CausalLM",
    "Forward",
    "ModelLoadError",
    "check_same_tokenizer",
    "clear_model_cache",
    "crop_cache",
    "load_model",
    "select_cache_positions",
]
