"""attnlab.data.series: split points round both fractions to the
nearest step (not down)."""

from attnlab.data.series import split_points


def test_split_points_round_to_the_nearest_step():
    # 452 steps: test round(90.4) = 90, val round(67.8) = 68 (a floor would give 67)
    assert split_points(452, 0.15) == (452 - 90 - 68, 452 - 90)
    # 37 steps: test round(7.4) = 7, val round(5.55) = 6
    assert split_points(37, 0.15) == (37 - 7 - 6, 37 - 7)


def test_an_existing_file_of_any_suffix_is_read(tmp_path):
    from attnlab.data.series import load_series

    path = tmp_path / "numbers.dat"
    path.write_text("1\n2.5\n4\n")
    s = load_series(str(path), season=2)
    assert s.values.tolist() == [1.0, 2.5, 4.0] and s.season == 2
