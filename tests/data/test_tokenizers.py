from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.data.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    load_tokenizer,
    safe_chunks,
    tokenizer_from_json,
    train_tokenizer,
)
from attnlab.errors import AttnlabError, ConfigError

TRAIN_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n  Indented line with  double  spaces.\n\n\n"
    "Numbers 1234 and punctuation!? -- 'tis done.\n"
) * 20

TRICKY = [
    "",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "\n",
    "\n\n\nthree newlines",
    "tabs\tand\r\nCRLF",
    "emoji 😀👍🏽 and family 👨‍👩‍👧",
    "中文字符 and 日本語 and 한국어",
    "combining e\u0301 and n\u0303",
    "NUL \x00 and controls \x1c\x1f\x7f",
    "max code point \U0010ffff and BOM \ufeff",
    "a\n\n\nb  \nc\n  d",
]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return train_tokenizer("bpe", TRAIN_TEXT, vocab_size=300)


@pytest.fixture(scope="module")
def char() -> CharTokenizer:
    return train_tokenizer("char", TRAIN_TEXT)


@pytest.fixture(params=["char", "bpe"])
def tok(request, bpe, char) -> Tokenizer:
    return {"char": char, "bpe": bpe}[request.param]


# --------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_explicit(tok, text):
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_round_trip_char_any_text(char, text):
    assert char.decode(char.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_round_trip_bpe_any_text(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_interface(tok):
    assert isinstance(tok, Tokenizer)
    assert tok.kind in ("char", "bpe")
    assert tok.encode_batch(["ab", "", " c"]) == [tok.encode("ab"), [], tok.encode(" c")]


def test_bpe_learns_merges_up_to_vocab_size(bpe):
    assert bpe.kind == "bpe" and bpe.vocab_size == 300
    # Merges make frequent words shorter than their bytes.
    assert len(bpe.encode("Speak, speak.")) < len("Speak, speak.")


# --------------------------------------------------------------------------------------------
# Char byte fallback


def test_char_vocabulary_is_sorted_characters_after_256_bytes(char):
    assert char.chars == tuple(sorted(set(TRAIN_TEXT)))
    assert char.vocab_size == 256 + len(set(TRAIN_TEXT))
    assert char.encode("a") == [256 + char.chars.index("a")]


def test_char_byte_fallback_for_unseen_characters(char):
    assert "😀" not in char.chars and "é" not in char.chars
    ids = char.encode("a😀bé")
    a, b = char.encode("a")[0], char.encode("b")[0]
    assert ids == [a, *"😀".encode(), b, *"é".encode()]
    assert char.decode(ids) == "a😀bé"


def test_char_encode_array_matches_encode(char):
    text = "Speak 😀 speak\n" * 3
    assert char.encode_array(text).tolist() == char.encode(text)
    assert CharTokenizer([]).encode("hé") == list("hé".encode())


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_char_hf_form_has_the_same_ids_and_text(char, text):
    hf = char.to_hf()
    assert hf.encode(text).ids == char.encode(text)
    assert hf.decode(char.encode(text)) == text


@pytest.mark.parametrize("text", TRICKY)
def test_char_hf_form_on_tricky_text_through_transformers(char, text):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=char.to_hf())
    assert len(hf) == char.vocab_size
    assert hf.encode(text) == char.encode(text)
    assert hf.decode(char.encode(text)) == text


def test_decode_of_invalid_bytes_does_not_raise(tok):
    # A sampled lone continuation byte, or a cut-off 4-byte emoji.
    lone = [0x80] if tok.kind == "char" else tok.encode("😀")[:1]
    out = tok.decode(lone + tok.encode("ok"))
    assert out.endswith("ok") and "\ufffd" in out


def test_decode_of_unknown_id_is_an_error(tok):
    with pytest.raises(AttnlabError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])
    with pytest.raises(AttnlabError, match="outside the vocabulary"):
        tok.decode([-1])


def test_lone_surrogate_is_a_clear_error(tok):
    with pytest.raises(AttnlabError, match="lone surrogate"):
        tok.encode("ab\ud800")


# --------------------------------------------------------------------------------------------
# Save and load


def test_save_load_equal(tok, tmp_path):
    path = tmp_path / "run" / "tokenizer.json"
    tok.save(path)
    json.loads(path.read_text("utf-8"))  # plain JSON, never a pickle
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok) and loaded == tok
    assert loaded.vocab_size == tok.vocab_size
    sample = "Speak, speak 😀 中文\n  x"
    assert loaded.encode(sample) == tok.encode(sample)
    assert load_tokenizer(path.parent) == tok  # a run directory works too
    assert tokenizer_from_json(tok.to_json()) == tok


def test_char_file_format(char, tmp_path):
    char.save(tmp_path / "t.json")
    obj = json.loads((tmp_path / "t.json").read_text("utf-8"))
    assert obj["type"] == "char" and obj["chars"] == list(char.chars)


def test_bpe_file_is_hf_format(bpe, tmp_path):
    from tokenizers import Tokenizer as HF

    bpe.save(tmp_path / "t.json")
    hf = HF.from_file(str(tmp_path / "t.json"))
    assert hf.encode("Speak, speak.").ids == bpe.encode("Speak, speak.")


def _load_error(path, match):
    with pytest.raises(AttnlabError, match=match) as err:
        load_tokenizer(path)
    assert "\n" not in str(err.value)


def test_bpe_files_that_are_not_byte_level_are_refused(tmp_path):
    """A BPE over words (Whitespace pre-tokenizer) drops spaces and maps unseen text to
    [UNK]: it cannot give back what it encodes, so it is not read as a tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    words = Tokenizer(models.BPE(unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.train_from_iterator([TRAIN_TEXT], trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=["[UNK]"], show_progress=False))
    p = tmp_path / "words.json"
    p.write_text(words.to_str(), encoding="utf-8")
    _load_error(p, "neither byte-level nor byte-fallback")
    words.pre_tokenizer = pre_tokenizers.ByteLevel()  # byte-level in, but no byte decoder
    p.write_text(words.to_str(), encoding="utf-8")
    _load_error(p, "neither byte-level nor byte-fallback")
    words.decoder = decoders.ByteLevel()
    p.write_text(words.to_str(), encoding="utf-8")
    assert load_tokenizer(p).vocab_size == words.get_vocab_size()


def test_bad_tokenizer_files(tmp_path, bpe, char):
    _load_error(tmp_path / "missing.json", "no tokenizer file")
    p = tmp_path / "t.json"
    p.write_text(bpe.to_json()[:500], encoding="utf-8")
    _load_error(p, "not valid JSON")
    p.write_text("", encoding="utf-8")
    _load_error(p, "not valid JSON")
    p.write_bytes(b"\xff\xfe{}")
    _load_error(p, "not UTF-8")
    p.write_text("[1, 2]", encoding="utf-8")
    _load_error(p, "not a tokenizer")
    p.write_text('{"type": "wordz"}', encoding="utf-8")
    _load_error(p, "unknown tokenizer type 'wordz'")
    broken = json.loads(bpe.to_json())
    broken["model"]["vocab"] = 5
    p.write_text(json.dumps(broken), encoding="utf-8")
    _load_error(p, "broken BPE tokenizer file")
    for chars in (["ab"], [5], [["a"]], ["a", 5]):  # 5 and a list broke sorting
        p.write_text(json.dumps({"type": "char", "version": 1, "chars": chars}),
                     encoding="utf-8")
        _load_error(p, "as a character; the file is corrupt")
    p.write_text('{"type": "char", "version": 1, "chars": ["a", "a"]}', encoding="utf-8")
    _load_error(p, "twice")
    p.write_text('{"type": "char", "version": 99, "chars": []}', encoding="utf-8")
    _load_error(p, "not a version-1 char tokenizer")


# --------------------------------------------------------------------------------------------
# Training options


@pytest.mark.parametrize("bad", [0, 256, -5, True, 300.0, "512"])
def test_bpe_vocab_size_validated(bad):
    with pytest.raises(ConfigError, match="vocab_size"):
        train_tokenizer("bpe", TRAIN_TEXT, vocab_size=bad)


def test_char_rejects_vocab_size_and_unknown_kind():
    with pytest.raises(ConfigError, match="bpe only"):
        train_tokenizer("char", TRAIN_TEXT, vocab_size=100)
    with pytest.raises(ConfigError, match="did you mean 'char'"):
        train_tokenizer("chr", TRAIN_TEXT)
    with pytest.raises(AttnlabError, match="empty text"):
        train_tokenizer("bpe", "")


# --------------------------------------------------------------------------------------------
# Chunked encoding equals whole-text encoding

WHITESPACY = st.text(alphabet=st.sampled_from(list("ab ' \n\n\t1.é😀")), max_size=200)


@settings(max_examples=300, deadline=None)
@given(text=WHITESPACY, size=st.integers(1, 12))
def test_safe_chunks_cut_only_at_safe_newlines(text, size):
    pieces = safe_chunks(text, size)
    assert "".join(pieces) == text
    cut = 0
    for piece in pieces[:-1]:
        cut += len(piece)
        assert text[cut - 1] == "\n"
        assert not text[cut - 2].isspace() and not text[cut].isspace()


@settings(max_examples=300, deadline=None)
@given(text=WHITESPACY, size=st.integers(1, 12))
def test_chunked_bpe_encoding_equals_whole(bpe, text, size):
    pieces = safe_chunks(text, size)
    assert [i for ids in bpe.encode_batch(pieces) for i in ids] == bpe.encode(text)


def test_naive_newline_cuts_would_change_bpe_encoding(bpe):
    # Why safe_chunks is picky: cutting after any newline splits pre-tokens such as "\n\n".
    text = "speak.\n\n\nAll:"
    naive = bpe.encode("speak.\n") + bpe.encode("\n\nAll:")
    assert naive != bpe.encode(text)
    assert safe_chunks(text, 1) == [text]
