"""Which quantized engine makes the int8_dynamic Qwen 0.5B draft cheapest on this CPU?

torch packs dynamically quantized Linear weights for the engine set when ``quantize_dynamic`` runs
(``torch.backends.quantized.engine``: x86 = fbgemm/oneDNN mix, the default; fbgemm; onednn, which can
use AMX int8; qnnpack). This quantizes the fp32 copy of the draft once per engine and times, interleaved
(4 rounds, median of 5 timed passes each after a warm-up), a 1-token and a 9-token pass over a
200-token cache, against the bf16 target's 1-token pass on stock kernels (c = draft / target).
Needs the converted Qwen pair (``python -m spsamp.models.fetch qwen25_coder_05b_15b``).

    python scripts/probe_qengine.py [THREADS]     # default 1
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings

import torch
from torch.ao.quantization import quantize_dynamic
from transformers import AutoModelForCausalLM, DynamicCache

from spsamp.models.fetch import converted_path, preset_specs
from spsamp.models.gguf import cache_root

CONTEXT, WIDE, ROUNDS = 200, 9, 4


def pass_ms(model, width: int) -> float:
    ctx = torch.randint(100, 5000, (1, CONTEXT))
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        model(ctx, past_key_values=cache, use_cache=True)
        times = []
        for _ in range(6):
            x = torch.randint(100, 5000, (1, width))
            t = time.perf_counter()
            model(x, past_key_values=cache, use_cache=True)
            times.append(time.perf_counter() - t)
            cache.crop(-width)
    return statistics.median(times[1:]) * 1000


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    default = torch.backends.quantized.engine
    target_spec, draft_spec = preset_specs("qwen25_coder_05b_15b")
    cache = cache_root(None)
    models = {}
    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    for engine in engines:
        torch.backends.quantized.engine = engine
        fp32 = AutoModelForCausalLM.from_pretrained(str(converted_path(draft_spec, cache, torch.float32)), dtype=torch.float32).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notice
            models[engine] = quantize_dynamic(fp32, {torch.nn.Linear}, dtype=torch.qint8)
    models["target_bf16"] = AutoModelForCausalLM.from_pretrained(
        str(converted_path(target_spec, cache, torch.bfloat16)), dtype=torch.bfloat16).eval()
    ms = {name: {1: [], WIDE: []} for name in models}
    for _ in range(ROUNDS):
        for name, model in models.items():
            if name in engines:
                torch.backends.quantized.engine = name
            for width in (1, WIDE):
                ms[name][width].append(pass_ms(model, width))
    target = statistics.median(ms["target_bf16"][1])
    print(f"threads={torch.get_num_threads()} torch={torch.__version__} default engine={default}")
    print(f"| model | 1 token (ms) | {WIDE} tokens (ms) | c (1 token / target) |\n|---|---|---|---|")
    for name, by_width in ms.items():
        one, wide = statistics.median(by_width[1]), statistics.median(by_width[WIDE])
        print(f"| {name} | {one:.1f} | {wide:.1f} | {one / target:.3f} |")


if __name__ == "__main__":
    main()
