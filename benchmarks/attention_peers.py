"""attnlab's efficient attention beside the PyPI implementations of the same papers.

Module level, projections included, same shapes for everyone: batch 1, d_model 512, 8 heads
of 64, bidirectional, forward only, at n = 4096 and 16384. Each (implementation, n) point runs
in a fresh process (peak RSS is its own, as in `attnlab bench attention`); the table gives
time and peak memory and attnlab's ratio to each peer (< 1 is better for attnlab).

    pairs: local (window 256)       ~ local-attention LocalMHA (window 256, look 1 back, 1 ahead)
           linformer (k 256)        ~ linformer LinformerSelfAttention (k 256)
           performer (256 features) ~ performer-pytorch SelfAttention (nb_features 256)
           lsh (chunk 64, 2 hashes) ~ reformer-pytorch LSHSelfAttention (bucket 64, 2 hashes)
           bigbird (block 64, 3 random, 2 global) ~ Hugging Face BigBird block-sparse attention

Each pair computes the same thing; peer defaults that would not are matched. LocalMHA runs
without its built-in rotary embedding (attnlab's local has none inside) and attnlab's local,
like LocalMHA, without projection biases (LocalMHA's window keeps |i - j| <= 256, attnlab's
|i - j| < 256: 513 and 511 keys per query). LSHSelfAttention attends within the query's
own bucket and counts a pair met in both rounds once (`attend_across_buckets=False`,
`allow_duplicate_attention=False`), as attnlab's lsh always does; its defaults do less work
(any key of the chunk pair, repeated pairs counted twice). The other peers have no bias on
their q/k/v projections and attnlab does: a little more work on attnlab's side.

    .venv/bin/python -m benchmarks.attention_peers [--lengths 4096,16384] [--pairs local,...]
        [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

from benchmarks.common import grouped_bars, machine, save

D, H = 512, 8


def build(name: str, n: int):
    """(module, call) for implementation `name` at length n."""
    import torch

    from attnlab.attention import MultiHeadAttention

    def ours(attention, bias=True, **options):
        m = MultiHeadAttention(D, H, attention=attention, attention_options=options, bias=bias)
        return m, lambda x: m(x)[0]

    if name == "attnlab:local":
        return ours("local", bias=False, window=256)
    if name == "attnlab:linformer":
        return ours("linformer", seq_len=n, k=256)
    if name == "attnlab:performer":
        return ours("performer", nb_features=256)
    if name == "attnlab:lsh":
        return ours("lsh", n_buckets=max(2, 2 * (n // 128)), n_hashes=2, chunk_size=64)
    if name == "attnlab:bigbird":
        return ours("bigbird", block_size=64, num_random_blocks=3, num_global_blocks=2)
    if name == "local-attention":
        from local_attention import LocalMHA

        m = LocalMHA(dim=D, window_size=256, heads=H, dim_head=D // H, causal=False,
                     use_rotary_pos_emb=False)
        return m, m
    if name == "linformer":
        from linformer import LinformerSelfAttention

        m = LinformerSelfAttention(dim=D, seq_len=n, k=256, heads=H)
        return m, m
    if name == "performer-pytorch":
        from performer_pytorch import SelfAttention

        m = SelfAttention(dim=D, heads=H, dim_head=D // H, nb_features=256, causal=False)
        return m, m
    if name == "reformer-pytorch":
        from reformer_pytorch import LSHSelfAttention

        m = LSHSelfAttention(dim=D, heads=H, bucket_size=64, n_hashes=2, causal=False,
                             attend_across_buckets=False, allow_duplicate_attention=False)
        return m, m
    if name == "hf-bigbird":
        from transformers import BigBirdConfig
        from transformers.models.big_bird.modeling_big_bird import BigBirdAttention, BigBirdModel

        cfg = BigBirdConfig(hidden_size=D, num_attention_heads=H, attention_type="block_sparse",
                            block_size=64, num_random_blocks=3, max_position_embeddings=n,
                            attention_probs_dropout_prob=0.0)
        m = BigBirdAttention(cfg, seed=0)
        mask = torch.ones(1, n)
        blocked, band, from_mask, to_mask = BigBirdModel.create_masks_for_block_sparse_attn(
            mask, 64)

        def call(x):
            return m(x, band_mask=band, from_mask=from_mask, to_mask=to_mask,
                     from_blocked_mask=blocked, to_blocked_mask=blocked)[0]

        return m, call
    raise ValueError(name)


PAIRS = {"local": ("attnlab:local", "local-attention"),
         "linformer": ("attnlab:linformer", "linformer"),
         "performer": ("attnlab:performer", "performer-pytorch"),
         "lsh": ("attnlab:lsh", "reformer-pytorch"),
         "bigbird": ("attnlab:bigbird", "hf-bigbird")}


def point(name: str, n: int, repeats: int) -> dict:
    """Measured inside a fresh process (see main's --point)."""
    import statistics
    import time

    import torch

    from attnlab.bench.point import peak_rss_mib, reset_peak, rss_mib

    torch.manual_seed(0)
    module, call = build(name, n)
    module.eval()
    with torch.no_grad():
        x = torch.randn(1, n, D)
        reset_peak()
        before = rss_mib()
        call(x)
        peak = peak_rss_mib() - before
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call(x)
            times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="4096,16384")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/attention_peers.json"))
    parser.add_argument("--pairs", default=",".join(PAIRS), help="comma-separated subset")
    parser.add_argument("--point", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        spec = json.loads(args.point)
        print(json.dumps(point(spec["name"], spec["n"], spec["repeats"])))
        return
    lengths = [int(x) for x in args.lengths.split(",")]
    pairs = {label: PAIRS[label] for label in args.pairs.split(",")}
    names = [name for pair in pairs.values() for name in pair]
    results = {"machine": machine(), "d_model": D, "heads": H, "points": {}}
    bar = tqdm(total=len(names) * len(lengths), desc="peer points")
    for n in lengths:
        for name in names:
            spec = json.dumps({"name": name, "n": n, "repeats": args.repeats})
            done = subprocess.run([sys.executable, "-m", "benchmarks.attention_peers",
                                   "--point", spec], capture_output=True, text=True,
                                  timeout=1800)
            bar.update(1)
            if done.returncode:
                err = (done.stderr.strip().splitlines() or ["failed"])[-1]
                results["points"][f"{name}@{n}"] = {"error": err}
                continue
            results["points"][f"{name}@{n}"] = json.loads(done.stdout.strip().splitlines()[-1])
    bar.close()
    print(f"machine: {results['machine']}")
    print(f"{'pair':<11}{'n':>7}  {'attnlab ms':>11} {'peer ms':>9} {'time ratio':>10}  "
          f"{'attnlab MiB':>11} {'peer MiB':>9} {'mem ratio':>9}")
    for label, (ours, peer) in pairs.items():
        for n in lengths:
            a, b = results["points"][f"{ours}@{n}"], results["points"][f"{peer}@{n}"]
            if "error" in a or "error" in b:
                print(f"{label:<11}{n:>7}  error: {a.get('error') or b.get('error')}")
                continue
            print(f"{label:<11}{n:>7}  {a['seconds'] * 1e3:>11.1f} {b['seconds'] * 1e3:>9.1f} "
                  f"{a['seconds'] / b['seconds']:>10.2f}  {a['peak_mib']:>11.1f} "
                  f"{b['peak_mib']:>9.1f} {a['peak_mib'] / max(b['peak_mib'], 1e-3):>9.2f}")
    save(results, args.out)
    n = lengths[-1]
    groups = {"attnlab": {}, "peer": {}}
    for label, (ours, peer) in pairs.items():
        groups["attnlab"][label] = results["points"][f"{ours}@{n}"].get("seconds", 0.0)
        groups["peer"][label] = results["points"][f"{peer}@{n}"].get("seconds", 0.0)
    png = grouped_bars(groups, list(pairs), ylabel="seconds per forward",
                       title=f"efficient attention vs PyPI peers, n = {n}",
                       out=args.out.with_suffix(".png"))
    print(f"\nwrote {args.out} and {png}")


if __name__ == "__main__":
    main()
