"""Train a small GPT on repeated random sequences and find its specialized heads by score.

Each training example is BOS, a random segment of L tokens (L drawn per example, 4..16), the
same segment again, then fresh random tokens up to 33. Only the repeat is predictable, and only
by looking back: find the earlier occurrence of the current token and copy the token after it.
L varies, so a fixed positional offset cannot do it; what can is a previous-token head (layer 0)
feeding an induction head (layer 1) (Olsson et al., 2022). The script scores every head
(attnlab.viz.heads) on fresh test sequences (BOS, 16 random tokens, the same 16 again) and
draws the maps of the best-scoring heads.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python examples/induction_heads.py

Writes docs/tutorial/heads_*.png, heads_scores.json and heads_metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from attnlab.models import GPT
from attnlab.models.config import GPTConfig
from attnlab.viz.capture import capture_attention
from attnlab.viz.curves import plot_training
from attnlab.viz.heads import head_scores
from attnlab.viz.maps import heads_table, plot_attention_grid, plot_head

VOCAB, HALF = 64, 16  # token 0 is BOS; the random tokens are 1..63


def batch(n: int, gen: torch.Generator, *, vary: bool = True
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1 + 2 * HALF) sequences and (n, 2 * HALF) True where the next token is a repeat.

    vary: the repeated segment's length is drawn per row from 4..HALF (training); else HALF.
    """
    T = 1 + 2 * HALF
    idx = torch.randint(1, VOCAB, (n, T), generator=gen)
    idx[:, 0] = 0
    lengths = (torch.randint(4, HALF + 1, (n,), generator=gen) if vary
               else torch.full((n,), HALF))
    pos = torch.arange(T)
    repeat = (pos >= 1 + lengths[:, None]) & (pos < 1 + 2 * lengths[:, None])  # (n, T)
    source = (pos - lengths[:, None]).clamp_min(0)
    idx = torch.where(repeat, idx.gather(1, source), idx)
    # the first repeated token cannot be foreseen (nothing says the repeat starts there)
    foreseeable = repeat & (pos >= 2 + lengths[:, None])
    return idx, foreseeable[:, 1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--positional", default="rope", help="rope makes the previous-token "
                                                             "offset one rotation")
    parser.add_argument("--out", type=Path, default=Path("docs/tutorial"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    config = GPTConfig(vocab_size=VOCAB, d_model=64, n_heads=4, n_layers=2, max_len=1 + 2 * HALF,
                       positional=args.positional, dropout=0.0)
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps,
                                                pct_start=0.05)
    metrics = args.out / "heads_metrics.jsonl"
    rows = []
    start = time.perf_counter()
    for step in tqdm(range(1, args.steps + 1), disable=args.no_progress, desc="train"):
        idx, predictable = batch(args.batch_size, gen)
        logits = model(idx[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), idx[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0 or step == args.steps:
            with torch.no_grad():  # the repeat separately: only it is learnable
                per = F.cross_entropy(logits.reshape(-1, VOCAB), idx[:, 1:].reshape(-1),
                                      reduction="none").view(args.batch_size, -1)
                first = per[:, 1:][~predictable[:, 1:]].mean()  # the BOS -> token-1 step aside
            elapsed = time.perf_counter() - start
            rows.append({"step": step, "loss": loss.item(), "lr": sched.get_last_lr()[0],
                         "tokens_per_s": step * idx[:, :-1].numel() / elapsed,
                         "loss_fresh": first.item(),
                         "loss_repeat": per[predictable].mean().item()})
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot_training(metrics, args.out / "heads_training.png", title="GPT on repeated random tokens")

    # Score every head on fresh sequences.
    model.eval()
    test = batch(256, torch.Generator().manual_seed(1), vary=False)[0][:, :-1]  # model's input
    with torch.no_grad(), capture_attention(model) as cap:
        model(test)
    scores = head_scores(cap.records, test)
    L, H = config.n_layers, config.n_heads
    prev = torch.tensor([r["previous_token"] for r in scores]).view(L, H)
    ind = torch.tensor([r["induction"] for r in scores]).view(L, H)
    best_prev = divmod(int(prev.argmax()), H)
    best_ind = divmod(int(ind.argmax()), H)
    summary = {
        "command": "OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python examples/induction_heads.py",
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
        "positional": args.positional, "train_seconds": round(
            time.perf_counter() - start, 1),
        "final_loss_fresh": rows[-1]["loss_fresh"],
        "final_loss_repeat": rows[-1]["loss_repeat"],
        "chance_loss": math.log(VOCAB - 1),
        "previous_token": prev.tolist(), "induction": ind.tolist(),
        "best_previous_token_head": list(best_prev), "best_induction_head": list(best_ind),
        "uniform_causal_baseline": float(torch.tensor(
            [1 / (i + 1) for i in range(1, test.shape[1])]).mean()),
    }
    (args.out / "heads_scores.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"loss on fresh tokens {summary['final_loss_fresh']:.3f} (chance "
          f"{summary['chance_loss']:.3f}), on repeated ones {summary['final_loss_repeat']:.3f}")
    print("previous-token score\n" + heads_table(prev))
    print("induction score\n" + heads_table(ind))
    print(f"best previous-token head: layer {best_prev[0]} head {best_prev[1]}; "
          f"best induction head: layer {best_ind[0]} head {best_ind[1]}")

    # Maps of one example: every head, then the two best heads enlarged.
    tokens = ["BOS"] + [str(int(t)) for t in test[0, 1:]]
    plot_attention_grid(cap.records, args.out / "heads_grid.png", tokens=tokens,
                        title="GPT on a repeated random sequence: every head")
    for what, (layer, head) in (("previous-token", best_prev), ("induction", best_ind)):
        rec = cap.records[layer]
        score = (prev if what == "previous-token" else ind)[layer, head]
        plot_head(rec, head, args.out / f"heads_{what.split('-')[0]}.png", tokens=tokens,
                  title=f"layer {layer} head {head}: {what} score {float(score):.2f}")
    print(f"wrote {args.out}/heads_*.png and heads_scores.json")


if __name__ == "__main__":
    main()
