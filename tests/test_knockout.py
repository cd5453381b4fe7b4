"""The first-token knockout (softpick.knockout) against a direct float64 reference: the attention weights
of the chosen heads recomputed with the first key's weight set to 0."""
import numpy as np
import pytest
import torch

from softpick.attention import get_kind
from softpick.knockout import first_token_knockout, knockout_model
from softpick.model import SoftpickConfig, SoftpickForCausalLM


def _model(kind, layers=2, heads=4, kv=2, std=0.3, seed=0):
    torch.manual_seed(seed)
    cfg = SoftpickConfig(vocab_size=40, hidden_size=32, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, intermediate_size=48, initializer_range=std, attention_kind=kind,
                         attention_backend="torch")
    return SoftpickForCausalLM(cfg).double().eval()


def _reference_loss(model, x, heads):
    """Loss with the weight of key 0 zeroed in `heads`, by wrapping the kind's weight function."""
    spec = get_kind(model.config.attention_kind)
    original = spec.weights
    calls = {"n": 0}
    L = model.config.num_hidden_layers

    def zeroed(scores, mask, params):
        w = original(scores, mask, params).clone()
        layer = calls["n"] % L
        calls["n"] += 1
        for l, h in heads:
            if l == layer:
                w[:, h, :, 0] = 0
        return w

    spec.weights = zeroed
    try:
        with torch.no_grad():
            return float(model(x[:, :-1], targets=x[:, 1:], output_attentions=True).loss)
    finally:
        spec.weights = original


@pytest.mark.parametrize("kind", ["softmax", "softpick", "gated", "scaled_softpick", "learned_sink"])
@pytest.mark.parametrize("heads", [[(0, 1)], [(0, 0), (1, 3)], [(1, 0), (1, 1), (1, 2), (1, 3)]])
def test_knockout_matches_zeroed_weights(kind, heads):
    model = _model(kind)
    x = torch.randint(0, 40, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), first_token_knockout(model, heads):
        got = float(model(x[:, :-1], targets=x[:, 1:], output_attentions=True).loss)
    want = _reference_loss(model, x, heads)
    with torch.no_grad():
        base = float(model(x[:, :-1], targets=x[:, 1:], output_attentions=True).loss)
    assert abs(got - base) > 1e-6, "the knockout changed nothing: the test would not see a wrong one"
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_knockout_needs_weights():
    model = _model("softpick")
    x = torch.randint(0, 40, (1, 9))
    with first_token_knockout(model, [(0, 0)]), pytest.raises(RuntimeError, match="output_attentions=True"):
        model(x)


def test_a_first_token_with_zero_value_costs_nothing():
    """A true sink: attention parked on a token whose value is 0 is a no-op, and its knockout costs nothing,
    however much weight the head puts there."""
    model = _model("softmax", std=0.5)
    with torch.no_grad():
        model.model.embed_tokens.weight[0] = 0  # token 0's hidden state is 0, so are its value vectors
    x = torch.randint(1, 40, (2, 13), generator=torch.Generator().manual_seed(2))
    x[:, 0] = 0
    all_heads = [(l, h) for l in range(2) for h in range(4)]
    with torch.no_grad():
        base = float(model(x[:, :-1], targets=x[:, 1:], output_attentions=True).loss)
        with first_token_knockout(model, all_heads[:1]):  # layer 0 only: layer 1's input is then unchanged too
            got = float(model(x[:, :-1], targets=x[:, 1:], output_attentions=True).loss)
    assert got == pytest.approx(base, abs=1e-12)


def test_knockout_model_finds_the_sink_heads_and_controls():
    model = _model("softmax", std=0.3).float()
    tokens = np.random.default_rng(0).integers(1, 40, 2000).astype(np.int64)
    records = knockout_model(model, tokens, {"lengths": [16, None], "num_windows": 8, "batch_size": 4, "eps": 0.0,
                                             "random_draws": 3}, max_len=24, bos_id=0)
    assert [r["length"] for r in records] == [16, 24]
    for r in records:
        first = np.array(r["first_token_weight"])
        assert first.shape == (2, 4)
        # eps 0: every head puts some weight on token 0 (softmax), so all 8 are sink heads, the random pool is all heads
        assert len(r["sink_heads"]) == 8
        assert len(r["random_knockout"]) == 3 and all(len(d["heads"]) == 8 for d in r["random_knockout"])
        assert r["sink_knockout_delta"] == pytest.approx(r["random_knockout_delta"]["mean"], abs=1e-5)
    high = knockout_model(model, tokens, {"lengths": [16], "num_windows": 8, "batch_size": 4, "eps": 0.99,
                                          "random_draws": 1}, max_len=24, bos_id=0)[0]
    assert high["sink_heads"] == [] and "sink_knockout_delta" not in high
