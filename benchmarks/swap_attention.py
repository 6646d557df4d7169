"""Swap SmolLM2-135M-Instruct's attention for another mechanism, same weights: perplexity.

The pretrained model was trained with full causal attention. Each row rebuilds it with another
registered mechanism (`attnlab.models.swap.with_attention`, no training) and scores the same
held-out tokens (the last 10 % of Shakespeare, windows of --context tokens):

    .venv/bin/python -m benchmarks.swap_attention [--tokens 4096] [--context 512]
        [--out docs/bench/swap_attention.json]

Prints a markdown table (perplexity, bits per character, ratio to full) and saves JSON and a
plot of perplexity against the local window, with and without global first tokens.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from attnlab.data import load_text
from attnlab.interop import load_pretrained
from attnlab.models.swap import with_attention
from attnlab.tasks.lm import held_out_loss
from benchmarks.common import machine, save

MODEL = "SmolLM2-135M-Instruct"
WINDOWS = (16, 32, 64, 128, 256)
# (label, mechanism, options)
ROWS = [("full", "full", {})]
ROWS += [(f"local w={w}", "local", {"window": w}) for w in WINDOWS]
ROWS += [(f"longformer w={w} g=1", "longformer", {"window": w, "global_tokens": 1})
         for w in WINDOWS]
ROWS += [("longformer w=64 g=4", "longformer", {"window": 64, "global_tokens": 4}),
         ("bigbird (causal, blocks of 64)", "bigbird", {"block_size": 64}),
         ("lsh (2 hashes, 32 buckets, own keys)", "lsh", {"shared_qk": False, "seed": 0}),
         ("performer (256 features)", "performer", {"nb_features": 256, "seed": 0}),
         ("hard (top-1)", "hard", {"k": 1})]


def plot(results: list[dict], out: Path) -> Path:
    from attnlab.viz.plotting import figure
    from attnlab.viz.plotting import save as save_png

    full = next(r["perplexity"] for r in results if r["mechanism"] == "full")
    fig, ax = figure(figsize=(6, 3.5))
    for mechanism, label in (("local", "local (window only)"),
                             ("longformer", "longformer (window + first token global)")):
        rows = [r for r in results if r["mechanism"] == mechanism
                and r["options"].get("global_tokens", 1) == 1]
        ax.plot([r["options"]["window"] for r in rows], [r["perplexity"] for r in rows],
                marker="o", label=label)
    ax.axhline(full, color="gray", linestyle="--", label="full attention")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("window (tokens)")
    ax.set_ylabel("perplexity (held-out Shakespeare)")
    ax.set_title(f"{MODEL}: attention swapped, weights unchanged", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_png(fig, out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/swap_attention.json"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model, tokenizer = load_pretrained(MODEL)
    text, where = load_text("shakespeare")
    results = []
    for label, mechanism, options in tqdm(ROWS, desc="mechanisms"):
        swap = with_attention(model, mechanism, options)
        m = held_out_loss(swap.model.eval(), tokenizer, text, context=args.context,
                          max_tokens=args.tokens)
        results.append({"label": label, "mechanism": mechanism, "options": options,
                        "notes": swap.notes(), **m})
    full = results[0]["perplexity"]
    print(f"\n{MODEL}, {results[0]['tokens']} held-out tokens of {where.split(' (')[0]}, "
          f"windows of {args.context}\n")
    print("| attention | perplexity | bits/char | vs full |")
    print("|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['label']} | {r['perplexity']:.1f} | {r['bits_per_char']:.3f} | "
              f"{r['perplexity'] / full:.2f}x |")
    save({"machine": machine(), "model": MODEL, "tokens": args.tokens, "context": args.context,
          "data": where, "results": results}, args.out)
    print(f"\n{args.out}\n{plot(results, args.out.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
