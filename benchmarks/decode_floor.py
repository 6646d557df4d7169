"""What bounds KV-cached decoding here: attnlab beside a flat loop of the same operations.

The issue's target is cached decoding >= 10x faster than recomputation (batch 1, 256 new
tokens, greedy). At d_model 256 and batch 1 a cached step is two dozen matrix-vector products
and four attention rows: little arithmetic, so the time goes to memory traffic and to the cost
of calling each operation. This script writes the same greedy decoding of the same weights as
one flat function of functional calls (no modules, no checks, the whole cache allocated once)
and times it beside attnlab's cached and uncached decoding, interleaved, per thread count.
The flat loop is about the fastest an eager PyTorch implementation of this model can go, so
`no cache / flat loop` is the ceiling of the cache's speed-up on this machine. attnlab is
timed twice: its default decoder (`FlatDecoder`, flat calls inside the library), and the same
cached decoding through the model's modules, whose distance to the floor is what modules,
checks and per-layer cache objects cost per token. It checks that all of them give the same
tokens before it times anything.

    .venv/bin/python -m benchmarks.decode_floor [--rounds 5] [--threads 1,2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from attnlab.generate import generate
from benchmarks.common import interleaved_by_threads, machine, save_by_threads
from benchmarks.generate_throughput import NEW, PROMPT, V, models


def flat_greedy(model, prompt: torch.Tensor, new: int) -> list[int]:
    """Greedy decoding of a GPT-2-shaped attnlab `GPT` (pre-norm LayerNorm, learned
    positions, full attention, tanh GELU, biases, tied head, no dropout) as bare functional
    calls on its weights, with a cache preallocated for prompt + new tokens."""
    c = model.config
    if not (c.norm_first and c.use_final_norm and c.positional == "learned"
            and c.attention == "full" and c.activation == "gelu_tanh" and c.norm == "layernorm"
            and c.bias and c.n_kv_heads in (None, c.n_heads) and c.dropout == 0):
        raise ValueError("flat_greedy implements the GPT-2 shape only")
    D, H = c.d_model, c.n_heads
    Dh, eps = D // H, c.norm_eps
    layers = [(b.attn_norm.weight, b.attn_norm.bias, b.self_attn.q_proj.weight,
               b.self_attn.q_proj.bias, b.self_attn.k_proj.weight, b.self_attn.k_proj.bias,
               b.self_attn.v_proj.weight, b.self_attn.v_proj.bias, b.self_attn.out_proj.weight,
               b.self_attn.out_proj.bias, b.ffn_norm.weight, b.ffn_norm.bias, b.ffn.fc1.weight,
               b.ffn.fc1.bias, b.ffn.fc2.weight, b.ffn.fc2.bias) for b in model.stack.blocks]
    tok, pos = model.tok_emb.weight, model.positional.weight
    norm_w, norm_b, head = model.stack.norm.weight, model.stack.norm.bias, model.head.weight
    T0 = prompt.shape[1]
    keys = torch.empty(len(layers), 1, H, T0 + new, Dh)  # (L, B, H, S, Dh)
    values = torch.empty_like(keys)

    def step(ids: torch.Tensor, start: int) -> torch.Tensor:  # ids (1, T) -> (1, V)
        T, end = ids.shape[1], start + ids.shape[1]
        x = F.embedding(ids, tok) + pos[start:end]  # (1, T, D)
        for i, (n1w, n1b, qw, qb, kw, kb, vw, vb, ow, ob, n2w, n2b, w1, b1, w2, b2) in \
                enumerate(layers):
            h = F.layer_norm(x, (D,), n1w, n1b, eps)
            q = F.linear(h, qw, qb).view(1, T, H, Dh).transpose(1, 2)  # (1, H, T, Dh)
            keys[i, :, :, start:end] = F.linear(h, kw, kb).view(1, T, H, Dh).transpose(1, 2)
            values[i, :, :, start:end] = F.linear(h, vw, vb).view(1, T, H, Dh).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, keys[i, :, :, :end], values[i, :, :, :end],
                                               is_causal=T > 1)  # a prompt is causal in itself
            x = x + F.linear(a.transpose(1, 2).reshape(1, T, D), ow, ob)
            h = F.layer_norm(x, (D,), n2w, n2b, eps)
            x = x + F.linear(F.gelu(F.linear(h, w1, b1), approximate="tanh"), w2, b2)
        return F.linear(F.layer_norm(x[:, -1], (D,), norm_w, norm_b, eps), head)

    out: list[int] = []
    with torch.inference_mode():
        logits = step(prompt, 0)
        for i in range(new):
            out.append(int(logits.argmax(-1)))
            if i < new - 1:
                logits = step(torch.tensor([[out[-1]]]), T0 + i)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", default="1,2", help="thread counts to measure")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/decode_floor.json"))
    args = parser.parse_args()
    _, model = models()
    prompt = torch.randint(1, V, (1, PROMPT), generator=torch.Generator().manual_seed(1))
    runs = {
        "flat-loop": lambda: flat_greedy(model, prompt, NEW),
        "attnlab": lambda: generate(model, prompt, max_new_tokens=NEW, temperature=0.0)[0],
        "attnlab-modules": lambda: generate(model, prompt, max_new_tokens=NEW, temperature=0.0,
                                            decoder="modules")[0],
        "attnlab-no-cache": lambda: generate(model, prompt, max_new_tokens=NEW,
                                             temperature=0.0, use_cache=False)[0],
    }
    tokens = {name: run() for name, run in runs.items()}
    if len({tuple(t) for t in tokens.values()}) != 1:
        raise SystemExit("the flat loop and attnlab disagree on the greedy tokens")
    results = {"machine": machine(), "new_tokens": NEW, "prompt": PROMPT, "runs": {}}
    timed = interleaved_by_threads(runs, args.threads, rounds=args.rounds, desc="decode")
    for threads, seconds in timed.items():
        ms = {name: 1e3 * s / NEW for name, s in seconds.items()}
        results["runs"][threads] = {
            "ms_per_token": ms,
            "no_cache_vs_flat_loop": ms["attnlab-no-cache"] / ms["flat-loop"],
            "no_cache_vs_attnlab": ms["attnlab-no-cache"] / ms["attnlab"],
            "no_cache_vs_attnlab_modules": ms["attnlab-no-cache"] / ms["attnlab-modules"],
            "attnlab_overhead_ms": ms["attnlab"] - ms["flat-loop"],
            "modules_overhead_ms": ms["attnlab-modules"] - ms["flat-loop"],
        }
    print(f"machine: {results['machine']}; greedy tokens identical: True")
    for threads, run in results["runs"].items():
        ms = run["ms_per_token"]
        print(f"\n{threads} thread(s), batch 1, {NEW} new tokens (ms/token):")
        for name, t in ms.items():
            print(f"  {name:<17} {t:6.3f}")
        print(f"  recomputation / flat loop: {run['no_cache_vs_flat_loop']:5.1f}x  (the ceiling)")
        print(f"  recomputation / attnlab:   {run['no_cache_vs_attnlab']:5.1f}x")
        print(f"  recomputation / attnlab through its modules: "
              f"{run['no_cache_vs_attnlab_modules']:5.1f}x")
        for name, key in (("attnlab", "attnlab_overhead_ms"),
                          ("attnlab-modules", "modules_overhead_ms")):
            print(f"  {name} over the flat loop: {run[key]:+.3f} ms/token "
                  f"({run[key] / ms[name]:+.0%} of its step)")
    save_by_threads(results, "ms_per_token", list(runs), ylabel="ms / token",
                    title=f"greedy decoding, batch 1, {NEW} new tokens", out=args.out)


if __name__ == "__main__":
    main()
