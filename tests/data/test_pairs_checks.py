"""attnlab.data.pairs: small TSV files still hold out one pair
each for validation and test, and a prepared cache is trusted only while its checksum and pins
match."""

import json

from attnlab.data import pairs
from attnlab.data.pairs import PairDataset, load_pairs, pairs_path, prepare_pairs


def test_a_small_tsv_still_holds_out_one_pair_each(tmp_path):
    path = tmp_path / "small.tsv"
    path.write_text("".join(f"s{i}\tt{i}\n" for i in range(5)))
    a = load_pairs(str(path))
    assert (len(a.train), len(a.val), len(a.test)) == (3, 1, 1)
    assert sorted(a.train + a.val + a.test) == [(f"s{i}", f"t{i}") for i in range(5)]


def _toy(monkeypatch, calls, texts, pins=("p1",)):
    def build(quiet):
        calls.append(1)
        return [(f"{i:03d}", s, s.upper()) for i, s in enumerate(texts)][::-1]  # unsorted

    ds = PairDataset("toy-pairs", "toy", "here", "CC0", build, tuple(pins), ("bleu",), "copy",
                     pairs.copy_source, val_size=1, test_size=1)
    monkeypatch.setitem(pairs.PAIR_DATASETS, ds.name, ds)
    return ds


def test_prepared_pairs_are_cached_sorted_and_rebuilt_when_damaged_or_repinned(monkeypatch):
    calls: list[int] = []
    _toy(monkeypatch, calls, ["a", "b", "c", "d"])
    path = prepare_pairs("toy-pairs", quiet=True)
    ids = [json.loads(line)[0] for line in path.read_text().splitlines()]
    assert ids == sorted(ids) and len(ids) == 4  # sorted by id, whatever the build order
    assert prepare_pairs("toy-pairs", quiet=True) == path and len(calls) == 1  # cached
    path.write_text(path.read_text().replace('"a"', '"z"'))  # damaged: rebuilt
    prepare_pairs("toy-pairs", quiet=True)
    assert len(calls) == 2 and '"z"' not in path.read_text()
    _toy(monkeypatch, calls, ["a", "b", "c", "d"], pins=("p2",))  # new pins: rebuilt
    prepare_pairs("toy-pairs", quiet=True)
    assert len(calls) == 3
    assert json.loads(pairs_path("toy-pairs").with_suffix(".json").read_text())["pins"] == ["p2"]


def test_summarization_keeps_descriptions_of_exactly_min_words(monkeypatch, _attnlab_home):
    import hashlib

    from attnlab.data import debian, summarization
    from attnlab.data.debian import DebianIndex

    text = ("Package: five\nDescription-md5: e1\nDescription-en: five words\n"
            " one two three four five\n\n"
            "Package: four\nDescription-md5: e2\nDescription-en: four words\n"
            " one two three four\n")
    data = text.encode()
    pin = DebianIndex("bookworm", "main/i18n/Translation-en", hashlib.sha256(data).hexdigest())
    (_attnlab_home / "downloads").mkdir(parents=True, exist_ok=True)
    (_attnlab_home / "downloads" / pin.archive).write_bytes(data)
    monkeypatch.setattr(summarization, "TRANSLATION_EN", pin)
    monkeypatch.setattr(debian.shutil, "which", lambda tool: None)
    assert summarization.MIN_WORDS == 5
    assert [m for m, _, _ in summarization._build(True)] == ["e1"]


def test_a_description_record_without_md5_is_an_error():
    import pytest

    from attnlab.data.summarization import parse_descriptions
    from attnlab.errors import AttnlabError

    with pytest.raises(AttnlabError, match="has no Description-md5"):
        parse_descriptions("Package: x\nDescription-en: synopsis\n a long text here\n")


def test_a_tsv_file_named_like_a_dataset_is_read_as_the_file(tmp_path, monkeypatch):
    from attnlab.data import debian

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(debian.shutil, "which", lambda tool: None)  # never fetch
    (tmp_path / "kjv-rv1909").write_text("".join(f"s{i}\tt{i}\n" for i in range(10)))
    got = load_pairs("kjv-rv1909")
    assert len(got.train) + len(got.val) + len(got.test) == 10 and got.metrics == ("bleu", "rouge")


def test_blank_lines_in_a_tsv_are_skipped(tmp_path):
    path = tmp_path / "gaps.tsv"
    path.write_text("".join(f"s{i}\tt{i}\n\n" for i in range(10)) + "   \n")
    got = load_pairs(str(path))
    assert sorted(got.train + got.val + got.test) == sorted((f"s{i}", f"t{i}") for i in range(10))


def _ztext(tmp_path):
    from tests.data.test_pairs import EN, bible, write_ztext

    write_ztext(tmp_path / "m", "ot", bible(EN))
    return tmp_path / "m"


def test_an_index_entry_naming_a_block_past_the_end_is_one_clear_error(tmp_path):
    import struct

    import pytest

    from attnlab.data.translation import read_ztext
    from attnlab.errors import AttnlabError

    folder = _ztext(tmp_path)
    n_blocks = len((folder / "ot.bzs").read_bytes()) // 12
    bzv = bytearray((folder / "ot.bzv").read_bytes())
    bzv[-10:] = struct.pack("<IIH", n_blocks, 0, 3)  # the block just past the last one
    (folder / "ot.bzv").write_bytes(bytes(bzv))
    with pytest.raises(AttnlabError, match=f"ot.bzv names block {n_blocks} of {n_blocks}"):
        read_ztext(folder, "ot")


def test_an_unreadable_module_file_is_one_clear_error(tmp_path):
    import pytest

    from attnlab.data.translation import read_ztext
    from attnlab.errors import AttnlabError

    folder = _ztext(tmp_path)
    (folder / "ot.bzz").unlink()
    (folder / "ot.bzz").mkdir()  # not a file: IsADirectoryError, an OSError
    with pytest.raises(AttnlabError, match="not a zText module at"):
        read_ztext(folder, "ot")
