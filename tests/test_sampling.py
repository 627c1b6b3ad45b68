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


def test_inverse_cdf_lands_on_the_quantile_and_skips_zero_weights():
    from spsamp.sampling import inverse_cdf

    w = torch.tensor([[0.0, 0.2, 0.0, 0.0, 0.8, 0.0], [0.0, 0.2, 0.0, 0.0, 0.8, 0.0]]) * torch.tensor([[1.0], [3.0]])
    u = torch.tensor([[0.0], [0.2]])  # unnormalised row 1: the quantile is of its own total
    assert inverse_cdf(w, u).tolist() == [[1], [4]]  # 0.2 is id 1's upper edge: the next id
    assert inverse_cdf(w[:1], torch.tensor([[0.999999]])).tolist() == [[4]]  # never the zero-weight tail


def test_inverse_cdf_keeps_a_tail_below_float32_resolution():
    # 10,000 ids of 1e-10 each after 1 - 1e-6: float32 resolves steps of 6e-8 there (600 of these
    # ids), so a float32 running sum could only land within hundreds of ids of the tail's middle
    from spsamp.sampling import inverse_cdf

    v = 10_001
    probs = torch.full((1, v), 1e-6 / (v - 1))
    probs[0, 0] = 1 - 1e-6
    mid = int(inverse_cdf(probs, torch.tensor([[1 - 5e-7]], dtype=torch.float64)))
    assert abs(mid - (1 + (v - 1) // 2)) <= 2


def test_sample_draws_each_row_from_its_own_distribution():
    probs = torch.tensor([[0.1, 0.6, 0.3, 0.0], [0.0, 0.25, 0.25, 0.5]])
    g = torch.Generator().manual_seed(2)
    draws = sample(probs.unsqueeze(0).expand(20000, 2, 4), g)  # [20000, 2]: one draw per row
    assert draws.shape == (20000, 2)
    freq = torch.stack([torch.bincount(draws[:, r], minlength=4).float() / 20000 for r in range(2)])
    assert torch.allclose(freq, probs, atol=0.015)  # 3+ sigma for n=20000
    assert not torch.allclose(freq[0], probs[1], atol=0.015)  # negative control: the rows differ
    assert int(freq[0, 3]) == 0 and int(freq[1, 0]) == 0  # zero-probability ids are never drawn
