import json

import pytest
import torch

from attnlab.errors import AttnlabError
from attnlab.models import GPT, GPTConfig
from attnlab.train.checkpoint import (
    load_checkpoint,
    load_model_weights,
    resolve,
    save_checkpoint,
)
from attnlab.train.optim import build_optimizer


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**dict(vocab_size=13, d_model=16, n_heads=2, n_layers=1, max_len=8),
                            **kw}))


def trained_pair():
    model = tiny()
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1)
    x = torch.randint(13, (2, 8))
    model(x).sum().backward()
    opt.step()
    return model, opt


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model, opt = trained_pair()
    rng = {"torch": torch.get_rng_state(), "data": torch.Generator().manual_seed(5).get_state()}
    save_checkpoint(tmp_path / "last", model, opt, {"step": 7}, rng)
    assert sorted(p.name for p in (tmp_path / "last").iterdir()) == [
        "model.safetensors", "optimizer.safetensors", "trainer.json"]
    other = tiny(seed=1)
    other_opt = build_optimizer(other, lr=1e-2, weight_decay=0.1)
    state, rng2 = load_checkpoint(tmp_path / "last", other, other_opt)
    assert state["step"] == 7
    for (n, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), n
    assert other.head.weight is other.tok_emb.weight  # tying survives loading
    sa, sb = opt.state_dict(), other_opt.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for i, st in sa["state"].items():
        for key, value in st.items():
            assert torch.equal(value, sb["state"][i][key])
    assert torch.equal(rng2["torch"], rng["torch"]) and torch.equal(rng2["data"], rng["data"])


def test_interrupted_swap_falls_back_to_the_previous_checkpoint(tmp_path):
    model, opt = trained_pair()
    save_checkpoint(tmp_path / "last", model, opt, {"step": 1})
    # a kill between the two renames: last moved to last.old, last.tmp not yet renamed
    (tmp_path / "last").rename(tmp_path / "last.old")
    assert resolve(tmp_path / "last") == tmp_path / "last.old"
    state, _ = load_checkpoint(tmp_path / "last", tiny(seed=3))
    assert state["step"] == 1
    save_checkpoint(tmp_path / "last", model, opt, {"step": 2})  # next save heals the layout
    assert resolve(tmp_path / "last") == tmp_path / "last"
    assert not (tmp_path / "last.old").exists() and not (tmp_path / "last.tmp").exists()


def test_corrupt_truncated_and_mismatched_weights_are_one_line_errors(tmp_path):
    model, opt = trained_pair()
    save_checkpoint(tmp_path / "ck", model, opt, {"step": 1})
    weights = tmp_path / "ck" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(AttnlabError, match="truncated or corrupt") as info:
        load_model_weights(tiny(), weights)
    assert "\n" not in str(info.value)
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(AttnlabError, match="not a readable safetensors"):
        load_model_weights(tiny(), weights)
    save_checkpoint(tmp_path / "ck2", tiny(d_model=32), None, {"step": 0})
    with pytest.raises(AttnlabError, match="has shape"):
        load_model_weights(tiny(), tmp_path / "ck2" / "model.safetensors")
    save_checkpoint(tmp_path / "ck3", tiny(n_layers=2), None, {"step": 0})
    with pytest.raises(AttnlabError, match="does not hold this model's weights"):
        load_model_weights(tiny(), tmp_path / "ck3" / "model.safetensors")
    with pytest.raises(AttnlabError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing", tiny())


def test_a_checkpoint_without_a_fitting_optimizer_state_is_not_resumed(tmp_path):
    from safetensors.torch import load_file, save_file

    model, opt = trained_pair()
    save_checkpoint(tmp_path / "ck", model, opt, {"step": 3})
    saved = tmp_path / "ck" / "optimizer.safetensors"
    tensors = load_file(saved)

    def fresh():
        m = tiny(seed=1)
        return m, build_optimizer(m, lr=1e-2, weight_decay=0.1)

    # the weights alone load; a resume (with an optimizer) needs the optimizer's state
    assert load_checkpoint(tmp_path / "ck", tiny(seed=1))[0]["step"] == 3
    saved.unlink()
    with pytest.raises(AttnlabError, match="holds no optimizer state"):
        load_checkpoint(tmp_path / "ck", *fresh())
    key = next(k for k, v in tensors.items() if v.dim() == 2)
    save_file({**tensors, key: tensors[key][:1]}, str(saved))  # one moment cut short
    with pytest.raises(AttnlabError, match=r"has shape \(1, .* the checkpoint is damaged"):
        load_checkpoint(tmp_path / "ck", *fresh())
    save_file({k: v for k, v in tensors.items() if k != key}, str(saved))  # one moment gone
    with pytest.raises(AttnlabError, match="optimizer states hold different entries"):
        load_checkpoint(tmp_path / "ck", *fresh())
    save_file(tensors, str(saved))
    meta = json.loads((tmp_path / "ck" / "trainer.json").read_text())
    meta["optimizer"]["param_groups"] = meta["optimizer"]["param_groups"][:1]  # a group lost
    (tmp_path / "ck" / "trainer.json").write_text(json.dumps(meta))
    with pytest.raises(AttnlabError, match="does not hold this run's optimizer state"):
        load_checkpoint(tmp_path / "ck", *fresh())
    (tmp_path / "ck" / "trainer.json").write_text("{}")
    with pytest.raises(AttnlabError, match=r"trainer\.json is corrupt"):
        load_checkpoint(tmp_path / "ck", tiny())
