"""train.py end to end on the TinyStories sample: it learns, resumes exactly, runs distributed,
and answers user mistakes with one clear line."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import train
from model import checkpoint as ckpt
from tests.conftest import REPO


def base_args(sample_data, out) -> list[str]:
    return [
        "--config", str(REPO / "configs" / "ci.toml"), "--out", str(out), "--quiet",
        "--data.source", sample_data.source, "--data.dir", sample_data.dir,
    ]  # fmt: skip


def rows(run_dir, key="loss") -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r[key] for r in map(json.loads, lines) if key in r}


def test_the_loss_falls_and_a_checkpoint_is_written(sample_data, tmp_path):
    assert train.main(base_args(sample_data, tmp_path / "run")) == 0
    losses, val = rows(tmp_path / "run"), rows(tmp_path / "run", "val_loss")
    assert sorted(losses) == list(range(1, 41))
    assert abs(losses[1] - 6.93) < 0.1  # ln(1024): an untrained model guesses uniformly
    assert val[40] < losses[1] - 1.0
    samples = rows(tmp_path / "run", "sample")
    assert set(samples) == {20, 40} and samples[40].startswith("Once upon a time")
    model, config = ckpt.load_model(tmp_path / "run")
    assert config["train"]["max_steps"] == 40 and model.args.dim == 64
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["step_0000020", "step_0000040"]
    assert ckpt.load_train_state(ckpt.resolve(tmp_path / "run"))["tokens"] == 40 * 8 * 64


def test_gradient_accumulation_equals_the_larger_batch(sample_data, tmp_path):
    one = ["--train.max_steps", "5", "--train.batch_size", "8"]
    assert train.main(base_args(sample_data, tmp_path / "big") + one) == 0
    two = ["--train.max_steps", "5", "--train.batch_size", "4", "--train.tokens_per_step", str(8 * 64)]
    assert train.main(base_args(sample_data, tmp_path / "accum") + two) == 0
    big, accum = rows(tmp_path / "big"), rows(tmp_path / "accum")
    assert all(abs(big[s] - accum[s]) < 1e-5 for s in big)


def test_resume_after_a_signal_is_exact(sample_data, tmp_path):
    steps = ["--train.max_steps", "150", "--train.eval_interval", "50", "--train.ckpt_interval", "50"]
    assert train.main(base_args(sample_data, tmp_path / "whole") + steps) == 0

    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "train.py", *base_args(sample_data, interrupted), *steps], cwd=REPO)
    deadline = time.time() + 120
    while time.time() < deadline and len(rows(interrupted) if (interrupted / "metrics.jsonl").exists() else {}) < 20:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    stopped_at = ckpt.load_train_state(ckpt.resolve(interrupted))["step"]
    assert 20 <= stopped_at < 150, "the run should have stopped early, on the signal"

    assert train.main(base_args(sample_data, interrupted) + ["--resume"]) == 0
    whole, resumed = rows(tmp_path / "whole"), rows(interrupted)
    assert sorted(resumed) == list(range(1, 151))
    assert resumed == whole  # bit for bit: same data, same schedule, same optimizer state
    assert rows(interrupted, "val_loss")[150] == rows(tmp_path / "whole", "val_loss")[150]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_equal_one_with_the_doubled_batch(sample_data, tmp_path, parallel):
    steps = ["--train.max_steps", "6", "--train.eval_interval", "6", "--train.sample_tokens", "0"]
    assert train.main(base_args(sample_data, tmp_path / "one") + steps + ["--train.batch_size", "8"]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py"]
    two_args = (
        base_args(sample_data, tmp_path / "two") + steps + ["--train.batch_size", "4", "--train.parallel", parallel]
    )
    result = subprocess.run(
        command + two_args,
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert sorted(two) == list(range(1, 7))
    assert all(abs(one[s] - two[s]) < 1e-4 for s in one), (one, two)
    model, _ = ckpt.load_model(tmp_path / "two")  # rank 0 gathered a full checkpoint
    assert model.num_params() == ckpt.load_model(tmp_path / "one")[0].num_params()


def test_init_from_starts_from_trained_weights(sample_data, tmp_path):
    assert train.main(base_args(sample_data, tmp_path / "first")) == 0
    args = base_args(sample_data, tmp_path / "second") + [
        "--train.init_from",
        str(tmp_path / "first"),
        "--train.max_steps",
        "3",
    ]
    assert train.main(args) == 0
    assert rows(tmp_path / "second")[1] < rows(tmp_path / "first")[1] - 0.8


def test_a_diverging_run_stops_naming_the_step(sample_data, tmp_path, capsys):
    args = base_args(sample_data, tmp_path / "run") + [
        "--train.lr",
        "1e6",
        "--train.warmup_steps",
        "0",
        "--train.grad_clip",
        "0",
    ]
    assert train.main(args + ["--train.ckpt_interval", "1", "--train.min_lr", "0"]) == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("error: the loss is nan at step ") or message.startswith(
        "error: the loss is inf at step "
    )
    step = int(message.split(" at step ")[1].split(";")[0])
    assert f"step_{step:07d} is the last good checkpoint" in message
    ckpt.load_model(ckpt.step_folder(tmp_path / "run", step))  # intact


def run_for_error(argv, capsys) -> str:
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--config", "nowhere.toml"], "config file nowhere.toml does not exist"),
        (["--train.learning_rate", "1"], "unknown key train.learning_rate; valid keys in [train]: batch_size"),
        (["--model.dim", "wide"], "model.dim must be an integer, got 'wide'"),
        (["--model.vocab_size", "2000"], "model.vocab_size=2000 but the tokenizer has 1024 tokens"),
        (["--train.tokens_per_step", "1000"], "train.tokens_per_step=1000 is not a multiple of"),
        (["--model.max_seq_len", "2000000"], "lower --model.max_seq_len"),
        (["--device", "tpu"], "--device must be cuda, mps, cpu or auto"),
        (["--resume"], "--resume: no checkpoint in"),
        (["--model.n_heads", "5"], "dim (64) must be divisible by n_heads (5)"),
    ],
)
def test_user_mistakes_get_one_clear_line(sample_data, tmp_path, capsys, extra, message):
    assert message in run_for_error(base_args(sample_data, tmp_path / "run") + extra, capsys)


def test_data_missing_with_no_network(tmp_path, capsys):
    args = [
        "--config",
        str(REPO / "configs" / "ci.toml"),
        "--out",
        str(tmp_path / "r"),
        "--data.dir",
        str(tmp_path / "d"),
    ]
    assert "cannot reach the Hugging Face hub" in run_for_error(args, capsys)


def test_a_run_folder_is_never_overwritten_by_accident(sample_data, tmp_path, capsys):
    args = base_args(sample_data, tmp_path / "run") + ["--train.max_steps", "2"]
    assert train.main(args) == 0
    assert "pass --resume to continue it, --overwrite to start over" in run_for_error(args, capsys)
    assert train.main(args + ["--overwrite", "--train.max_steps", "1", "--train.ckpt_interval", "1"]) == 0
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["step_0000001"]


def test_the_script_exits_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "--config", str(tmp_path / "missing.toml")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: config file") and "Traceback" not in result.stderr


def test_a_compile_failure_is_one_line_that_names_the_way_around(sample_data, tmp_path):
    """torch.compile on a CPU needs a C++ compiler; without one the run stops before its first step."""
    result = subprocess.run(
        [sys.executable, "train.py", *base_args(sample_data, tmp_path / "run"), "--train.compile", "true"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "CXX": "/nonexistent", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: torch.compile could not build the training step")
    assert "--train.compile false" in result.stderr
    assert ckpt.list_checkpoints(tmp_path / "run") == []
