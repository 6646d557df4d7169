import torch
from torch import nn

from attnlab.attention import build


def test_forward_selects_the_argmax_key():
    q, k, v = torch.randn(3, 2, 2, 7, 8).unbind(0)
    out, w = build("hard")(q, k, v, need_weights=True)
    best = (q @ k.transpose(-1, -2)).argmax(-1)  # (B, H, T)
    assert torch.equal(w, nn.functional.one_hot(best, 7).float())
    assert torch.allclose(out, torch.gather(v, 2, best[..., None].expand(-1, -1, -1, 8)))


def test_top_k_weights_are_k_hot_and_average_the_values():
    q, k, v = torch.randn(3, 1, 2, 6, 4).unbind(0)
    out, w = build("hard", k=3)(q, k, v, need_weights=True)
    top = (q @ k.transpose(-1, -2)).topk(3, -1).indices
    expected = torch.zeros_like(w).scatter_(-1, top, 1.0 / 3)
    assert torch.allclose(w, expected)
    assert torch.allclose(out, expected @ v, atol=1e-6)


def test_top_k_with_fewer_allowed_keys_takes_only_those():
    q, k, v = torch.randn(3, 1, 1, 5, 4).unbind(0)
    _, w = build("hard", k=3)(q, k, v, causal=True, need_weights=True)
    # query 0 sees one key, query 1 two keys, then three
    assert torch.allclose(w[0, 0, 0], torch.tensor([1.0, 0, 0, 0, 0]))
    assert torch.allclose(w[0, 0, 1], torch.tensor([0.5, 0.5, 0, 0, 0]))
    assert torch.allclose(w[0, 0, 4].sum(), torch.tensor(1.0))
    assert int((w[0, 0, 4] > 0).sum()) == 3


def test_straight_through_gradient_is_the_softmax_gradient():
    torch.manual_seed(1)
    q, k, v = (t.requires_grad_() for t in torch.randn(3, 1, 2, 6, 4, dtype=torch.float64))
    g = torch.randn(1, 2, 6, 4, dtype=torch.float64)
    out, _ = build("hard", tau=0.7)(q, k, v, causal=True)
    grads = torch.autograd.grad((out * g).sum(), (q, k))
    # Surrogate: softmax(scores / tau) weights applied to v; its gradient wrt scores is used.
    q2, k2 = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
    scores = (q2 @ k2.transpose(-1, -2)) / 2.0
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    soft = (scores / 0.7).masked_fill(~causal, float("-inf")).softmax(-1)
    ref = torch.autograd.grad(((soft @ v.detach()) * g).sum(), (q2, k2))
    for a, b in zip(grads, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def test_gumbel_samples_while_training_and_is_deterministic_in_eval():
    attn = build("hard", gumbel=True)
    q, k, v = torch.randn(3, 1, 1, 1, 4).unbind(0)
    k, v = torch.randn(2, 1, 1, 6, 4).unbind(0)
    k = k * 0.1  # near-equal scores: sampling spreads over keys
    attn.train()
    picks = {int(attn(q, k, v, need_weights=True)[1].argmax()) for _ in range(60)}
    assert len(picks) > 2
    attn.eval()
    picks = {int(attn(q, k, v, need_weights=True)[1].argmax()) for _ in range(10)}
    assert picks == {int((q @ k.transpose(-1, -2)).argmax())}


def test_tiny_model_learns_to_copy_with_hard_attention():
    """Copy task: output at position i is the token at position i - shift. Hard attention can
    solve it exactly by attending to one key; the loss must fall well below chance."""
    from attnlab.models import GPT, GPTConfig

    torch.manual_seed(0)
    V, T = 8, 12
    model = GPT(GPTConfig(vocab_size=V, d_model=32, n_heads=2, n_layers=2, max_len=T,
                          attention="hard"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        half = torch.randint(V, (32, T // 2))
        x = torch.cat([half, half], dim=1)  # second half repeats the first
        logits = model(x[:, :-1])
        tgt = x[:, 1:].clone()
        tgt[:, : T // 2 - 1] = -100  # only the repeated half is predictable
        loss = nn.functional.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1),
                                           ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    chance = torch.log(torch.tensor(float(V))).item()
    assert sum(losses[:10]) / 10 > 0.9 * chance
    assert sum(losses[-10:]) / 10 < 0.5 * chance, losses[-10:]
