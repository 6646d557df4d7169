"""`distributed.setup` and `teardown` under a torchrun environment, with the process group
faked: which process is the main one, which GPU a process takes, and that the group is left."""

import pytest
import torch

from attnlab.train import distributed


def test_the_main_process_is_global_rank_0_not_each_nodes_first():
    """On two nodes each node has a local rank 0; only global rank 0 writes files."""
    assert distributed.Dist(rank=0, world=4, local_rank=0).main
    assert not distributed.Dist(rank=2, world=4, local_rank=0).main
    assert distributed.Dist().main and not distributed.Dist().active


@pytest.fixture
def fake_group(monkeypatch):
    calls = []
    state = {"up": False}

    def init(backend):
        calls.append(("init", backend))
        state["up"] = True

    def destroy():
        calls.append(("destroy",))
        state["up"] = False

    monkeypatch.setattr(distributed.dist, "init_process_group", init)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: state["up"])
    monkeypatch.setattr(distributed.dist, "destroy_process_group", destroy)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("device", i)))
    return calls


def test_setup_reads_torchrun_and_a_gpu_process_takes_its_local_device(monkeypatch, fake_group):
    # the second node's second process of 2 x 2
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    d = distributed.setup("cuda")
    assert d == distributed.Dist(rank=3, world=4, local_rank=1) and not d.main and d.active
    assert fake_group == [("init", "nccl"), ("device", 1)]
    distributed.teardown(d)
    assert fake_group[-1] == ("destroy",)


def test_setup_on_cpu_is_gloo_and_alone_is_no_group(monkeypatch, fake_group):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    d = distributed.setup("cpu")
    assert d == distributed.Dist(rank=0, world=2, local_rank=0) and d.main
    assert fake_group == [("init", "gloo")]
    distributed.teardown(d)
    distributed.teardown(d)  # a group already gone is not destroyed twice
    assert fake_group == [("init", "gloo"), ("destroy",)]
    monkeypatch.setenv("WORLD_SIZE", "1")
    fake_group.clear()
    assert distributed.setup("cpu") == distributed.Dist()
    distributed.teardown(distributed.Dist())
    assert fake_group == []


def test_mean_is_the_sum_over_processes_divided_by_their_number(monkeypatch):
    """The all-reduce sums; the mean divides by the world size (and leaves its input alone)."""
    def all_reduce(value, op):
        assert op == distributed.dist.ReduceOp.SUM
        value.mul_(3)  # as if three processes held the same value

    monkeypatch.setattr(distributed.dist, "all_reduce", all_reduce)
    x = torch.tensor(2.5)
    assert distributed.mean(x, distributed.Dist(rank=0, world=3)).item() == pytest.approx(2.5)
    assert x.item() == 2.5
    assert distributed.mean(x, distributed.Dist()) is x
