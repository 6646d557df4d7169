"""RNN seq2seq cases: the bidirectional encoder's final
state layout, Bahdanau attention from the top layer of a deep decoder, source padding in
greedy decoding, and rows that keep emitting EOS once done."""

import torch

from tests.models.test_rnn import V, cell_from, tiny


@torch.no_grad()
def lively(model):
    """Weights re-drawn at a scale where greedy decoding does not repeat one token from the
    start (at the default init it does, and a decoding test would then prove nothing)."""
    for name, p in model.named_parameters():
        if p.dim() == 2:
            p.normal_(0.0, 1.0 if "emb" in name else 3.0 * p.shape[1] ** -0.5)
    return model.eval()


def test_bidirectional_final_state_is_forward_then_backward_per_layer():
    model = tiny(attention="luong", bidirectional=True, n_layers=2).eval()
    src = torch.randint(V, (3, 6))
    out, (h, c) = model.encode(src)
    _, (h_n, c_n) = model.encoder(model.src_emb(src))  # (2 L, B, H/2): layer-major
    for layer in range(2):
        torch.testing.assert_close(h[layer], torch.cat([h_n[2 * layer], h_n[2 * layer + 1]], -1))
        torch.testing.assert_close(c[layer], torch.cat([c_n[2 * layer], c_n[2 * layer + 1]], -1))
    # the top layer's forward half ends at the last token, its backward half at the first
    torch.testing.assert_close(h[-1, :, :4], out[:, -1, :4])
    torch.testing.assert_close(h[-1, :, 4:], out[:, 0, 4:])


def test_deep_bahdanau_attends_from_the_top_layers_previous_state():
    model = lively(tiny(attention="bahdanau", n_layers=2))
    src, tgt = torch.randint(V, (2, 5)), torch.randint(V, (2, 3))
    enc = [cell_from(model.encoder, layer) for layer in range(2)]
    dec = [cell_from(model.decoder, layer) for layer in range(2)]
    sc = model.attn.scorer
    hs = [torch.zeros(2, 8) for _ in range(2)]
    cs = [torch.zeros(2, 8) for _ in range(2)]
    states = []
    for t in range(5):
        x = model.src_emb(src[:, t])
        for layer in range(2):
            hs[layer], cs[layer] = enc[layer](x, (hs[layer], cs[layer]))
            x = hs[layer]
        states.append(x)
    Hs = torch.stack(states, 1)
    logits = []
    for t in range(3):
        top = hs[-1]  # s_{t-1} of the top layer
        pair = torch.cat([top[:, None].expand_as(Hs), Hs], -1)
        a = torch.softmax(torch.tanh(pair @ sc.W_a.T) @ sc.v_a, -1)
        ctx = (a[:, :, None] * Hs).sum(1)
        x = torch.cat([model.tgt_emb(tgt[:, t]), ctx], -1)
        for layer in range(2):
            hs[layer], cs[layer] = dec[layer](x, (hs[layer], cs[layer]))
            x = hs[layer]
        logits.append(model.head(torch.tanh(model.combine(torch.cat([ctx, x], -1)))))
    torch.testing.assert_close(model(src, tgt), torch.stack(logits, 1), rtol=1e-5, atol=1e-5)


def test_greedy_decoding_ignores_source_padding():
    for attention in ("luong", "bahdanau"):
        model = lively(tiny(attention=attention))
        junk = torch.tensor([[5, 9, 7]])
        keep = torch.tensor([[True] * 4 + [False] * 3])
        differs = 0
        for seed in range(8):
            short = torch.randint(3, V, (1, 4), generator=torch.Generator().manual_seed(seed))
            padded = torch.cat([short, junk], 1)
            alone = model.greedy(short, 8, bos=1)
            assert torch.equal(model.greedy(padded, 8, bos=1, src_key_padding_mask=keep), alone)
            differs += not torch.equal(model.greedy(padded, 8, bos=1), alone)
        assert differs > 0, attention  # unmasked, the junk would change the output


def test_greedy_rows_keep_emitting_eos_once_done():
    model = lively(tiny(attention="luong"))
    src = torch.randint(3, V, (2, 7), generator=torch.Generator().manual_seed(4))
    ref = model.greedy(src, 10, bos=1)
    # an eos that row 0 emits early and after which its free-running output is not only eos
    row = ref[0].tolist()
    k, eos = next((i, t) for i, t in enumerate(row[:-2])
                  if t not in row[:i] and any(u != t for u in row[i + 1:]))
    out = model.greedy(src, 10, bos=1, eos=eos)
    assert out[0].tolist() == row[:k + 1] + [eos] * (9 - k)
    r1 = ref[1].tolist()
    j = r1.index(eos) if eos in r1 else 10
    assert out[1].tolist()[:j + 1] == r1[:j + 1]
    if j < 10:
        assert out[1].tolist()[j:] == [eos] * (10 - j)
