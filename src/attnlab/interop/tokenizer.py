"""The tokenizer of a Hugging Face folder (tokenizer.json), used the way its model expects."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer as _HFTokenizer
from torch import Tensor

from attnlab.errors import AttnlabError
from attnlab.files import atomic_write


def token_ids(value) -> tuple[int, ...]:
    """An eos_token_id as configs write it (an id, a list of ids, or None) as a tuple."""
    values = value if isinstance(value, list) else [value]
    return tuple(v for v in values if isinstance(v, int) and not isinstance(v, bool))


class HFTokenizer:
    """A `tokenizers` tokenizer.json with everything the file says: normalizer (BERT's
    lowercasing), pre-tokenizer, model (BPE, WordPiece, Unigram) and special-token template
    (BERT's [CLS] ... [SEP], LLaMA's <s>), applied as `transformers`' AutoTokenizer applies them
    by default. It offers attnlab's `Tokenizer` interface plus `batch` for padded batches.

    Departure from the file: padding and truncation stored in it (all-MiniLM-L6-v2's says "pad
    every text to 128") are switched off; `batch` pads to the longest text and truncates at the
    length asked for, as sentence-transformers does.

    Args:
        tokenizer: a `tokenizers.Tokenizer`.
        max_length: the longest input the model was trained on (tokens, special ones
            included), or None; `batch` truncates to it by default.
        source: the file's JSON text, written back unchanged by `save` (default: the
            tokenizer's own serialization).

    Attributes:
        eos_ids: the model's end-of-sequence ids, where its folder or file names them
            (generation_config.json / config.json, GGUF metadata); `attnlab generate` stops a
            row there, as transformers' `generate` does. Empty when unknown.
    """

    kind = "hf"
    eos_ids: tuple[int, ...] = ()

    def __init__(self, tokenizer: _HFTokenizer, *, max_length: int | None = None,
                 source: str | None = None):
        padding = tokenizer.padding  # read before it is switched off: it names the pad id
        self.pad_id = padding["pad_id"] if padding else self._first_id(tokenizer)
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.hf, self.max_length = tokenizer, max_length
        self._source = source

    @staticmethod
    def _first_id(tokenizer: _HFTokenizer) -> int:
        # Padded positions are masked out, so any valid id does; a pad token is the natural one
        for token in ("[PAD]", "<pad>", "<|endoftext|>", "</s>"):
            found = tokenizer.token_to_id(token)
            if found is not None:
                return found
        return 0

    @classmethod
    def from_file(cls, path: str | Path, *, max_length: int | None = None) -> HFTokenizer:
        """Read a tokenizer.json.

        Args:
            path: the file.
            max_length: see the class.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise AttnlabError(f"no tokenizer file at {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise AttnlabError(f"cannot read tokenizer file {path} ({e})") from None
        try:
            tokenizer = _HFTokenizer.from_str(text)
        except Exception as e:  # the Rust side raises a bare Exception with a serde message
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise AttnlabError(f"tokenizer file {path} is not a tokenizers JSON file ({first}); "
                               f"it may be corrupt") from None
        return cls(tokenizer, max_length=max_length, source=text)

    @property
    def vocab_size(self) -> int:
        """Number of tokens, added (special) tokens included."""
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Ids of `text`, special tokens of the template included.

        Args:
            text: any string.
        """
        return self.hf.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` of each text.

        Args:
            texts: strings.
        """
        return [e.ids for e in self.hf.encode_batch(list(texts))]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, special tokens kept (as `transformers`' decode by default).

        Args:
            ids: token ids.
        """
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def batch(self, texts: Sequence[str], *, max_length: int | None = None,
              ) -> tuple[Tensor, Tensor, Tensor]:
        """Encode `texts` into one right-padded batch.

        Args:
            texts: strings.
            max_length: truncate each to this many tokens, special tokens included (the
                template's closing token is kept); default `self.max_length`, None = none.

        Returns:
            (ids, key_padding_mask, token_type_ids), each (B, T) with T the longest encoding;
            the mask is True at real tokens.
        """
        if isinstance(texts, str) or not texts:
            raise AttnlabError("give a non-empty list of texts")
        max_length = max_length or self.max_length
        if max_length:
            self.hf.enable_truncation(max_length)
        try:
            encodings = self.hf.encode_batch(list(texts))
        finally:
            self.hf.no_truncation()
        T = max(len(e.ids) for e in encodings)
        ids = torch.full((len(texts), T), self.pad_id, dtype=torch.long)
        types = torch.zeros((len(texts), T), dtype=torch.long)
        mask = torch.zeros((len(texts), T), dtype=torch.bool)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = torch.tensor(e.ids)
            types[row, :n] = torch.tensor(e.type_ids)
            mask[row, :n] = True
        return ids, mask, types

    def to_json(self) -> str:
        """The tokenizer.json text (the file's own when read from one)."""
        return self._source if self._source is not None else self.hf.to_str()

    def save(self, path: str | Path) -> None:
        """Write `to_json()` to `path` atomically.

        Args:
            path: destination, conventionally tokenizer.json.
        """
        atomic_write(Path(path), self.to_json())

    def __repr__(self) -> str:
        return f"HFTokenizer(vocab_size={self.vocab_size}, max_length={self.max_length})"
