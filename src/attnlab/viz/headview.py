"""An interactive head view as ONE self-contained HTML file: no CDN, no network.

Tokens on both sides (queries left, keys right; a decoder's tokens left and the encoder's right
for cross-attention), one line per attention link, coloured by head and weighted by the
attention. A select chooses the layer, checkboxes the heads; hovering a token isolates its
links and highlights the tokens they reach. The script and style are the project's own
(assets/headview.js, assets/headview.css), inlined into the page with the data.

Long inputs stay responsive because not every link is drawn: per head, each query keeps its
`per_query` strongest keys and the head at most `max_links` links overall (the strongest); the
page says how many of how many links it shows.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from attnlab.viz.capture import AttentionRecord
from attnlab.viz.maps import record_labels


def strongest_links(weights: Tensor, *, per_query: int = 8, max_links: int = 3000
                    ) -> tuple[list[int], list[int], list[float], int]:
    """The links drawn for one head.

    Args:
        weights: (Tq, Tk) one head's attention.
        per_query: keys kept per query (its strongest by |weight|).
        max_links: links kept for the head (the strongest of those).

    Returns:
        (queries, keys, weights, total): the kept links, strongest first, and how many nonzero
        links the head has in all.
    """
    mag = weights.abs()
    total = int((mag > 0).sum())
    top, idx = mag.topk(min(per_query, weights.shape[1]), dim=-1)  # (Tq, p)
    qs = torch.arange(weights.shape[0])[:, None].expand_as(idx).flatten()
    ks, vals = idx.flatten(), top.flatten()
    keep = vals > 0
    qs, ks, vals = qs[keep], ks[keep], vals[keep]
    order = vals.argsort(descending=True, stable=True)[:max_links]
    qs, ks = qs[order], ks[order]
    w = weights[qs, ks]  # signed (linformer's W F) as computed
    return qs.tolist(), ks.tolist(), [round(float(x), 4) for x in w], total


def _display(token: str) -> str:
    shown = token.replace("\n", "\\n").replace("\t", "\\t")
    if not shown.strip():
        shown = shown.replace(" ", "\u2423")  # a visible space
    return shown[:18] + ("\u2026" if len(shown) > 18 else "")


def head_view_data(records: list[AttentionRecord], *, tokens: list[str],
                   target: list[str] | None = None, batch: int = 0, per_query: int = 8,
                   max_links: int = 3000, title: str = "") -> dict:
    """The JSON the page draws: tokens, and per layer and head the strongest links."""
    layers = []
    for rec in records:
        q_labels, k_labels = record_labels(rec, tokens, target)
        q_side = "src" if q_labels is tokens else "tgt"
        k_side = "src" if k_labels is tokens else "tgt"
        heads = []
        for h in range(rec.n_heads):
            q, k, w, total = strongest_links(rec.weights[batch, h], per_query=per_query,
                                             max_links=max_links)
            heads.append({"q": q, "k": k, "w": w, "total": total})
        layers.append({"name": rec.name, "kind": rec.kind, "mechanism": rec.mechanism,
                       "note": rec.note, "q": q_side, "k": k_side, "heads": heads})
    shown = {"src": [_display(t) for t in tokens]}
    if target is not None:
        shown["tgt"] = [_display(t) for t in target]
    return {"title": title, "tokens": shown, "layers": layers,
            "limits": {"per_query": per_query, "max_links": max_links}}


def _asset(name: str) -> str:
    return resources.files("attnlab.viz").joinpath("assets", name).read_text(encoding="utf-8")


def write_head_view(records: list[AttentionRecord], out: Path, *, tokens: list[str],
                    target: list[str] | None = None, batch: int = 0, per_query: int = 8,
                    max_links: int = 3000, title: str = "attention head view",
                    initial: tuple[int | None, int | None] = (None, None)) -> Path:
    """Write the head view of `records` to `out` (one HTML file, everything inlined).

    Args:
        records: from `capture_attention`.
        tokens: labels of the tokens (the source, in an encoder-decoder).
        target: the decoder's tokens of an encoder-decoder.
        batch: which row of the batch.
        per_query, max_links: how many links are drawn (see the module doc).
        title: the page's heading.
        initial: (layer, head) selected when the page opens (None: layer 0, every head).
    """
    data = head_view_data(records, tokens=tokens, target=target, batch=batch,
                          per_query=per_query, max_links=max_links, title=title)
    data["initial"] = {"layer": initial[0] or 0, "head": initial[1]}
    # "</" cannot end the script element early when escaped in the JSON text
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
{_asset("headview.css")}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<div id="controls">
<label>layer <select id="layer"></select></label>
<span id="heads"></span>
</div>
<div id="status"></div>
<div id="note"></div>
<svg id="view" xmlns="http://www.w3.org/2000/svg"></svg>
<script type="application/json" id="attn-data">{payload}</script>
<script>
{_asset("headview.js")}
</script>
</body>
</html>
"""
    out = Path(out)
    out.write_text(page, encoding="utf-8")
    return out
