"""Head scores on hand-built attention maps, and attention rollout against a hand computation."""

import pytest
import torch

from attnlab.errors import AttnlabError
from attnlab.viz.capture import AttentionRecord
from attnlab.viz.heads import (
    head_scores,
    induction_score,
    induction_targets,
    previous_token_score,
)
from attnlab.viz.rollout import attention_rollout


def _rows(T, targets):
    """(T, T) attention putting all weight on targets[i] (or position 0 when None)."""
    w = torch.zeros(T, T)
    for i, t in enumerate(targets):
        w[i, 0 if t is None else t] = 1.0
    return w


def test_previous_token_head_scores_one_and_uniform_scores_its_mean():
    T = 6
    prev = _rows(T, [0, 0, 1, 2, 3, 4])
    uniform = torch.ones(T, T).tril() / torch.arange(1, T + 1)[:, None]
    w = torch.stack([prev, uniform])[None]  # (1, 2, T, T)
    s = previous_token_score(w)
    assert s[0] == pytest.approx(1.0)
    assert s[1] == pytest.approx(sum(1 / (i + 1) for i in range(1, T)) / (T - 1))


def test_induction_targets_and_score():
    tokens = torch.tensor([[5, 7, 9, 5, 7, 9, 7]])
    # 5 at 3 -> after its earlier 5 (pos 0) comes pos 1; 7 at 4 -> 2; 9 at 5 -> 3; 7 at 6 -> 5
    assert induction_targets(tokens).tolist() == [[-1, -1, -1, 1, 2, 3, 5]]
    induct = _rows(7, [None, None, None, 1, 2, 3, 5])
    prev = _rows(7, [0, 0, 1, 2, 3, 4, 5])
    w = torch.stack([induct, prev])[None]
    s = induction_score(w, tokens)
    assert s[0] == pytest.approx(1.0)
    assert s[1] == pytest.approx(1 / 4)  # only position 6's target (5) is its previous token
    assert previous_token_score(w)[1] == pytest.approx(1.0)


def test_scores_refuse_bad_shapes():
    with pytest.raises(AttnlabError):
        previous_token_score(torch.zeros(1, 1, 3, 4))
    with pytest.raises(AttnlabError):
        induction_score(torch.zeros(1, 1, 3, 3), torch.tensor([[1, 2, 3]]))  # no repeat


def _record(name, w, kind="self"):
    return AttentionRecord(name=name, kind=kind, mechanism="full", weights=w,
                           pattern=torch.ones(1, 1, *w.shape[-2:], dtype=torch.bool), note="")


def test_head_scores_rows():
    tokens = torch.tensor([[1, 2, 3, 1, 2]])  # induction targets: -, -, -, 1, 2
    prev = _rows(5, [0, 0, 1, 2, 3])
    induct = _rows(5, [0, 0, 0, 1, 2])
    rows = head_scores([_record("a", torch.stack([prev, induct])[None])], tokens)
    assert rows == [{"layer": 0, "name": "a", "head": 0, "previous_token": 1.0,
                     "induction": 0.0},
                    {"layer": 0, "name": "a", "head": 1, "previous_token": 0.25,  # 1 -> 0
                     "induction": 1.0}]


def test_rollout_equals_hand_product():
    torch.manual_seed(0)
    a1 = torch.rand(1, 2, 4, 4).softmax(-1)
    a2 = torch.rand(1, 2, 4, 4).softmax(-1)
    eye = torch.eye(4)
    m1 = 0.5 * a1.mean(1) + 0.5 * eye
    m2 = 0.5 * a2.mean(1) + 0.5 * eye
    expected = m2 @ m1  # rows already sum to 1
    recs = [_record("l0", a1), _record("c", a1[..., :3], kind="cross"), _record("l1", a2)]
    got = attention_rollout(recs)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(-1), torch.ones(1, 4))
    # identity attention rolls out to identity; no residual = raw product
    torch.testing.assert_close(attention_rollout([_record("x", eye[None, None])]), eye[None])
    torch.testing.assert_close(attention_rollout(recs, residual=0.0),
                               a2.mean(1) @ a1.mean(1))


def test_rollout_of_a_real_encoder():
    from attnlab.models import Encoder
    from attnlab.models.config import EncoderConfig
    from attnlab.viz.capture import capture_attention

    model = Encoder(EncoderConfig(vocab_size=20, d_model=16, n_heads=2, n_layers=3)).eval()
    with torch.no_grad(), capture_attention(model) as cap:
        model(torch.randint(0, 20, (2, 7)))
    r = attention_rollout(cap.records)
    assert r.shape == (2, 7, 7) and (r >= 0).all()
    torch.testing.assert_close(r.sum(-1), torch.ones(2, 7))
    manual = None
    for rec in cap.records:
        a = 0.5 * rec.weights.mean(1) + 0.5 * torch.eye(7)
        manual = a if manual is None else a @ manual
    torch.testing.assert_close(r, manual)
