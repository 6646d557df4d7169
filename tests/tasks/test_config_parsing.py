"""`--set` parsing and the RunConfig it builds: typed values, nesting conflicts, deep merging
into a recipe, and which model fields count as given."""

import pytest

from attnlab.errors import AttnlabError
from attnlab.tasks.config import (
    RunConfig,
    load_run_config,
    parse_overrides,
    read_recipe,
    read_value,
)


def test_set_values_keep_their_types():
    for raw, value, kind in (("4", 4, int), ("-2", -2, int), ("3e-4", 3e-4, float),
                             ("1.0", 1.0, float), ("true", True, bool), ("x", "x", str),
                             ("[1, 2]", [1, 2], list), ("null", None, type(None))):
        got = read_value(raw, "k")
        assert got == value and type(got) is kind, (raw, got)


def test_a_key_cannot_be_both_a_value_and_a_section():
    for pairs in (["a=1", "a.b=2"], ["train=1", "train.lr=0.1"]):
        with pytest.raises(AttnlabError, match="is already set to a value"):
            parse_overrides(pairs)
    for bad in ("=5", "train.lr", ""):
        with pytest.raises(AttnlabError, match=f"--set takes key=value, got '{bad}'"):
            parse_overrides([bad])


def test_set_changes_one_field_of_a_recipe_and_keeps_the_rest():
    recipe = read_recipe("gpt-char")
    base = load_run_config("gpt-char")
    cfg = load_run_config("gpt-char", ["train.lr=0.5", "model.n_layers=3"])
    assert cfg.train.lr == 0.5 and cfg.model.n_layers == 3
    assert cfg.train.max_steps == base.train.max_steps == recipe["train"]["max_steps"]
    assert cfg.model.d_model == base.model.d_model == recipe["model"]["d_model"]
    assert cfg.given == frozenset(recipe["model"]) | {"n_layers"}
    assert RunConfig.from_dict({"model": {"d_model": 64}}).given == {"d_model"}
    assert RunConfig.from_dict({}).given == frozenset()


def test_a_config_json_is_read_as_json(tmp_path):
    """A JSON file is JSON, not YAML: YAML would take what JSON refuses (a tab indent is fine in
    JSON and an error in YAML; a duplicate key the other way round is not the point here)."""
    saved = tmp_path / "run.json"
    saved.write_text('{\n\t"train": {"lr": 0.25}\n}')  # a tab: JSON whitespace, not YAML's
    assert load_run_config(str(saved)).train.lr == 0.25
