"""Decision Transformer cases: behaviour cloning's token
order (s_t, a_t: the action is predicted from s_t, never from a_t) and the window length check."""

import pytest
import torch

from attnlab.errors import AttnlabError
from tests.models.test_decision import B, K, inputs, tiny


def test_behaviour_cloning_tokens_match_a_hand_built_interleaving():
    model = tiny(condition_on_return=False)
    states, actions, _, timesteps = inputs()
    tokens = []
    for t in range(K):
        time = model.embed_timestep(timesteps[:, t])
        s = (states[:, t] - model.state_mean) / model.state_std
        tokens += [model.embed_state(s) + time, model.embed_action(actions[:, t]) + time]
    h = model.stack(model.embed_norm(torch.stack(tokens, dim=1)), causal=True)  # (B, 2K, d)
    want = model.head(h[:, 0::2])  # predictions from the state tokens
    torch.testing.assert_close(model(states, actions, None, timesteps), want)


def test_behaviour_cloning_action_at_step_t_ignores_a_t_and_the_future():
    model = tiny(condition_on_return=False)
    states, actions, _, timesteps = inputs()
    base = model(states, actions, None, timesteps)
    for t in range(K):
        s2, a2 = states.clone(), actions.clone()
        s2[:, t + 1:] += 5.0
        a2[:, t:] = (a2[:, t:] + 1) % 4
        moved = model(s2, a2, None, timesteps)
        torch.testing.assert_close(moved[:, :t + 1], base[:, :t + 1])


def test_a_window_longer_than_the_context_is_refused():
    model = tiny()
    states, actions, rtg, timesteps = inputs(k=K + 1)
    with pytest.raises(AttnlabError, match=f"at most context={K} steps, got {K + 1}"):
        model(states, actions, rtg, timesteps)
    assert model(*inputs(k=K)).shape == (B, K, 4)
