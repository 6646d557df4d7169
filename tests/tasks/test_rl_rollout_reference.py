"""What a Decision Transformer rollout feeds the model, step by step, against an independent
replay of the same environment: the window is the last `context` steps, the return-to-go falls
by each reward received, the timesteps are the episode's, and the reported return is the sum of
the rewards."""

import gymnasium as gym
import numpy as np
import torch

from attnlab.models.decision import DecisionConfig, DecisionTransformer
from attnlab.tasks.rl import rollout


class Recorder(DecisionTransformer):
    """A DecisionTransformer that keeps what each forward was given."""

    def __init__(self, config):
        super().__init__(config)
        self.calls = []

    def forward(self, states, actions, returns_to_go, timesteps, *, mask=None):
        out = super().forward(states, actions, returns_to_go, timesteps, mask=mask)
        self.calls.append((states.clone(), actions.clone(), returns_to_go.clone(),
                           timesteps.clone(), out.clone()))
        return out


def test_rollout_windows_returns_to_go_and_returns_equal_a_replay():
    torch.manual_seed(0)
    model = Recorder(DecisionConfig(d_model=16, n_heads=2, n_layers=1, context=3,
                                    max_ep_len=500, state_dim=4, act_dim=2, discrete=True))
    target, seeds = 37.5, [3, 4]
    returns = rollout(model, "CartPole-v1", target, seeds, sample=False)
    n_steps = len(model.calls)
    assert n_steps > 5
    for row, seed in enumerate(seeds):
        env = gym.make("CartPole-v1")
        obs, _ = env.reset(seed=seed)
        states, rtgs, taken, total, done = [obs], [target], [], 0.0, False
        for t, (s, a, r, ts, out) in enumerate(model.calls):
            lo = max(0, t + 1 - 3)
            assert ts[row].tolist() == list(range(lo, t + 1))
            if done:
                continue
            np.testing.assert_allclose(s[row].numpy(), np.stack(states[lo:t + 1]), rtol=0,
                                       atol=1e-6)
            np.testing.assert_allclose(r[row].numpy(), rtgs[lo:t + 1], rtol=0, atol=1e-4)
            assert a[row, :-1].tolist() == taken[lo:t]  # the actions taken before
            action = int(out[row, -1].argmax())
            taken.append(action)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += reward
            done = terminated or truncated
            states.append(obs)
            rtgs.append(rtgs[-1] - reward)
        env.close()
        assert done or n_steps == 500
        assert returns[row] == total
