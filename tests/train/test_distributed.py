"""The trainer's collectives, on a real two-process gloo group."""

import torch.distributed as dist
import torch.multiprocessing as mp

from attnlab.train import distributed


def _any_true_worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    d = distributed.Dist(rank=rank, world=2)
    # rank 0 alone is past its deadline; rank 1 alone holds the other flag
    answers = [distributed.any_true(rank == 0, d), distributed.any_true(rank == 1, d),
               distributed.any_true(False, d)]
    with open(f"{out}.{rank}", "w") as f:
        f.write(" ".join(str(a) for a in answers))
    dist.destroy_process_group()


def test_any_true_agrees_across_processes(tmp_path):
    out = str(tmp_path / "answers")
    mp.spawn(_any_true_worker, args=(str(tmp_path / "store"), out), nprocs=2)
    for rank in (0, 1):
        assert (tmp_path / f"answers.{rank}").read_text() == "True True False"


def test_any_true_is_the_flag_in_one_process():
    assert distributed.any_true(True, distributed.Dist()) is True
    assert distributed.any_true(False, distributed.Dist()) is False
