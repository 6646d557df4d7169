"""Training throughput: attnlab's GPT beside Hugging Face GPT2LMHeadModel and x-transformers.

Same shapes for all (4 layers, 4 heads, d_model 256, context 256, batch 8, vocab 65, no
dropout), each a full training step (forward, cross-entropy, backward, fused AdamW). fp32 and
bf16 autocast (bf16 is emulated, and slow, on CPUs without AVX512-BF16 or AMX). Prints
tokens/s, the ratio of attnlab to each peer, and MFU against the matmul peak measured in the
same process.

Each peer is compared with an attnlab model of its own architecture, so that the ratio
measures the implementations rather than the designs. GPT-2 has biases in every linear and
norm and GELU's tanh approximation: attnlab runs `activation="gelu_tanh"` beside it.
x-transformers' attention has no biases (its `Attention` has no option for them): it runs with
`ff_no_bias=True` beside attnlab's `bias=False`, both with exact GELU. The biases cost several
per cent of a step (a broadcast copy per addmm, a reduction per bias gradient); `--unmatched`
also times attnlab's default (biases, exact GELU) beside x-transformers' default (FFN biases
only), the mismatched pair.

    .venv/bin/python -m benchmarks.train_throughput [--rounds 5] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from attnlab.models import GPT, GPTConfig
from benchmarks.common import grouped_bars, interleaved, machine, matmul_peak, save

B, T, V, D, L, H = 8, 256, 65, 256, 4, 4


def attnlab_model(bias: bool = True, activation: str = "gelu"):
    return GPT(GPTConfig(vocab_size=V, d_model=D, n_heads=H, n_layers=L, max_len=T, bias=bias,
                         activation=activation))


def hf_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=V, n_positions=T, n_embd=D, n_layer=L, n_head=H,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                     eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def x_model(ff_bias: bool = False):
    from x_transformers import Decoder, TransformerWrapper

    return TransformerWrapper(num_tokens=V, max_seq_len=T,
                              attn_layers=Decoder(dim=D, depth=L, heads=H, attn_flash=True,
                                                  ff_no_bias=not ff_bias))


def step_fn(model, logits_of, precision: str):
    # The same optimizer for everyone (fused AdamW, also Hugging Face Trainer's default with
    # torch >= 2.8): the ratios compare the models, not the optimizers.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x, y = torch.randint(V, (B, T)), torch.randint(V, (B, T))
    ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
           else contextlib.nullcontext())

    def step():
        with ctx:
            logits = logits_of(model, x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3, help="steps per timed sample")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--unmatched", action="store_true",
                        help="also time attnlab's default beside both peers' defaults")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/train_throughput.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    # name -> (builder, forward returning logits); `pairs` says who is compared with whom.
    peers = {
        "attnlab": (lambda: attnlab_model(activation="gelu_tanh"), lambda m, x: m(x)),
        "hf-gpt2": (hf_model, lambda m, x: m(x).logits),
        "attnlab-no-bias": (lambda: attnlab_model(bias=False), lambda m, x: m(x)),
        "x-transformers": (x_model, lambda m, x: m(x)),
    }
    pairs = [("attnlab", "hf-gpt2"), ("attnlab-no-bias", "x-transformers")]  # (ours, peer)
    if args.unmatched:
        peers["attnlab-default"] = (attnlab_model, lambda m, x: m(x))
        peers["x-transformers-default"] = (lambda: x_model(ff_bias=True), lambda m, x: m(x))
        pairs += [("attnlab-default", "hf-gpt2"), ("attnlab-default", "x-transformers-default")]
    flops_per_token = 3 * attnlab_model().flops_per_token(T)  # forward + backward
    results = {"machine": machine(), "shape": dict(batch=B, context=T, vocab=V, d_model=D,
                                                   layers=L, heads=H),
               "parameters": {name: sum(p.numel() for p in build().parameters())
                              for name, (build, _) in peers.items()},
               "pairs": pairs, "runs": {}}
    precisions = args.precisions.split(",")
    bar = tqdm(total=len(precisions) * len(peers) * args.rounds, desc="train steps")
    for precision in precisions:
        peak = matmul_peak(torch.bfloat16 if precision == "bf16" else torch.float32)
        steps = {name: step_fn(build(), fwd, precision) for name, (build, fwd) in peers.items()}
        seconds = interleaved(steps, rounds=args.rounds, calls=args.calls, progress=bar)
        tok_s = {name: B * T / s for name, s in seconds.items()}
        results["runs"][precision] = {
            "matmul_peak_gflops": peak,
            "tokens_per_s": tok_s,
            "mfu": {n: t * flops_per_token / (peak * 1e9) for n, t in tok_s.items()},
            "ratios": {f"{ours} / {peer}": tok_s[ours] / tok_s[peer] for ours, peer in pairs},
        }
    bar.close()
    print(f"machine: {results['machine']}")
    for precision, run in results["runs"].items():
        print(f"\n{precision}: matmul peak {run['matmul_peak_gflops']:.0f} GFLOP/s")
        for name, t in run["tokens_per_s"].items():
            print(f"  {name:<22} {t:8.0f} tok/s  MFU {run['mfu'][name]:5.1%}  "
                  f"{results['parameters'][name]:,} parameters")
        for pair, ratio in run["ratios"].items():
            print(f"  {pair:<40} {ratio:.2f}x")
    save(results, args.out)
    png = grouped_bars({p: run["tokens_per_s"] for p, run in results["runs"].items()},
                       list(peers), ylabel="training tokens / s",
                       title=f"GPT 4x256, batch {B}x{T}, {results['machine']['threads']} threads",
                       out=args.out.with_suffix(".png"))
    print(f"\nwrote {args.out} and {png}")


if __name__ == "__main__":
    main()
