"""The offline-RL action loss averages over real steps only: the left padding of windows that
start before their episode does (it repeats a real row) must not count."""

import torch
import torch.nn.functional as F

from attnlab.models.decision import DecisionConfig, DecisionTransformer
from attnlab.tasks.rl import OfflineRL
from tests.tasks.test_rl import setup  # noqa: F401 (the fixture)


def test_loss_is_the_mean_cross_entropy_of_the_real_steps(setup):  # noqa: F811
    _, _, data = setup
    torch.manual_seed(0)
    model = DecisionTransformer(DecisionConfig(d_model=16, n_heads=2, n_layers=1, context=6,
                                               max_ep_len=500))
    task = OfflineRL(model, data, val_fraction=0.2)
    longest = int(data.arrays["episode_lengths"].argmax())
    assert data.arrays["episode_lengths"][longest] > 10
    start = int(data.arrays["episode_starts"][longest])
    batch = task.windows(torch.tensor([start, start + 2, start + 9]))  # 1, 3 and 6 real steps
    states, actions, rtg, steps, mask = batch
    assert mask.sum(1).tolist() == [1, 3, 6]
    logits = model(states, actions, rtg, steps, mask=mask).float()
    per_step = [F.cross_entropy(logits[b, i], actions[b, i]) for b in range(3) for i in range(6)
                if mask[b, i]]
    torch.testing.assert_close(task.loss(model, batch), torch.stack(per_step).mean())
