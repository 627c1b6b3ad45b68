"""Device correctness without a GPU: every registered decoding method runs with its models on a
simulated cuda device (tests/device_guard.py) and must never mix devices, as on a real GPU."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from conftest import CONF, compose_cfg
from device_guard import DeviceMixError, FakeCuda
from spsamp.config import ConfigError, TinyModelConfig, validate
from spsamp.models.adapter import CausalLM
from spsamp.models.tiny import char_tokenizer, tiny_llama
from spsamp.data.chat import encode, messages_for
from spsamp.sampling import row_generator

METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))  # every registered method, new ones included
# knobs that keep each method's run small but exercise its real paths (a tree, a mined judge)
SMALL = {
    "autojudge": ["method.k=3", "method.mining_prompts=4", "method.mining_target=0", "method.mining_max_tokens=10", "method.threshold=0.5"],
    "specexec": ["method.budget=6", "method.parallel_branches=2", "method.max_depth=3"],
}
# presets built on AutoJudge (e.g. autojudge_humaneval: code mining, batched) get the same small budget
SMALL.update({m: SMALL["autojudge"] for m in METHODS if m.startswith("autojudge_")})
# settings that add a path of their own (a cost probe in prepare, sizes chosen from it): "<method>+<name>"
VARIANTS = {
    "specexec+grow_cost": ["method.grow=cost", "method.budget=8"],
    "speculative+k_auto": ["method.k=auto"],
    # the lookup -> draft cascades: guesses fed in the draft's own passes (a chain's, a tree's)
    "speculative+lookup": ["method.k=4", "method.lookup=4", "method.lookup_min_ngram=1"],
    "speculative+k_auto_lookup": ["method.k=auto", "method.lookup=4", "method.lookup_min_ngram=1"],
    "specexec+lookup": ["method.budget=8", "method.lookup=4", "method.lookup_min_ngram=1"],
}


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    yield


def _run_config(method: str, temperature: float, tmp_path):
    method, _, variant = method.partition("+")
    over = [f"method={method}", "model=tiny_random", f"generation.temperature={temperature}", "generation.max_new_tokens=10",
            f"paths.cache_dir={tmp_path}/cache", *SMALL.get(method, []), *VARIANTS.get(f"{method}+{variant}", [])]
    if method.startswith("autojudge"):
        over.append(f"method.checkpoint={tmp_path}/judge.safetensors")
    cfg = compose_cfg(over)
    run, _ = validate(cfg)
    return cfg, run


def _models(run):
    return (tiny_llama(run.model.target.tiny), tiny_llama(run.model.draft.tiny))


@pytest.mark.parametrize("placement", ["one_gpu", "two_gpus"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
@pytest.mark.parametrize("method", METHODS + sorted(VARIANTS))
def test_method_never_mixes_devices(method, temperature, placement, tmp_path, monkeypatch):
    """The models on a simulated GPU (two_gpus: the draft on a second one, model.draft.device=cuda:1)."""
    from spsamp import cost_model

    # the cost probe (k=auto, grow=cost) waits for CUDA kernels before reading the clock: a
    # simulated GPU has none to wait for (the probe's tensors are still watched)
    monkeypatch.setattr(cost_model, "_sync", lambda device: None)
    try:
        cfg, run = _run_config(method, temperature, tmp_path)
    except ConfigError as exc:
        pytest.skip(f"{method} refuses temperature={temperature}: {exc}")
    decoder = instantiate(cfg.method)
    if placement == "two_gpus" and not decoder.needs_draft:
        pytest.skip(f"{method} has no draft to place elsewhere")
    target_model, draft_model = _models(run)
    tok = char_tokenizer()
    ids = encode(tok, messages_for(None, ("What is 2 + 3?",), []), use_chat_template=False)
    with FakeCuda() as guard:
        guard.tag_module(target_model, 0)
        guard.tag_module(draft_model, 1 if placement == "two_gpus" else 0)
        target = CausalLM(target_model, tok, "target")
        draft = CausalLM(draft_model, tok, "draft") if decoder.needs_draft else None
        assert target.device == torch.device("cuda", 0)
        decoder.prepare(target, draft, run)
        before = guard.ops
        out = decoder.generate(target, draft, ids, run.generation, guard.generator(1234, gpu=0))
        watched = guard.ops - before
    assert len(out.tokens) > 0
    if method.startswith("autojudge"):
        assert out.stats.extra["mismatches_judged"] > 0, "the judge was never asked: its use site went unchecked"
    if method in ("speculative+lookup", "specexec+lookup"):  # (k=auto may choose chains too short to carry a guess)
        assert out.stats.extra.get("lookup_offered", 0) > 0, "no guess was fed: the cascade's path went unchecked"
    assert watched > 50 * len(out.tokens), f"the guard saw only {watched} ops: the decoder ran outside it"


def test_guard_catches_a_deliberate_mix():
    """Negative control: the mistakes a CUDA run punishes are each caught on the CPU."""
    model = tiny_llama(TinyModelConfig())  # hidden size 32
    with FakeCuda() as guard:
        guard.tag_module(model)
        lm = CausalLM(model, char_tokenizer(), "t")
        logits = lm.forward(torch.tensor([5, 6, 7])).logits
        assert guard.is_cuda(logits) and logits.device.type == "cuda"
        with pytest.raises(DeviceMixError, match="mixes tensors on"):
            _ = logits[-1] * torch.ones(logits.shape[-1])  # a cpu-made tensor meets the model's output
        with pytest.raises(DeviceMixError, match="generator"):
            torch.rand(3, generator=guard.generator(0))  # the SpS bug: cpu draw, cuda generator
        with pytest.raises(DeviceMixError, match="numpy"):
            logits.numpy()
        with pytest.raises(DeviceMixError, match="mixes tensors on"):
            torch.nn.functional.linear(torch.ones(2, 32), model.lm_head.weight)  # cpu input, cuda weights
        with pytest.raises(DeviceMixError, match=r"\['cuda:0', 'cuda:1'\]"):
            _ = logits[-1] + logits[-1].to("cuda:1")  # a draft on a second GPU meets the target's output
        with pytest.raises(DeviceMixError, match="generator"):
            torch.rand(3, generator=guard.generator(0, gpu=1), device=logits.device)
        # what device-correct code does passes: create on the device met, or move explicitly
        u = torch.rand(3, generator=guard.generator(0), device=logits.device)
        assert guard.is_cuda(u)
        assert not guard.is_cuda(logits.cpu()) and guard.is_cuda(logits)
        _ = logits[-1] * torch.ones(logits.shape[-1], device=logits.device)
        _ = logits[torch.arange(2), torch.tensor([1, 2])]  # cpu indices into a cuda tensor: CUDA moves them


def test_row_generator_lives_on_the_given_device():
    g = row_generator(torch.device("cpu"), 7)
    assert g.device.type == "cpu" and g.initial_seed() == 7


def gpu_smoke(out, *args: str, **env: str):
    import os
    import subprocess

    from conftest import ROOT

    env = {**os.environ, "OUT": str(out), "MAX_NEW": "4", "SAMPLES": "1", "MINE_PROMPTS": "4", "MINE_TOKENS": "12", **env}
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_smoke.sh"), "--device", "cpu", *args], env=env,
                          capture_output=True, text=True, timeout=1200)


def test_gpu_smoke_plans_every_method_preset(tmp_path, monkeypatch):
    """scripts/gpu_smoke.sh --plan: the runs a GPU machine would make cover every method preset in
    conf/method, each at the temperatures its decoder accepts (greedy-only decoders greedy), every
    batchable one again at batch size 2, lossy ones marked so (not held to baseline's tokens), and
    a judge's decoder with a small mining of its own."""
    from conftest import ROOT

    monkeypatch.delenv("METHODS", raising=False)
    presets = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))
    out = tmp_path / "smoke"
    proc = gpu_smoke(out, "--plan")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = (out / "plan.tsv").read_text().splitlines()
    plan = {line.split("\t")[0]: line.split("\t")[1:] for line in lines}
    assert proc.stdout.splitlines()[-len(lines):] == lines and not list(out.glob("*/"))  # printed, and nothing ran
    batched = sorted(name for name in plan if name.endswith("@batch2"))
    assert sorted(set(plan) - set(batched)) == presets
    # the batchable decoders run batched too, greedy, and are held to baseline's tokens like the rest
    assert {"baseline@batch2", "hf_generate@batch2", "speculative@batch2", "prompt_lookup@batch2"} <= set(batched)
    assert "specexec@batch2" not in plan and plan["speculative@batch2"][:3] == ["speculative", "0", "lossless"]
    assert "generation.batch_size=2" in plan["speculative@batch2"]
    for preset in ("autojudge", "autojudge_humaneval", "autojudge_arithmetic"):  # greedy only and lossy, as their decoder says
        assert plan[preset][1:3] == ["0", "lossy"] and f"method.checkpoint={out}/{preset}_judge.safetensors" in plan[preset]
        assert "method.mining_target=0" in plan[preset]  # a small mining even where the preset mines to a count
    for preset in ("speculative", "specexec", "hf_assisted_default"):
        assert plan[preset] == [preset, "0,0.8", "lossless"]
    bad = gpu_smoke(out, "--bogus")
    assert bad.returncode == 2 and "unknown argument --bogus" in bad.stderr


@pytest.mark.slow
def test_gpu_smoke_script_dry_run_on_cpu():
    """scripts/gpu_smoke.sh --device cpu end to end on one of each kind of run (every preset's run is
    planned alike: the test above): baseline, exact SpS greedy, sampled and batched, SpecExec, a
    lossy rule and AutoJudge with its mining; greedy lossless rows must equal baseline's tokens."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/smoke"
        proc = gpu_smoke(out, METHODS="speculative specexec lossy_topk autojudge")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "gpu smoke ok" in proc.stdout and "x_baseline" in proc.stdout
        # baseline (also batched), speculative (also batched), specexec, lossy_topk, autojudge: baseline@batch2,
        # speculative, speculative@batch2 and specexec compared with baseline
        assert "of 5 method presets (2 also batched), 4 greedy rows of 4 lossless runs equal to baseline's" in proc.stdout
