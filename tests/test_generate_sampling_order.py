"""Generation behaviours: the order temperature -> top-p, the
earliest of several stop strings, and how much a stream holds back."""

import torch

from attnlab.generate import generate_text, sample_next
from tests.test_generate import CharTokenizer, Counter, Recorder, nucleus, tiny_gpt


def test_top_p_applies_to_the_tempered_distribution():
    """logits -> / temperature -> top-p: the nucleus is that of softmax(logits / T). At T = 2
    the nucleus of p = 0.8 holds three tokens; of the raw logits it would hold two."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    T, p, n = 2.0, 0.8, 40000
    tempered = (logits.double() / T).softmax(-1)
    keep = sorted(nucleus(tempered.tolist(), p))
    assert keep == [0, 1, 2] and sorted(nucleus(logits.softmax(-1).tolist(), p)) == [0, 1]
    expected = torch.zeros(4, dtype=torch.float64)
    expected[keep] = tempered[keep] / tempered[keep].sum()
    draws = sample_next(logits.expand(n, -1), temperature=T, top_p=p,
                        generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).double() / n
    assert freq[3] == 0
    assert torch.allclose(freq, expected, atol=0.01), (freq, expected)


def test_the_earliest_of_several_stop_strings_cuts_the_text():
    """Two stop strings completed by the same token: the text ends before the one that starts
    first, whatever their order in `stop`."""
    model, tok = tiny_gpt(max_len=64), CharTokenizer()
    ref = generate_text(model, tok, "hello", temperature=0, max_new_tokens=40)
    # e: the first end position where neither ref[e-4:e] nor ref[e-2:e] occurs before e
    e = next(e for e in range(6, 40)
             if ref[e - 4:e] not in ref[:e - 1] and ref[e - 2:e] not in ref[:e - 1])
    long_stop, short_stop = ref[e - 4:e], ref[e - 2:e]
    for stops in ((short_stop, long_stop), (long_stop, short_stop)):
        out = generate_text(model, tok, "hello", temperature=0, max_new_tokens=40, stop=stops)
        assert out == ref[:e - 4]


def test_a_stream_holds_back_exactly_the_longest_stop_less_one():
    """With one character per token and a 3-character stop that never occurs, every write
    (but the final flush) leaves exactly 2 characters of the text unwritten."""
    model, tok = tiny_gpt(max_len=64), CharTokenizer()
    ref = generate_text(model, tok, "hello", temperature=0, max_new_tokens=20)
    stop = next(s for s in ("zzz", "qqq", "xxx", "!!!") if s not in ref)
    counter = Counter(model)
    stream = Recorder()
    at_write = []  # (tokens so far, characters written after this write)
    orig = stream.write
    stream.write = lambda s: (orig(s), at_write.append((counter.calls, len(stream.getvalue()))))[0]
    text = generate_text(model, tok, "hello", temperature=0, max_new_tokens=20, stop=[stop],
                         stream=stream)
    assert text == ref and stream.getvalue() == ref
    assert len(at_write) > 5
    for tokens, written in at_write[:-1]:
        assert written == tokens - 2, at_write
