"""attnlab.data.lra: the splits come from distinct streams (no
copy of a training row in val / test), and an expression of exactly `length` tokens is kept."""

import dataclasses
import random

import pytest

from attnlab.data import lra


@pytest.mark.parametrize("name", ["lra-listops", "lra-retrieval"])
def test_cached_splits_share_no_rows(name, monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNLAB_HOME", str(tmp_path))
    small = dataclasses.replace(lra.LRA_TASKS[name], sizes=(300, 100, 100))
    monkeypatch.setitem(lra.LRA_TASKS, name, small)
    data = lra.load_lra(name, 64)
    assert [len(data.labels[s]) for s in lra.SPLITS] == [300, 100, 100]
    rows = {s: {r.tobytes() for r in data.tokens[s]} for s in lra.SPLITS}
    # at 64 tokens a chance repeat is rare; a split drawn from another's stream repeats them all
    assert len(rows["val"] & rows["train"]) <= 2
    assert len(rows["test"] & rows["train"]) <= 2
    assert len(rows["test"] & rows["val"]) <= 2


def test_an_expression_of_exactly_the_limit_is_kept():
    out: list[int] = []
    lra._listops_tree(random.Random(7), 0, 10, 10**9, out)
    again: list[int] = []
    # the same draw with the limit at its own length is accepted (the limit is inclusive)
    value = lra._listops_tree(random.Random(7), 0, 10, len(out), again)
    assert again == out
    assert value == lra.listops_value([lra.LISTOPS_VOCAB[t] for t in out])
    with pytest.raises(lra._TooLong):
        lra._listops_tree(random.Random(7), 0, 10, len(out) - 1, [])


def test_listops_rows_may_fill_the_whole_length():
    tokens, _ = lra.listops(300, 24, seed=0)
    n_real = (tokens != lra.PAD).sum(1)
    assert n_real.max() == 24  # the inclusive bound is reachable in practice


def test_a_corrupt_meta_json_is_one_clear_error(monkeypatch, tmp_path):
    from attnlab.errors import AttnlabError

    monkeypatch.setenv("ATTNLAB_HOME", str(tmp_path))
    small = dataclasses.replace(lra.LRA_TASKS["lra-retrieval"], sizes=(20, 5, 5))
    monkeypatch.setitem(lra.LRA_TASKS, "lra-retrieval", small)
    lra.load_lra("lra-retrieval", 32)
    meta = tmp_path / "lra" / "lra-retrieval-32-0-v1" / "meta.json"
    meta.write_text('{"files": ')  # cut short
    with pytest.raises(AttnlabError, match=r"meta\.json is corrupt; delete"):
        lra.load_lra("lra-retrieval", 32)
    meta.write_text('{"name": "lra-retrieval"}')  # no checksums
    with pytest.raises(AttnlabError, match=r"meta\.json is corrupt; delete"):
        lra.load_lra("lra-retrieval", 32)
