"""The LSTM encoder-decoder against hand-run LSTM cells and hand-computed attention steps."""

import pytest
import torch
from torch import nn

from attnlab.errors import AttnlabError, ConfigError
from attnlab.models.rnn import RNNSeq2Seq, RNNSeq2SeqConfig

V = 11


def tiny(**kw):
    torch.manual_seed(0)
    return RNNSeq2Seq(RNNSeq2SeqConfig(vocab_size=V, d_embed=5, hidden=8, **kw))


def cell_from(lstm: nn.LSTM, layer: int = 0, suffix: str = "") -> nn.LSTMCell:
    cell = nn.LSTMCell(lstm.input_size if layer == 0 else lstm.hidden_size, lstm.hidden_size)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(cell, name).data.copy_(getattr(lstm, f"{name}_l{layer}{suffix}"))
    return cell


def test_no_attention_equals_a_hand_run_lstm_cell_loop():
    model = tiny(attention="none").eval()
    src, tgt = torch.randint(V, (2, 6)), torch.randint(V, (2, 4))
    enc, dec = cell_from(model.encoder), cell_from(model.decoder)
    h = c = torch.zeros(2, 8)
    for t in range(6):
        h, c = enc(model.src_emb(src[:, t]), (h, c))
    logits = []
    for t in range(4):
        h, c = dec(model.tgt_emb(tgt[:, t]), (h, c))
        logits.append(model.head(h))
    torch.testing.assert_close(model(src, tgt), torch.stack(logits, 1), rtol=1e-5, atol=1e-6)


def luong_step_by_hand(model, src, tgt, score):
    """Luong global attention with input feeding, one step at a time."""
    enc, dec = cell_from(model.encoder), cell_from(model.decoder)
    h = c = torch.zeros(src.shape[0], 8)
    states = []
    for t in range(src.shape[1]):
        h, c = enc(model.src_emb(src[:, t]), (h, c))
        states.append(h)
    Hs = torch.stack(states, 1)  # (B, S, H)
    fed = torch.zeros_like(h)
    logits, weights = [], []
    for t in range(tgt.shape[1]):
        h, c = dec(torch.cat([model.tgt_emb(tgt[:, t]), fed], -1), (h, c))
        s = score(h, Hs)  # (B, S)
        a = torch.softmax(s, -1)
        ctx = (a[:, :, None] * Hs).sum(1)
        fed = torch.tanh(model.combine(torch.cat([ctx, h], -1)))  # h~_t = tanh(W_c [c_t; h_t])
        logits.append(model.head(fed))
        weights.append(a)
    return torch.stack(logits, 1), torch.stack(weights, 1)


@pytest.mark.parametrize("score", ["dot", "general", "concat"])
def test_luong_global_with_input_feeding_by_hand(score):
    model = tiny(attention="luong", score=score).eval()
    src, tgt = torch.randint(V, (2, 5)), torch.randint(V, (2, 4))
    sc = model.attn.scorer

    def by_hand(h, Hs):
        if score == "dot":
            return (Hs @ h[:, :, None])[..., 0]
        if score == "general":
            return (Hs @ (h @ sc.W_a)[:, :, None])[..., 0]
        pair = torch.cat([h[:, None].expand_as(Hs), Hs], -1)  # [h_t; h_s]
        return torch.tanh(pair @ sc.W_a.T) @ sc.v_a

    ref_logits, ref_w = luong_step_by_hand(model, src, tgt, by_hand)
    logits, w = model(src, tgt, need_weights=True)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4))


def test_bahdanau_attends_from_the_previous_state_and_feeds_the_context():
    model = tiny(attention="bahdanau").eval()
    assert model.attn.scorer.score == "concat"
    src, tgt = torch.randint(V, (1, 5)), torch.randint(V, (1, 3))
    enc, dec = cell_from(model.encoder), cell_from(model.decoder)
    sc = model.attn.scorer
    h = c = torch.zeros(1, 8)
    states = []
    for t in range(5):
        h, c = enc(model.src_emb(src[:, t]), (h, c))
        states.append(h)
    Hs = torch.stack(states, 1)
    logits = []
    for t in range(3):
        pair = torch.cat([h[:, None].expand_as(Hs), Hs], -1)  # s_{t-1} against every h_j
        a = torch.softmax(torch.tanh(pair @ sc.W_a.T) @ sc.v_a, -1)
        ctx = (a[:, :, None] * Hs).sum(1)
        h, c = dec(torch.cat([model.tgt_emb(tgt[:, t]), ctx], -1), (h, c))
        logits.append(model.head(torch.tanh(model.combine(torch.cat([ctx, h], -1)))))
    torch.testing.assert_close(model(src, tgt), torch.stack(logits, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention", ["luong", "luong-local"])
def test_without_input_feeding_the_whole_target_path_equals_the_step_path(attention):
    model = tiny(attention=attention, input_feeding=False, local_mode="m", window=1).eval()
    src, tgt = torch.randint(V, (2, 6)), torch.randint(V, (2, 5))
    memory, state = model.encode(src)
    carry, outs = model._start(memory, state), []
    for t in range(5):
        o, carry, _ = model.step(tgt[:, t], carry, memory, None, t)
        outs.append(model.head(o))
    torch.testing.assert_close(model(src, tgt), torch.stack(outs, 1), rtol=1e-5, atol=1e-6)


def test_local_m_covering_the_source_equals_global_in_the_model():
    glob = tiny(attention="luong", score="general")
    local = RNNSeq2Seq(RNNSeq2SeqConfig(vocab_size=V, d_embed=5, hidden=8,
                                        attention="luong-local", local_mode="m", window=6,
                                        score="general"))
    local.load_state_dict(glob.state_dict())
    src, tgt = torch.randint(V, (2, 6)), torch.randint(V, (2, 5))
    torch.testing.assert_close(local(src, tgt), glob(src, tgt))


@pytest.mark.parametrize("attention, extra", [
    ("none", {}), ("bahdanau", {}), ("luong", {}), ("luong-local", {"local_mode": "p"}),
    ("luong-local", {"local_mode": "m"}), ("luong", {"bidirectional": True, "n_layers": 2})])
def test_greedy_decoding_is_the_argmax_of_teacher_forcing_on_its_own_output(attention, extra):
    model = tiny(attention=attention, **extra).eval()
    src = torch.randint(3, V, (3, 7))
    ids = model.greedy(src, 6, bos=1)
    tgt_in = torch.cat([torch.ones(3, 1, dtype=torch.long), ids[:, :-1]], 1)
    assert torch.equal(model(src, tgt_in).argmax(-1), ids)


def test_padding_on_the_right_changes_nothing_bidirectional():
    model = tiny(attention="luong", bidirectional=True, n_layers=2).eval()
    short, tgt = torch.randint(3, V, (1, 4)), torch.randint(3, V, (1, 5))
    alone = model(short, tgt)
    padded = torch.cat([short, torch.randint(3, V, (1, 3))], 1)  # junk after the real tokens
    keep = torch.tensor([[True] * 4 + [False] * 3])
    torch.testing.assert_close(model(padded, tgt, src_key_padding_mask=keep), alone,
                               rtol=1e-5, atol=1e-6)
    assert not torch.allclose(model(padded, tgt), alone, atol=1e-4)


def test_greedy_stops_rows_at_eos():
    model = tiny(attention="luong").eval()
    with torch.no_grad():
        model.head.bias.fill_(-100)
        model.head.bias[2] = 100  # always EOS
    ids = model.greedy(torch.randint(3, V, (2, 4)), 5, bos=1, eos=2)
    assert ids.tolist() == [[2] * 5, [2] * 5]


@pytest.mark.parametrize("kwargs, message", [
    (dict(attention="luon"), "did you mean 'luong'"),
    (dict(bidirectional=True, hidden=7), "even hidden"),
    (dict(attention="none", score="dot"), "attention is 'none'"),
    (dict(hidden=0), "hidden must be"),
    (dict(attention="luong-local", local_mode="q"), "unknown attention 'luong-local' mode"),
])
def test_bad_configs_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        RNNSeq2Seq(RNNSeq2SeqConfig(**kwargs))
    assert "\n" not in str(info.value)


def test_bad_token_ids_are_attnlab_errors():
    model = tiny(attention="none")
    with pytest.raises(AttnlabError, match=r"must lie in \[0, 11\)"):
        model(torch.tensor([[1, 11]]), torch.tensor([[1]]))
    with pytest.raises(AttnlabError, match="at least one real token"):
        model(torch.tensor([[3, 4]]), torch.tensor([[1]]),
              src_key_padding_mask=torch.tensor([[False, False]]))
