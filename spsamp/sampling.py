"""Turning logits into a distribution and drawing from it — one path for every model.

Every decoder (baseline, speculative, specexec, autojudge) and every model (target q, draft p)
goes through :func:`logits_to_probs`, so temperature, top-k and top-p are applied identically to
both sides of every acceptance test. Temperature 0 is not a special code path in the decoders:
``logits_to_probs`` returns the one-hot distribution of the argmax, and :func:`sample` of a
one-hot distribution is the argmax. That is what makes the lossless methods reduce to exact
argmax matching at T=0 (the ratio test min(1, q/p) is 1 on a match and 0 on a miss).

Where random numbers come from (device rule): each row (prompt, turn, repeat) gets its own
``torch.Generator`` seeded from the row (:func:`row_generator`), created **on the target's
device**, and every draw of a decoder is made **on that device** with it: :func:`sample` draws
where the generator lives (moving a draft's probabilities there first when the draft sits
elsewhere), and the acceptance rules draw their uniforms on q's device. Why the target's device:
q, the distribution every kept token follows, is computed there, so a draw needs no copy of a
``[n, V]`` tensor per step (SpecExec samples every tree row), and CUDA refuses a generator of
another device for a draw anyway. Consequences: a row is reproducible on a given device type
(same seed, same draws). Sampled rows written before 2026-12 differ from today's with the same
seed: :func:`sample` then drew by an exponential race (one draw per vocabulary entry), now by
inverse CDF (one uniform per row) — the same distribution. CUDA's Philox stream differs from the
CPU's Mersenne Twister, so sampled (T > 0) rows differ between CPU and GPU while following the
same distribution, and greedy rows (T = 0) never touch the generator.
"""

from __future__ import annotations

import torch


def logits_to_probs(
    logits: torch.Tensor, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Map logits ``[..., V]`` to probabilities ``[..., V]`` (float32 or wider).

    temperature == 0 -> one-hot at the argmax (ties go to the lowest id, as ``torch.argmax``).
    Otherwise softmax(logits / T) restricted to the top-k tokens (k=0: no limit) and to the
    smallest set whose mass reaches top_p (the token that crosses top_p is kept, as in HF).
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # softmax and cumsum in low precision lose the tail mass
    if temperature == 0:
        idx = logits.argmax(dim=-1, keepdim=True)
        return torch.zeros_like(logits).scatter_(-1, idx, 1.0)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, sorted_idx = torch.sort(probs, dim=-1, descending=True)
        # mass strictly before each token; a token is dropped when that mass already reaches top_p
        mass_before = sorted_p.cumsum(dim=-1) - sorted_p
        sorted_p = sorted_p.masked_fill(mass_before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, sorted_idx, sorted_p)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token id per row of ``probs [..., V]`` -> ``[...]`` (long).

    A one-hot row (temperature 0) returns its argmax without touching the RNG, so greedy runs
    do not depend on the seed and do not advance the generator. The draw is made on the
    generator's device (the result lives there).
    """
    if generator is not None and probs.device != generator.device:
        probs = probs.to(generator.device)
    flat = probs.reshape(-1, probs.shape[-1])
    if bool((flat.max(dim=-1).values == 1.0).all()):
        return flat.argmax(dim=-1).reshape(probs.shape[:-1])
    # one uniform per row: on a CPU, one Exp(1) or Gumbel draw per vocabulary entry (multinomial,
    # the exponential race) costs ~4 ms a row at V = 150k, a tenth of a small draft's forward
    u = torch.rand((flat.shape[0], 1), generator=generator, dtype=_accumulator(flat), device=flat.device)
    return inverse_cdf(flat, u).reshape(probs.shape[:-1])


def sample_rows(probs: torch.Tensor, generators: list[torch.Generator]) -> list[int]:
    """Draw one token id from each row of ``probs [B, V]``, row ``i`` with ``generators[i]``: a
    batched decode's rows sample exactly what :func:`sample` draws for each alone (one uniform per
    row, none for a one-hot row), so a row's sample does not depend on its batch-mates."""
    one_hot = (probs.max(dim=-1).values == 1.0).tolist()
    out = probs.argmax(dim=-1)
    drawn = [i for i, hot in enumerate(one_hot) if not hot]
    if drawn:
        rows = probs[drawn]
        u = torch.cat([torch.rand((1, 1), generator=generators[i], dtype=_accumulator(rows), device=rows.device) for i in drawn])
        out[drawn] = inverse_cdf(rows, u).reshape(-1)
    return out.tolist()


def _accumulator(probs: torch.Tensor) -> torch.dtype:
    return torch.float32 if probs.device.type == "mps" else torch.float64  # MPS has no float64


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Row i of ``probs [n, V]`` (weights, not necessarily normalised) at quantile ``u[i] in [0, 1)``
    (``u [n, 1]``): the first id whose cumulative weight exceeds ``u[i]`` times the row's total.
    With u ~ U[0, 1) that is a draw from the row."""
    # float64 so a 150k-token tail keeps its mass: near 1, float32 steps by 6e-8, a few hundred
    # tail tokens' worth; right=True never lands on a zero-weight id (its cumulative weight
    # equals its predecessor's)
    cdf = probs.cumsum(dim=-1, dtype=_accumulator(probs))
    ids = torch.searchsorted(cdf, u.to(cdf.dtype) * cdf[:, -1:], right=True)
    return ids.clamp_(max=probs.shape[-1] - 1)


def row_generator(device: torch.device | str, seed: int) -> torch.Generator:
    """The per-row generator: on the target's device, seeded from the row (see the module docstring)."""
    return torch.Generator(device=device).manual_seed(seed)
