"""Tokenizers: characters with a byte fallback, and byte-level BPE trained with HF `tokenizers`.

Both are stored as one `tokenizer.json` (plain JSON, never pickled): the character tokenizer in
attnlab's own small format (`{"type": "char", ...}`), the BPE tokenizer in the Hugging Face
`tokenizers` format, so other tools can read it. Both encode any UTF-8 text and decode it back
exactly: `decode(encode(s)) == s` for every string of Unicode scalar values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from attnlab.errors import AttnlabError, ConfigError, unknown
from attnlab.files import atomic_write

#: Token kinds `train_tokenizer` knows.
KINDS = ("bpe", "char")
#: Byte-level BPE starts from the 256 byte tokens; below 257 it would learn no merge at all.
MIN_BPE_VOCAB = 257
DEFAULT_BPE_VOCAB = 2048

_CHAR_FORMAT_VERSION = 1


@runtime_checkable
class Tokenizer(Protocol):
    """What every attnlab tokenizer offers."""

    kind: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def to_json(self) -> str: ...

    def save(self, path: str | Path) -> None: ...


def _utf8_check(text: str) -> None:
    # Python strings may hold lone surrogates (e.g. from undecodable file names); they have no
    # UTF-8 form, so no tokenizer can represent them.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise AttnlabError(
            f"text holds a lone surrogate (U+{ord(text[e.start]):04X} at index {e.start}), "
            "which is not valid Unicode; fix the source text"
        ) from e


def _check_ids(ids: Iterable[int], vocab_size: int) -> list[int]:
    ids = [int(i) for i in ids]
    bad = next((i for i in ids if not 0 <= i < vocab_size), None)
    if bad is not None:
        raise AttnlabError(
            f"token id {bad} is outside the vocabulary (size {vocab_size}); "
            "the tokenizer does not match the model or data that produced these ids"
        )
    return ids


# --------------------------------------------------------------------------------------------
# Characters with byte fallback
# --------------------------------------------------------------------------------------------


class CharTokenizer:
    """One token per character of the training text, plus 256 byte tokens for everything else.

    Ids 0-255 are the bytes 0x00-0xFF; ids 256 and up are the training text's characters in
    sorted order. A character outside that set is encoded as its UTF-8 bytes, so every text
    round-trips exactly, whatever it holds (emoji, CJK, combining marks), and a model trained on
    ASCII can still be prompted with anything.

    Args:
        chars: the vocabulary's characters (duplicates are dropped, order does not matter).
    """

    kind = "char"
    N_BYTES = 256

    def __init__(self, chars: Iterable[str]):
        chars = list(chars)
        for c in chars:  # before set() and sorted(), which a list or an int would break
            if not isinstance(c, str) or len(c) != 1:
                raise AttnlabError(
                    f"a char tokenizer's vocabulary holds single characters, not {c!r:.40}"
                )
            _utf8_check(c)
        chars = sorted(set(chars))
        self.chars: tuple[str, ...] = tuple(chars)
        self._index = {c: i + self.N_BYTES for i, c in enumerate(self.chars)}
        # Sorting single-character strings sorts by code point, so this array is sorted too and
        # `np.searchsorted` can map a whole text to ids at once.
        self._codepoints = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        """A tokenizer whose vocabulary is the characters of `text`.

        Args:
            text: training text.
        """
        _utf8_check(text)
        return cls(set(text))

    @property
    def vocab_size(self) -> int:
        """256 byte tokens plus one token per vocabulary character."""
        return self.N_BYTES + len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Ids of `text`: a character's id, or its UTF-8 bytes when it is not in the vocabulary.

        Args:
            text: any string of Unicode scalar values.
        """
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Like `encode`, as an int64 array, without building a Python list (fast on megabytes).

        Args:
            text: any string of Unicode scalar values.
        """
        if not text:
            return np.zeros(0, dtype=np.int64)
        try:
            cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        except UnicodeEncodeError:
            _utf8_check(text)
            raise
        if len(self._codepoints) == 0:
            known = np.zeros(len(cps), dtype=bool)
            ids = np.zeros(len(cps), dtype=np.int64)
        else:
            pos = np.searchsorted(self._codepoints, cps)
            known = self._codepoints[np.minimum(pos, len(self._codepoints) - 1)] == cps
            ids = pos.astype(np.int64) + self.N_BYTES
        if known.all():
            return ids
        # Splice the UTF-8 bytes of each run of unknown characters in place of their slots.
        edges = np.flatnonzero(np.diff(np.concatenate(([1], known.view(np.int8), [1]))))
        pieces: list[np.ndarray] = []
        done = 0
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            pieces.append(ids[done:start])
            run = text[start:stop].encode("utf-8")
            pieces.append(np.frombuffer(run, dtype=np.uint8).astype(np.int64))
            done = stop
        pieces.append(ids[done:])
        return np.concatenate(pieces)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` of each text.

        Args:
            texts: strings to encode.
        """
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`. Runs of byte tokens are decoded as UTF-8 with errors="replace".

        So `decode(encode(s)) == s` exactly, while ids a model sampled that form no valid UTF-8
        (a lone continuation byte, a cut-off emoji) become U+FFFD instead of raising.

        Args:
            ids: token ids, each in range(vocab_size).
        """
        out: list[str] = []
        pending = bytearray()
        for i in _check_ids(ids, self.vocab_size):
            if i < self.N_BYTES:
                pending.append(i)
                continue
            if pending:
                out.append(pending.decode("utf-8", errors="replace"))
                pending.clear()
            out.append(self.chars[i - self.N_BYTES])
        if pending:
            out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)

    def to_json(self) -> str:
        """The tokenizer as JSON text (attnlab's char format)."""
        return json.dumps(
            {"type": "char", "version": _CHAR_FORMAT_VERSION, "byte_fallback": True,
             "chars": list(self.chars)},
            ensure_ascii=False,
        )  # fmt: skip

    def to_hf(self) -> _HFTokenizer:
        """The same ids as a Hugging Face `tokenizers` tokenizer, for exported folders.

        A BPE model without merges is a character tokenizer: each character is looked up
        whole, and `byte_fallback` spells one outside the vocabulary as its UTF-8 bytes,
        named `<0x00>`-`<0xFF>` at ids 0-255 (LLaMA's convention). `encode` and `decode` equal
        this tokenizer's on any text; only ids that form no valid UTF-8 decode differently,
        as one U+FFFD per byte instead of one per invalid run.
        """
        vocab = {f"<0x{b:02X}>": b for b in range(self.N_BYTES)}
        vocab.update(self._index)
        tokenizer = _HFTokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
        tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
        return tokenizer

    def save(self, path: str | Path) -> None:
        """Write `to_json()` to `path` atomically.

        Args:
            path: destination, conventionally `tokenizer.json` in a run directory.
        """
        atomic_write(Path(path), self.to_json() + "\n")

    @classmethod
    def from_dict(cls, obj: dict, *, where: str = "tokenizer") -> CharTokenizer:
        """Rebuild from the parsed JSON of `to_json()`.

        Args:
            obj: the parsed JSON object.
            where: names the source in error messages.
        """
        chars = obj.get("chars")
        if obj.get("version") != _CHAR_FORMAT_VERSION or not isinstance(chars, list):
            raise AttnlabError(
                f"{where} is not a version-{_CHAR_FORMAT_VERSION} char tokenizer "
                "(needs 'version' and a 'chars' list); retrain it"
            )
        bad = next((c for c in chars if not isinstance(c, str) or len(c) != 1), None)
        if bad is not None:
            raise AttnlabError(f"{where} lists {bad!r:.40} as a character; the file is corrupt, "
                               "retrain it")
        if len(set(chars)) != len(chars):
            raise AttnlabError(f"{where} lists a character twice; the file is corrupt, retrain it")
        return cls(chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and self.chars == other.chars

    def __hash__(self) -> int:
        return hash(self.chars)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# --------------------------------------------------------------------------------------------
# Byte-level BPE
# --------------------------------------------------------------------------------------------

# A newline with a non-space character on both sides. The GPT-2 pre-tokenizer regex always makes
# such a newline a piece of its own and starts a fresh piece after it, so text cut right after it
# pre-tokenizes (hence encodes) exactly as the whole. Other newlines are not safe: "a\n\n\nb"
# pre-tokenizes as "\n\n", "\n" whole but "\n", "\n", "\n" when cut after the first, and
# "a  \nb" joins the spaces and the newline when cut. Python's \S is stricter than the Rust
# regex's (it also calls U+001C..U+001F space), which errs on the safe side.
_SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)")


def safe_chunks(text: str, size: int = 1 << 20) -> list[str]:
    """Cut `text` into pieces of about `size` characters that encode exactly like the whole.

    Cuts fall only after a newline that has a non-space character on both sides, which the
    byte-level pre-tokenizer never merges across, so concatenating the encodings of the pieces
    equals the encoding of `text` for both tokenizers. A piece is longer than `size` when no
    such newline comes sooner; `"".join(safe_chunks(t)) == t` always.

    Args:
        text: the text to cut.
        size: the target number of characters per piece (>= 1).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    pieces: list[str] = []
    start = 0
    while len(text) - start > size:
        m = _SAFE_CUT.search(text, start + size)
        if m is None:
            break
        pieces.append(text[start : m.start()])
        start = m.start()
    if start < len(text) or not pieces:
        pieces.append(text[start:])
    return pieces


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) around a Hugging Face `tokenizers.Tokenizer`.

    No prefix space is added and no normalizer runs, so `decode(encode(s)) == s` exactly for
    any string, leading spaces, newlines and emoji included. There are no special tokens.

    Args:
        tokenizer: a `tokenizers.Tokenizer` with a BPE model (from `train` or a tokenizer.json).
    """

    kind = "bpe"

    def __init__(self, tokenizer: _HFTokenizer):
        self.hf = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int = DEFAULT_BPE_VOCAB) -> BPETokenizer:
        """Learn merges on `text` until the vocabulary holds `vocab_size` tokens.

        The vocabulary can come out smaller when the text runs out of pairs to merge.

        Args:
            text: training text.
            vocab_size: total tokens including the 256 byte tokens; at least 257.
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise ConfigError(f"vocab_size must be an integer, got {vocab_size!r}")
        if vocab_size < MIN_BPE_VOCAB:
            raise ConfigError(
                f"vocab_size {vocab_size} is too small for byte-level BPE: it needs at least "
                f"{MIN_BPE_VOCAB} (256 byte tokens plus one merge); try {DEFAULT_BPE_VOCAB}"
            )
        _utf8_check(text)
        tok = _HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            # All 256 bytes are in the vocabulary even if the text never uses them: that is
            # what lets any string be encoded.
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
            show_progress=False,
        )
        # Feeding pieces cut at safe newlines lets the trainer work in parallel while counting
        # exactly the pre-tokens that encoding the whole text would produce.
        tok.train_from_iterator(safe_chunks(text, 1 << 16), trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        """Number of tokens."""
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Ids of `text`.

        Args:
            text: any string of Unicode scalar values.
        """
        _utf8_check(text)
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` of each text, in parallel threads.

        Args:
            texts: strings to encode.
        """
        for t in texts:
            _utf8_check(t)
        # encode_batch_fast skips computing character offsets, which we never use.
        fast = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)
        return [e.ids for e in fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; invalid UTF-8 (e.g. a lone sampled byte token) becomes U+FFFD.

        Args:
            ids: token ids, each in range(vocab_size).
        """
        return self.hf.decode(_check_ids(ids, self.vocab_size), skip_special_tokens=False)

    def to_json(self) -> str:
        """The tokenizer in the Hugging Face `tokenizers` JSON format."""
        return self.hf.to_str()

    def save(self, path: str | Path) -> None:
        """Write `to_json()` to `path` atomically.

        Args:
            path: destination, conventionally `tokenizer.json` in a run directory.
        """
        atomic_write(Path(path), self.to_json())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BPETokenizer) and _canonical(self.to_json()) == _canonical(
            other.to_json()
        )

    def __hash__(self) -> int:
        return hash(_canonical(self.to_json()))

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


def _canonical(text: str) -> str:
    return json.dumps(json.loads(text), sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Training and loading
# --------------------------------------------------------------------------------------------


def train_tokenizer(kind: str, text: str, vocab_size: int | None = None) -> Tokenizer:
    """Train a tokenizer of `kind` on `text`.

    Args:
        kind: "char" or "bpe".
        text: training text (not empty).
        vocab_size: BPE vocabulary size (default 2048); must be None for "char", whose
            vocabulary is fixed by the text.
    """
    if kind not in KINDS:
        raise unknown("tokenizer kind", kind, KINDS)
    if not text:
        raise AttnlabError("cannot train a tokenizer on empty text; give some text")
    if kind == "char":
        if vocab_size is not None:
            raise ConfigError(
                "vocab_size applies to bpe only: a char tokenizer's vocabulary is the text's "
                "characters plus 256 bytes; drop vocab_size or use kind bpe"
            )
        return CharTokenizer.train(text)
    return BPETokenizer.train(text, DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size)


def tokenizer_from_json(text: str, *, where: str = "tokenizer") -> Tokenizer:
    """Rebuild a tokenizer from its JSON text (as `to_json()` or a `tokenizers` file gives).

    Args:
        text: JSON text.
        where: names the source in error messages (e.g. the file path).
    """
    try:
        obj = json.loads(text)
    except ValueError as e:
        msg = getattr(e, "msg", str(e))
        raise AttnlabError(
            f"{where} is not valid JSON ({msg}); the file is corrupt or truncated, "
            "retrain the tokenizer or copy it again"
        ) from e
    if not isinstance(obj, dict):
        raise AttnlabError(f"{where} is not a tokenizer (JSON object expected)")
    if obj.get("type") == "char":
        return CharTokenizer.from_dict(obj, where=where)
    model = obj.get("model")
    if isinstance(model, dict) and model.get("type") == "BPE":
        if not (_byte_level(obj) or _byte_fallback(obj)):
            raise AttnlabError(
                f"{where} is a BPE tokenizer that is neither byte-level nor byte-fallback, so "
                "it would not give back the text it encodes; attnlab reads those two only"
            )
        try:
            return BPETokenizer(_HFTokenizer.from_str(text))
        except Exception as e:  # the Rust side raises a bare Exception with a serde message
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise AttnlabError(
                f"{where} is a broken BPE tokenizer file ({first}); retrain it"
            ) from e
    found = obj.get("type") or (model.get("type") if isinstance(model, dict) else None)
    raise AttnlabError(
        f"{where} has unknown tokenizer type {found!r}; attnlab reads 'char' tokenizers and "
        "byte-level or byte-fallback BPE files of the tokenizers library"
    )


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer saved with `.save()` (or a BPE `tokenizer.json` of `tokenizers`).

    Args:
        path: the tokenizer.json file, or a run directory holding one.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise AttnlabError(f"no tokenizer file at {path}; train one or give the right path") from e
    except OSError as e:
        raise AttnlabError(f"cannot read tokenizer file {path}: {e.strerror or e}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AttnlabError(
            f"tokenizer file {path} is not UTF-8 JSON (byte offset {e.start}); it is corrupt"
        ) from e
    return tokenizer_from_json(text, where=f"tokenizer file {path}")


def _kinds(part) -> list:
    """The component types of a tokenizers JSON pre-tokenizer or decoder, Sequences opened."""
    if not isinstance(part, dict):
        return []
    inner = part.get("pretokenizers") or part.get("decoders")
    return ([k for p in inner for k in _kinds(p)] if isinstance(inner, list)
            else [part.get("type")])


def _byte_level(obj: dict) -> bool:
    """Whether a tokenizers JSON maps bytes both ways as GPT-2 does: a ByteLevel decoder, no
    normalizer, and ByteLevel among the pre-tokenizers (others in a Sequence only split)."""
    return (obj.get("normalizer") is None and _kinds(obj.get("decoder")) == ["ByteLevel"]
            and "ByteLevel" in _kinds(obj.get("pre_tokenizer")))


def _byte_fallback(obj: dict) -> bool:
    """Whether a tokenizers JSON gives back any text through byte fallback (the form of
    `CharTokenizer.to_hf`, and LLaMA's): no normalizer or pre-tokenizer, every byte
    <0x00>..<0xFF> a token, and a decoder that turns them back into bytes and fuses."""
    model = obj.get("model") or {}
    vocab = model.get("vocab")
    return (obj.get("normalizer") is None and obj.get("pre_tokenizer") is None
            and model.get("byte_fallback") is True and isinstance(vocab, dict)
            and all(f"<0x{b:02X}>" in vocab for b in range(256))
            and _kinds(obj.get("decoder")) == ["ByteFallback", "Fuse"])
