import pytest
import torch

from attnlab.attention import available
from attnlab.errors import AttnlabError, ConfigError
from attnlab.models.decision import DecisionConfig, DecisionTransformer
from attnlab.models.transformer import interleave
from tests.conftest import TINY_OPTIONS

B, K, S = 2, 5, 3


def tiny(**kw) -> DecisionTransformer:
    cfg = dict(d_model=16, n_heads=2, n_layers=2, state_dim=S, act_dim=4, context=K,
               max_ep_len=50, return_scale=10.0)
    cfg.update(kw)
    return DecisionTransformer(DecisionConfig(**cfg)).eval()


def inputs(discrete=True, act_dim=4, k=K):
    g = torch.Generator().manual_seed(1)
    states = torch.randn(B, k, S, generator=g)
    actions = (torch.randint(act_dim, (B, k), generator=g) if discrete
               else torch.rand(B, k, act_dim, generator=g) * 2 - 1)
    rtg = torch.rand(B, k, generator=g) * 10
    timesteps = torch.arange(3, 3 + k).expand(B, -1)
    return states, actions, rtg, timesteps


def test_interleave_orders_tokens_step_by_step():
    r, s, a = (torch.full((1, 3, 1), float(v)) + torch.arange(3.0).view(1, 3, 1) * 10
               for v in (1, 2, 3))
    assert interleave(r, s, a).flatten().tolist() == [1, 2, 3, 11, 12, 13, 21, 22, 23]


def test_tokens_match_a_hand_built_interleaving():
    """Reference: build each token R_t, s_t, a_t by hand in a loop and run the same stack."""
    model = tiny()
    states, actions, rtg, timesteps = inputs()
    tokens = []
    for t in range(K):
        time = model.embed_timestep(timesteps[:, t])
        s = (states[:, t] - model.state_mean) / model.state_std
        tokens += [model.embed_return(rtg[:, t:t + 1] / 10.0) + time,
                   model.embed_state(s) + time, model.embed_action(actions[:, t]) + time]
    x = model.embed_norm(torch.stack(tokens, dim=1))  # (B, 3K, d)
    h = model.stack(x, causal=True)
    want = model.head(h[:, 1::3])  # predictions from the state tokens
    torch.testing.assert_close(model(states, actions, rtg, timesteps), want)


CAUSAL = [name for name, caps in available().items() if caps.causal]


@pytest.mark.parametrize("attention", CAUSAL)
def test_action_at_step_t_ignores_the_future(attention):
    opts = dict(TINY_OPTIONS[attention])
    if attention == "linformer":
        opts["seq_len"] = 3 * K
    model = tiny(attention=attention, attention_options=opts)
    states, actions, rtg, timesteps = inputs()
    base = model(states, actions, rtg, timesteps)
    for t in range(K):
        s2, a2, r2 = states.clone(), actions.clone(), rtg.clone()
        s2[:, t + 1:] += 5.0
        a2[:, t:] = (a2[:, t:] + 1) % 4  # a_t itself is what is predicted at s_t
        r2[:, t + 1:] += 7.0
        moved = model(s2, a2, r2, timesteps)
        torch.testing.assert_close(moved[:, :t + 1], base[:, :t + 1])
        if t + 1 < K:  # and the future does reach later steps: the test can fail
            assert not torch.allclose(moved[:, t + 1:], base[:, t + 1:])


def test_return_conditioning_is_a_config_switch():
    dt, bc = tiny(), tiny(condition_on_return=False)
    states, actions, rtg, timesteps = inputs()
    r2 = rtg.clone()
    r2[:, -1] += 5.0
    out = dt(states, actions, rtg, timesteps)
    assert not torch.allclose(dt(states, actions, r2, timesteps)[:, -1], out[:, -1])
    assert bc.embed_return is None and bc.config.tokens_per_window == 2 * K
    torch.testing.assert_close(bc(states, actions, None, timesteps),
                               bc(states, actions, r2, timesteps))
    assert dt.num_parameters() - bc.num_parameters() == 2 * 16  # Linear(1, d) only


def test_left_padded_window_equals_the_short_window():
    model = tiny()
    states, actions, rtg, timesteps = inputs(k=3)
    short = model(states, actions, rtg, timesteps)
    pad = 2
    padded = (torch.cat([torch.randn(B, pad, S), states], 1),
              torch.cat([torch.zeros(B, pad, dtype=torch.long), actions], 1),
              torch.cat([torch.zeros(B, pad), rtg], 1),
              torch.cat([torch.zeros(B, pad, dtype=torch.long), timesteps], 1))
    mask = torch.arange(3 + pad).expand(B, -1) >= pad
    out = model(*padded, mask=mask)
    torch.testing.assert_close(out[:, pad:], short)
    assert torch.isfinite(out).all()


def test_continuous_actions_and_state_normalization():
    model = tiny(discrete=False, act_dim=2)
    states, actions, rtg, timesteps = inputs(discrete=False, act_dim=2)
    out = model(states, actions, rtg, timesteps)
    assert out.shape == (B, K, 2) and out.abs().max() <= 1
    model.set_state_stats([1.0, 2.0, 3.0], [2.0, 2.0, 0.0])
    assert model.state_std.tolist() == pytest.approx([2.0, 2.0, 1e-6])  # floored, not 0
    model.set_state_stats([1.0, 2.0, 3.0], [2.0, 2.0, 0.5])
    shifted = tiny(discrete=False, act_dim=2)
    shifted.load_state_dict(model.state_dict())
    shifted.set_state_stats([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    norm = (states - torch.tensor([1.0, 2.0, 3.0])) / torch.tensor([2.0, 2.0, 0.5])
    torch.testing.assert_close(model(states, actions, rtg, timesteps),
                               shifted(norm, actions, rtg, timesteps))
    assert "state_mean" in model.state_dict()


def test_bad_inputs_and_configs_are_one_line_errors():
    model = tiny()
    states, actions, rtg, timesteps = inputs()
    with pytest.raises(AttnlabError, match="states must be"):
        model(states[..., :2], actions, rtg, timesteps)
    with pytest.raises(AttnlabError, match="needs returns_to_go"):
        model(states, actions, None, timesteps)
    with pytest.raises(AttnlabError, match="timesteps must lie"):
        model(states, actions, rtg, timesteps + 100)
    with pytest.raises(ConfigError, match="learned positions need max_len >= 60"):
        DecisionConfig(positional="learned", context=20, max_len=32)
    with pytest.raises(ConfigError, match="eval_targets must be comma-separated"):
        DecisionConfig(eval_targets="500,high")
    assert DecisionConfig(eval_targets="500, 250").targets() == [500.0, 250.0]
