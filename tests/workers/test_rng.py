"""Counter-based per-row randomness and inverse-CDF sampling."""
import torch

from workers.decoding.rng import philox, row_key, uniforms
from workers.decoding.sampling import choose_tokens, filter_probs, sample_from


def test_philox_known_answers():
    """Random123's known-answer vectors for Philox4x32-10."""
    def words(*xs):
        return tuple(torch.tensor([x]) for x in xs)
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((2 ** 32 - 1,) * 4, (2 ** 32 - 1,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in cases:
        assert tuple(int(x) for x in philox(words(*ctr), words(*key))) == want


def test_uniforms_are_per_row_pure_and_uniform():
    keys = torch.tensor([row_key(0, "a", 0), row_key(0, "b", 0), row_key(0, "a", 1)])
    u = uniforms(keys, torch.tensor([3, 3, 3]), 0, 8)
    alone = uniforms(keys[1:2], torch.tensor([3]), 0, 8)
    assert torch.equal(u[1:2], alone)  # a row's numbers do not depend on its batch
    assert not torch.equal(u[0], u[1]) and not torch.equal(u[0], u[2])
    assert not torch.equal(u, uniforms(keys, torch.tensor([4, 4, 4]), 0, 8))  # the counter moves the stream
    many = uniforms(torch.tensor([row_key(1, 7, 0)]), torch.tensor([0]), 5, 20000)[0]
    assert many.min() >= 0 and many.max() < 1 and abs(many.mean().item() - 0.5) < 0.01
    assert uniforms(keys, torch.tensor([0, 0, 0]), 0, 4, torch.float32).max() < 1
    assert row_key(0, 1, 0) != row_key(0, "1", 0)


def test_sample_from_never_returns_zero_mass():
    dist = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]]).repeat(5, 1)
    u = torch.tensor([0.0, 0.25, 0.5, 0.999999, 1.0 - 2 ** -24])
    assert sample_from(dist, u).tolist() == [1, 1, 3, 3, 3]


def test_per_row_top_k_top_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 3)
    out = filter_probs(probs, torch.tensor([1, 0, 3]), torch.tensor([1.0, 0.7, 1.0]))
    assert (out[0] > 0).tolist() == [True, False, False, False]
    assert (out[1] > 0).tolist() == [True, True, False, False]
    assert (out[2] > 0).tolist() == [True, True, True, False]
    assert torch.allclose(out.sum(-1), torch.ones(3))


def test_never_chosen_tokens():
    logits = torch.tensor([[0.0, 1.0, 9.0, 0.5]] * 4)
    tokens, conf, _ = choose_tokens(logits, None, 0, 1.0, None, sample=False, never=(2,))
    assert tokens.tolist() == [1] * 4
    u = torch.linspace(0, 0.999, 4)
    tokens, _, dist = choose_tokens(logits, torch.ones(4), 0, 1.0, u, never=(2,))
    assert 2 not in tokens.tolist() and dist[:, 2].max() == 0
