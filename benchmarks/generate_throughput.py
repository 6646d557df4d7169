"""Generation throughput: attnlab's KV-cached decoding beside Hugging Face `generate` on
identical weights, and beside attnlab without a cache.

Batch 1, a 16-token prompt, 256 new tokens, greedy. The GPT is GPT-2-shaped (4 layers,
d_model 256, 4 heads, vocab 65, 512 positions); attnlab's copy is built from the Hugging Face
model's own config and weights, and the script checks both produce the same tokens before it
times anything. "attnlab" is the default decoder (flat functional calls, `FlatDecoder`),
"attnlab-modules" the same cached decoding through the model's modules.

The cache's advantage grows with the length generated (without it, token t recomputes all t
positions): `--sweep 64,128,...` also times cached against uncached decoding at one thread for
each number of new tokens and plots the ratio.

    .venv/bin/python -m benchmarks.generate_throughput [--rounds 5] [--threads 1,2]
        [--sweep 64,128,256,512,1024]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from attnlab.generate import generate
from attnlab.interop import gpt_from_hf
from benchmarks.common import interleaved, interleaved_by_threads, machine, save_by_threads

V, D, L, H, N_POS, PROMPT, NEW = 65, 256, 4, 4, 512, 16, 256


def models(n_positions: int = N_POS):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=V, n_positions=n_positions, n_embd=D, n_layer=L, n_head=H,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None,
                     eos_token_id=None, pad_token_id=0)  # no eos: all NEW tokens are generated
    hf = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # weights at a scale where greedy decoding does not loop at once
        for name, p in hf.named_parameters():
            if p.dim() == 2 and "wte" not in name and "wpe" not in name:
                p.normal_(0.0, 1.5 * p.shape[0] ** -0.5)
    return hf, gpt_from_hf(cfg.to_dict(), hf.state_dict()).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", default="1,2", help="thread counts to measure")
    parser.add_argument("--sweep", default="",
                        help="new-token counts for the cached / uncached sweep (one thread)")
    parser.add_argument("--out", type=Path,
                        default=Path("docs/bench/generate_throughput.json"))
    args = parser.parse_args()
    sweep = [int(n) for n in args.sweep.split(",") if n]
    # More positions than the longest generation needs only lengthen the position table: the
    # compute per token is the same, and no run slides its window.
    hf, ours = models(max(N_POS, PROMPT + max(sweep, default=0)))
    prompt = torch.randint(1, V, (1, PROMPT), generator=torch.Generator().manual_seed(1))

    def hf_generate():
        with torch.inference_mode():
            out = hf.generate(prompt, max_new_tokens=NEW, do_sample=False, use_cache=True,
                              attention_mask=torch.ones_like(prompt))
        return out[0, PROMPT:].tolist()

    def attnlab_generate(use_cache=True, new=NEW, decoder="auto"):
        return generate(ours, prompt, max_new_tokens=new, temperature=0.0,
                        use_cache=use_cache, decoder=decoder)[0]

    runs = {"attnlab": attnlab_generate,
            "attnlab-modules": lambda: attnlab_generate(decoder="modules"),
            "hf-generate": hf_generate,
            "attnlab-no-cache": lambda: attnlab_generate(False)}
    same = len({tuple(run()) for run in runs.values()}) == 1
    if not same:
        raise SystemExit("attnlab and Hugging Face disagree on the greedy tokens")
    results = {"machine": machine(), "new_tokens": NEW, "prompt": PROMPT, "same_tokens": same,
               "runs": {}}
    timed = interleaved_by_threads(runs, args.threads, rounds=args.rounds, desc="generate")
    for threads, seconds in timed.items():
        tok_s = {name: NEW / s for name, s in seconds.items()}
        results["runs"][threads] = {
            "tokens_per_s": tok_s,
            "ms_per_token": {n: 1e3 / t for n, t in tok_s.items()},
            "attnlab_vs": {n: tok_s["attnlab"] / t for n, t in tok_s.items() if n != "attnlab"},
        }
    if sweep:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        results["sweep"] = {}
        for new in tqdm(sweep, desc="sweep"):
            seconds = interleaved({"attnlab": lambda n=new: attnlab_generate(True, n),
                                   "attnlab-no-cache": lambda n=new: attnlab_generate(False, n)},
                                  rounds=args.rounds, calls=1, warmup=1)
            results["sweep"][str(new)] = {"tokens_per_s": {k: new / s for k, s in
                                                           seconds.items()},
                                          "cache_vs_no_cache": seconds["attnlab-no-cache"]
                                          / seconds["attnlab"]}
        torch.set_num_threads(before)
    print(f"machine: {results['machine']}; greedy tokens identical: {same}")
    for threads, run in results["runs"].items():
        print(f"\n{threads} thread(s), batch 1, {NEW} new tokens:")
        for name, t in run["tokens_per_s"].items():
            ratio = "" if name == "attnlab" else f"  attnlab is {run['attnlab_vs'][name]:.2f}x"
            print(f"  {name:<17} {t:8.1f} tok/s  {run['ms_per_token'][name]:6.2f} ms/token"
                  f"{ratio}")
    if sweep:
        print("\none thread: KV cache vs recomputation, by new tokens")
        for new, row in results["sweep"].items():
            print(f"  {new:>5} new tokens: cached {row['tokens_per_s']['attnlab']:7.1f} tok/s, "
                  f"uncached {row['tokens_per_s']['attnlab-no-cache']:6.1f} tok/s, "
                  f"{row['cache_vs_no_cache']:5.1f}x")
        sweep_png = sweep_plot(results["sweep"], args.out.with_name(
            args.out.stem + "_sweep.png"))
        print(f"wrote {sweep_png}")
    save_by_threads(results, "tokens_per_s", list(runs), ylabel="new tokens / s",
                    title=f"greedy decoding, batch 1, {NEW} new tokens", out=args.out)


def sweep_plot(sweep: dict, out: Path) -> Path:
    """Cached over uncached speed against the number of new tokens (log-log)."""
    from attnlab.viz.plotting import figure
    from attnlab.viz.plotting import save as save_png

    fig, ax = figure(figsize=(5.5, 3.5))
    news = [int(n) for n in sweep]
    ax.plot(news, [row["cache_vs_no_cache"] for row in sweep.values()], "o-",
            label="attnlab: KV cache / recomputation")
    ax.axhline(10, color="gray", linestyle="--", linewidth=1, label="10x")
    ax.set(xscale="log", yscale="log", xlabel="new tokens (16-token prompt)",
           ylabel="speed-up of the cache",
           title="greedy decoding, batch 1, one thread")
    ax.minorticks_off()  # log axes label their minor ticks too, on top of the major ones
    ax.set_xticks(news, [str(n) for n in news])
    ratios = [row["cache_vs_no_cache"] for row in sweep.values()]
    yticks = [t for t in (1, 2, 5, 10, 20, 50, 100) if min(ratios) / 2 <= t <= max(ratios) * 2]
    ax.set_yticks(yticks, [f"{t}x" for t in yticks])
    ax.legend()
    return save_png(fig, out)


if __name__ == "__main__":
    main()
