"""`attnlab viz`: one forward pass under capture, then a PNG of maps or an HTML head view.

The checks come first, so a bad request costs no forward pass and overwrites nothing: the
output kind and folder, the text against the model's context, the layer and head indices.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from attnlab.errors import AttnlabError
from attnlab.files import check_output
from attnlab.viz.capture import capture_attention
from attnlab.viz.headview import write_head_view
from attnlab.viz.maps import plot_attention_grid, plot_head

KINDS = (".png", ".html")


def check_out(out: Path) -> Path:
    """The output path must end in .png or .html and its folder must exist (an existing
    file is replaced: the CLI asks for --force before it gets here)."""
    return check_output(out, KINDS, "--out", force=True)


def check_length(ids: list[int], model: nn.Module, what: str = "text") -> None:
    """Refuse an empty text or one longer than the model's context (`config.max_len`)."""
    if not ids:
        raise AttnlabError(f"the {what} is empty after tokenization; give some text")
    limit = getattr(getattr(model, "config", None), "max_len", None)
    if limit is not None and len(ids) > limit:
        raise AttnlabError(f"the {what} is {len(ids)} tokens, longer than the model's context "
                           f"of {limit}; shorten it")


def _check_index(value: int | None, n: int, what: str) -> None:
    if value is not None and not 0 <= value < n:
        raise AttnlabError(f"--{what} {value} is out of range: the model has {n} "
                           f"{what}s (0..{n - 1})")


def render_attention(model: nn.Module, ids: list[int], out: Path, *, labels: list[str],
                     target_ids: list[int] | None = None, target_labels: list[str] | None = None,
                     layer: int | None = None, head: int | None = None, per_query: int = 8,
                     max_links: int = 3000, title: str = "") -> Path:
    """Capture the attention of `model` on `ids` and draw it to `out` (.png or .html).

    Args:
        model: an attnlab model; an `EncoderDecoder` also needs `target_ids`.
        ids: the token ids (the source, for an encoder-decoder); `labels` their text.
        target_ids, target_labels: the decoder's input of an encoder-decoder.
        layer: an attention layer, counted over every attention module in call order
            (PNG: only that layer; with `head`: that head enlarged; HTML: selected first).
        head: a head of `layer`.
        per_query, max_links: links drawn in the head view (see `attnlab.viz.headview`).
        title: heading of the picture.
    """
    out = check_out(out)
    if head is not None and layer is None:
        raise AttnlabError("--head needs --layer (which layer's head to enlarge)")
    check_length(ids, model)
    cross = target_ids is not None
    if cross:
        check_length(target_ids, model, "target")
    model.eval()
    with torch.no_grad(), capture_attention(model) as cap:
        idx = torch.tensor([ids])
        if cross:
            model(idx, torch.tensor([target_ids]))
        else:
            model(idx)
    records = cap.records
    _check_index(layer, len(records), "layer")
    if layer is not None:
        _check_index(head, records[layer].n_heads, "head")
    if out.suffix.lower() == ".html":
        return write_head_view(records, out, tokens=labels, target=target_labels,
                               per_query=per_query, max_links=max_links, title=title or
                               "attention head view", initial=(layer, head))
    if head is not None:
        return plot_head(records[layer], head, out, tokens=labels, target=target_labels,
                         title=title)
    chosen = records if layer is None else [records[layer]]
    return plot_attention_grid(chosen, out, tokens=labels, target=target_labels, title=title)
