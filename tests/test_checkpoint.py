"""Checkpoint folders: exact round trips, atomic writes, and clear errors for damaged ones."""

import json

import pytest
import torch
from safetensors.torch import load_file

from model import ModelArgs, Transformer
from model import checkpoint as ckpt

ARGS = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, multiple_of=16, max_seq_len=32)


def make_model(**overrides) -> tuple[Transformer, dict]:
    torch.manual_seed(0)
    args = ModelArgs(**{**ARGS, **overrides})
    return Transformer(args), {"model": args.to_dict(), "train": {"lr": 1e-3}}


@pytest.mark.parametrize("tie", [True, False])
def test_round_trip_is_bit_exact(tmp_path, tie):
    model, config = make_model(tie_embeddings=tie)
    ckpt.save(tmp_path / "c", model.state_dict(), config)
    loaded, loaded_config = ckpt.load_model(tmp_path / "c")
    assert loaded_config == config
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert (loaded.output.weight is loaded.tok_embeddings.weight) == tie
    stored = load_file(tmp_path / "c" / "model.safetensors")
    assert ("output.weight" in stored) == (not tie)


def test_a_run_folder_resolves_to_its_latest_checkpoint_and_prunes_old_ones(tmp_path):
    model, config = make_model()
    for step in (10, 20, 30):
        ckpt.save(ckpt.step_folder(tmp_path, step), model.state_dict(), config, train_state={"step": step})
    assert ckpt.resolve(tmp_path).name == "step_0000030"
    ckpt.prune(tmp_path, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_0000020", "step_0000030"]


def test_a_crash_during_a_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, config = make_model()
    ckpt.save(ckpt.step_folder(tmp_path, 1), model.state_dict(), config)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process were stopped mid-write

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(ckpt.step_folder(tmp_path, 2), model.state_dict(), config)
    with pytest.raises(KeyboardInterrupt):  # overwriting an existing folder is atomic too
        ckpt.save(ckpt.step_folder(tmp_path, 1), model.state_dict(), config)
    assert ckpt.resolve(tmp_path).name == "step_0000001"
    ckpt.load_model(tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000001"]


def test_optimizer_and_train_state_round_trip(tmp_path):
    model, config = make_model()
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    ckpt.save(tmp_path / "c", model.state_dict(), config, optimizer_state=opt.state_dict(), train_state={"step": 7})
    state = ckpt.load_optimizer_state(tmp_path / "c")
    assert torch.equal(state["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert ckpt.load_train_state(tmp_path / "c") == {"step": 7}


def test_damaged_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.resolve(tmp_path / "nowhere")
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint in"):
        ckpt.resolve(tmp_path)

    model, config = make_model()
    folder = ckpt.save(tmp_path / "c", model.state_dict(), config)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ckpt.CheckpointError, match="corrupt or truncated"):
        ckpt.load_model(folder)

    ckpt.save(folder, model.state_dict(), {"model": {**config["model"], "dim": 64}})
    with pytest.raises(ckpt.CheckpointError, match="does not fit its config.json"):
        ckpt.load_model(folder)

    (folder / "config.json").write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="not a valid checkpoint config"):
        ckpt.load_model(folder)
    with pytest.raises(ckpt.CheckpointError, match="cannot be resumed"):
        ckpt.load_optimizer_state(folder)
    (folder / "optimizer.pt").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ckpt.CheckpointError, match="corrupt"):
        ckpt.load_optimizer_state(folder)


def test_overrides_change_only_what_they_name(tmp_path):
    model, config = make_model()
    ckpt.save(tmp_path / "c", model.state_dict(), config)
    longer, _ = ckpt.load_model(tmp_path / "c", max_seq_len=128, max_batch_size=2)
    assert longer.args.max_seq_len == 128 and longer.rope.cos.shape[0] == 128
    tokens = torch.randint(0, 50, (1, 20))
    with torch.no_grad():
        assert torch.allclose(longer(tokens), model.eval()(tokens), atol=1e-6)
    assert json.loads((tmp_path / "c" / "config.json").read_text()) == config
