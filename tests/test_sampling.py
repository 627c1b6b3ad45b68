import torch

from spsamp.sampling import logits_to_probs, sample


def test_temperature_zero_is_one_hot_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.9], [3.0, 0.0, 0.0, 0.0]])
    probs = logits_to_probs(logits, temperature=0.0)
    assert torch.equal(probs, torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
    g = torch.Generator().manual_seed(0)
    state = g.get_state().clone()
    assert sample(probs, g).tolist() == [1, 0]
    assert torch.equal(g.get_state(), state)  # greedy draws no randomness


def test_top_k_and_top_p_mask_and_renormalise():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    p = logits_to_probs(logits, temperature=1.0, top_k=2)
    assert torch.allclose(p, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    p = logits_to_probs(logits, temperature=1.0, top_p=0.7)  # 0.5 < 0.7, 0.5+0.3 crosses: keep two
    assert torch.allclose(p, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    p = logits_to_probs(logits, temperature=1.0, top_p=0.5)  # the first token alone reaches 0.5
    assert torch.allclose(p, torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_temperature_scales_logits():
    logits = torch.tensor([1.0, 0.0])
    p = logits_to_probs(logits, temperature=0.5)
    assert torch.allclose(p, torch.softmax(torch.tensor([2.0, 0.0]), -1))


def test_sample_follows_the_distribution():
    probs = torch.tensor([0.1, 0.6, 0.3])
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([sample(probs, g) for _ in range(20000)])
    freq = torch.bincount(draws, minlength=3).float() / draws.numel()
    assert torch.allclose(freq, probs, atol=0.015)  # 3+ sigma for n=20000
