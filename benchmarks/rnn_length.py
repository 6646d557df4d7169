"""Where attention came from: LSTM, LSTM + Luong global, LSTM + Luong local-p and a Transformer
on copy / reverse / sort of sequences of growing length, at one parameter count and one
wall-clock budget per run.

For each task and length L, each model trains on fresh random sequences of exactly L symbols
(16 symbols; batches of 32) for `--budget` seconds, then greedy-decodes 256 held-out sequences
(a fixed seed no training batch uses). Reported: exact-sequence accuracy (every symbol and the
EOS right), token accuracy, and training throughput (target tokens per second of optimizer
steps).

The budget is CPU time of this one-thread process (`time.process_time`), not wall time: this
machine's two cores are shared, and a wall-clock budget would hand a run more or fewer steps
depending on what else ran at that minute (measured in a first sweep: the same model and
length trained at 26k and 11k tokens per wall second in two runs). One core's CPU seconds are
what a wall-clock budget on a dedicated core would give. The models:

    lstm         LSTM encoder-decoder, no attention (Sutskever et al., 2014)
    luong        + Luong global attention, general score, input feeding
    luong-local  + Luong local-p attention (D = 8, Gaussian), general score, input feeding
    bahdanau     + Bahdanau additive attention (not in the default sweep: --models adds it)
    transformer  attnlab's encoder-decoder Transformer (2 + 2 pre-norm layers, d = 64)

The RNNs' hidden width is chosen per model so that its parameter count is the closest to the
Transformer's (printed). Training uses AdamW, lr 2e-3 (20 warmup steps, then constant: the
step count is not known ahead under a time budget), gradient clipping 1.0, fp32.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python -m benchmarks.rnn_length [--budget 15]
        [--tasks copy,reverse,sort] [--lengths 8,16,32,64,128,256] [--models ...] [--quick]
        [--out docs/bench/rnn_length.json] [--keep-denormals] [--no-progress]

Denormals. Backpropagating through hundreds of LSTM steps shrinks the gradients that reach the
early steps (the vanishing gradient) into float32's denormal range, where x86 arithmetic is
slow: measured here, one LSTM layer over 256 steps whose loss reads only the final state took
983 ms forward + backward with denormals and 75 ms with them flushed to zero. The script
flushes them (`torch.set_flush_denormal(True)`; `--keep-denormals` measures without).

Runs are sequential, not interleaved (a training run cannot be), so the +-10% drift of this
shared machine is in the throughput numbers. Prints a markdown table; saves JSON and two PNGs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm import tqdm

from attnlab.data.synthetic import make_sequences, vocab_size
from attnlab.models.config import Seq2SeqConfig
from attnlab.models.rnn import RNNSeq2Seq, RNNSeq2SeqConfig
from attnlab.models.seq2seq import EncoderDecoder
from attnlab.tasks.sequences import evaluate_sequences, forward, teacher_forced_loss
from benchmarks.common import machine, save

N_SYMBOLS = 16
RNN = {"lstm": dict(attention="none"),
       "luong": dict(attention="luong", score="general"),
       "luong-local": dict(attention="luong-local", local_mode="p", window=8, score="general"),
       "bahdanau": dict(attention="bahdanau")}
MODELS = ("lstm", "luong", "luong-local", "transformer")


def transformer(max_len: int) -> EncoderDecoder:
    return EncoderDecoder(Seq2SeqConfig(vocab_size=vocab_size(N_SYMBOLS), d_model=64,
                                        n_heads=4, n_layers=2, d_ff=256, norm_first=True,
                                        max_len=max_len + 2))


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_hidden(name: str, target: int) -> int:
    """The even hidden width whose RNN parameter count is closest to `target`."""
    def params(h):
        return count(RNNSeq2Seq(RNNSeq2SeqConfig(vocab_size=vocab_size(N_SYMBOLS), d_embed=64,
                                                 hidden=h, **RNN[name])))
    return min(range(16, 513, 2), key=lambda h: abs(params(h) - target))


def build(name: str, hidden: dict[str, int], max_len: int):
    if name == "transformer":
        return transformer(max_len)
    return RNNSeq2Seq(RNNSeq2SeqConfig(vocab_size=vocab_size(N_SYMBOLS), d_embed=64,
                                       hidden=hidden[name], max_len=max_len, **RNN[name]))


def run_one(name: str, task: str, L: int, hidden: dict, *, budget: float, batch: int,
            eval_rows: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = build(name, hidden, L)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.98), weight_decay=0.0)
    model.train()
    steps, tokens, busy, loss = 0, 0, 0.0, float("nan")
    start, wall = time.process_time(), time.perf_counter()
    while time.process_time() - start < budget:
        data = make_sequences(task, batch, min_len=L, max_len=L, n_symbols=N_SYMBOLS,
                              seed=1000 + steps)
        t0 = time.process_time()
        for group in opt.param_groups:
            group["lr"] = 2e-3 * min(1.0, (steps + 1) / 20)
        out = teacher_forced_loss(forward(model, data), data.tgt_out)
        opt.zero_grad(set_to_none=True)
        out.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        busy += time.process_time() - t0
        steps += 1
        tokens += batch * (L + 1)
        loss = float(out.detach())
    held_out = make_sequences(task, eval_rows, min_len=L, max_len=L, n_symbols=N_SYMBOLS,
                              seed=10**6 + L)
    wall = time.perf_counter() - wall
    t0 = time.process_time()
    m = evaluate_sequences(model, held_out, prefix="test")
    return {"task": task, "length": L, "model": name, "params": count(model), "steps": steps,
            "train_cpu_seconds": busy, "train_wall_seconds": wall,
            "tokens_per_s": tokens / busy, "final_loss": loss,
            "test_loss": m["test_loss"], "token_acc": m["test_token_acc"],
            "seq_acc": m["test_seq_acc"], "eval_cpu_seconds": time.process_time() - t0}


def table(results: dict) -> str:
    models = results["models"]
    lines = ["| task | L | " + " | ".join(f"{m} seq / tok" for m in models) + " |",
             "|---|---:|" + "---:|" * len(models)]
    by = {(r["task"], r["length"], r["model"]): r for r in results["runs"]}
    for task in results["tasks"]:
        for L in results["lengths"]:
            cells = []
            for m in models:
                r = by.get((task, L, m))
                cells.append(f"{r['seq_acc']:.2f} / {r['token_acc']:.2f}" if r else "-")
            lines.append(f"| {task} | {L} | " + " | ".join(cells) + " |")
    lines += ["", "| L | " + " | ".join(f"{m} tok/s (steps)" for m in models) + " |",
              "|---:|" + "---:|" * len(models)]
    for L in results["lengths"]:
        cells = []
        for m in models:
            rs = [r for r in results["runs"] if r["length"] == L and r["model"] == m]
            if rs:
                tps = sum(r["tokens_per_s"] for r in rs) / len(rs)
                steps = sum(r["steps"] for r in rs) / len(rs)
                cells.append(f"{tps:,.0f} ({steps:.0f})")
            else:
                cells.append("-")
        lines.append(f"| {L} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, out: Path) -> list[Path]:
    from attnlab.viz.plotting import figure
    from attnlab.viz.plotting import save as save_png

    tasks, models = results["tasks"], results["models"]
    fig, axes = figure(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for i, m in enumerate(models):
            rs = sorted((r for r in results["runs"] if r["task"] == task and r["model"] == m),
                        key=lambda r: r["length"])
            xs = [r["length"] for r in rs]
            color = f"C{i}"
            ax.plot(xs, [r["seq_acc"] for r in rs], "o-", color=color, label=f"{m} exact seq")
            ax.plot(xs, [r["token_acc"] for r in rs], "x--", color=color, alpha=0.6,
                    label=f"{m} token")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="sequence length", ylabel="held-out accuracy", ylim=(-0.03, 1.03),
               title=task)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    acc = save_png(fig, out.with_suffix(".png"),
                   title=f"accuracy vs length, {results['budget']:.0f} CPU s per run, "
                         f"~{results['transformer_params'] // 1000}k params each")
    fig, ax = figure(figsize=(6, 3.8))
    for i, m in enumerate(models):
        pts = {}
        for r in results["runs"]:
            if r["model"] == m:
                pts.setdefault(r["length"], []).append(r["tokens_per_s"])
        xs = sorted(pts)
        ax.plot(xs, [sum(pts[x]) / len(pts[x]) for x in xs], "o-", color=f"C{i}", label=m)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="sequence length", ylabel="training target tokens / CPU s")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    thr = save_png(fig, out.with_name(out.stem + "_throughput.png"),
                   title=f"training throughput ({results['machine']['threads']} thread)")
    return [acc, thr]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=15.0, help="training CPU seconds per run")
    p.add_argument("--tasks", default="copy,reverse,sort")
    p.add_argument("--lengths", default="8,16,32,64,128,256")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--eval-rows", type=int, default=256)
    p.add_argument("--quick", action="store_true",
                   help="lengths 8,16, 2 s per run, 32 held-out rows (a smoke test)")
    p.add_argument("--out", type=Path, default=Path("docs/bench/rnn_length.json"))
    p.add_argument("--keep-denormals", action="store_true",
                   help="do not flush denormal floats to zero (see the module docstring)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--from-json", type=Path,
                   help="only print the table and redraw the plots of a saved (maybe partial) run")
    args = p.parse_args(argv)
    if args.from_json:
        import json

        results = json.loads(args.from_json.read_text())
        print(table(results))
        print("plots: " + ", ".join(str(x) for x in plot(results, args.from_json)))
        return 0
    torch.set_flush_denormal(not args.keep_denormals)
    if args.quick:
        args.lengths, args.budget, args.eval_rows = "8,16", 2.0, 32
    tasks = args.tasks.split(",")
    lengths = [int(x) for x in args.lengths.split(",")]
    models = args.models.split(",")
    for m in models:
        if m not in (*RNN, "transformer"):
            raise SystemExit(f"unknown model '{m}'; choose from {', '.join((*RNN, 'transformer'))}")
    target = count(transformer(max(lengths)))
    hidden = {m: matched_hidden(m, target) for m in models if m in RNN}
    params = {m: count(build(m, hidden, max(lengths))) for m in models}
    print(f"parameters (target: the Transformer's {target:,}):")
    for m in models:
        print(f"  {m:<12} {params[m]:>9,}" + (f"  (hidden {hidden[m]})" if m in hidden else ""))
    results = {"machine": machine(), "flush_denormal": not args.keep_denormals,
               "budget": args.budget, "batch": args.batch,
               "eval_rows": args.eval_rows, "n_symbols": N_SYMBOLS, "tasks": tasks,
               "lengths": lengths, "models": models, "params": params, "hidden": hidden,
               "transformer_params": target, "runs": []}
    bar = tqdm(total=len(tasks) * len(lengths) * len(models), desc="runs",
               disable=args.no_progress, dynamic_ncols=True)
    for task in tasks:
        for L in lengths:
            for m in models:
                r = run_one(m, task, L, hidden, budget=args.budget, batch=args.batch,
                            eval_rows=args.eval_rows)
                results["runs"].append(r)
                bar.update(1)
                bar.set_postfix(task=task, L=L, model=m, seq=f"{r['seq_acc']:.2f}",
                                tok=f"{r['token_acc']:.2f}")
                save(results, args.out)  # a killed sweep keeps what it measured
    bar.close()
    save(results, args.out)
    pngs = plot(results, args.out)
    print(table(results))
    print(f"saved {args.out}, " + ", ".join(str(x) for x in pngs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
