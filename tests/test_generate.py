"""Sampling through the KV cache: the same tokens as recomputing everything, batch or alone."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

import generate as generate_script
import train
from data.tokenizer import Tokenizer
from model import ModelArgs, Transformer
from model import checkpoint as ckpt
from model.sampling import generate, generate_tokens, sample_next
from tests.conftest import REPO


@pytest.fixture(scope="module")
def tokenizer(sample_data) -> Tokenizer:
    return Tokenizer(f"{sample_data.dir}/tokenizer.model")


def random_model(seed=0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    args = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=1024, max_seq_len=96, max_batch_size=4)
    return Transformer(ModelArgs(**{**args, **overrides})).eval()


def greedy_without_cache(model, tokenizer, prompt: str, steps: int) -> list[int]:
    """The reference: run the whole sequence again for every new token."""
    ids = [tokenizer.bos_id] + tokenizer.encode(prompt)
    new = []
    with torch.no_grad():
        for _ in range(steps):
            new.append(model(torch.tensor([ids + new]))[0, -1].argmax().item())
    return new


@pytest.mark.parametrize("pos_embedding", ["rope", "learned", "sinusoidal"])
def test_greedy_through_the_cache_equals_recomputing_everything(tokenizer, pos_embedding):
    model = random_model(pos_embedding=pos_embedding)
    prompt = "Once upon a time, there was a little girl"
    [result] = generate(model, tokenizer, [prompt], max_new_tokens=30, temperature=0, stop_at_eos=False)
    assert result.tokens == greedy_without_cache(model, tokenizer, prompt, 30)
    assert result.stop == "max_new_tokens"


def test_the_static_decode_step_gives_the_same_tokens(tokenizer):
    model = random_model()
    prompts = ["Tom had a red ball.", "The sun"]
    expected = [r.tokens for r in generate(model, tokenizer, prompts, 25, temperature=0, stop_at_eos=False)]
    model.use_static_decode(compile=False)
    assert [r.tokens for r in generate(model, tokenizer, prompts, 25, temperature=0, stop_at_eos=False)] == expected


@pytest.mark.compile
def test_the_compiled_cpu_decode_step_gives_the_same_logits_and_tokens(tokenizer):
    model, compiled = random_model(), random_model()
    compiled.compile_decode()
    tokens = torch.randint(3, 1024, (3, 40))
    with torch.inference_mode():
        for m in (model, compiled):
            m.reset_cache(3)
        for pos in range(8, 40):
            chunk, start = (tokens[:, :8], 0) if pos == 8 else (tokens[:, pos - 1 : pos], pos - 1)
            torch.testing.assert_close(compiled(chunk, start), model(chunk, start), rtol=1e-5, atol=1e-5)
    prompts = ["Tom had a red ball.", "The sun"]
    expected = [r.tokens for r in generate(model, tokenizer, prompts, 40, temperature=0, stop_at_eos=False)]
    assert [r.tokens for r in generate(compiled, tokenizer, prompts, 40, temperature=0, stop_at_eos=False)] == expected


def test_a_batch_of_different_lengths_equals_each_prompt_alone(tokenizer):
    model = random_model()
    prompts = ["Hi", "Once upon a time, in a big forest, there lived", "The dog ran"]
    batch = generate(model, tokenizer, prompts, max_new_tokens=20, temperature=0, stop_at_eos=False)
    for prompt, result in zip(prompts, batch, strict=True):
        [alone] = generate(model, tokenizer, [prompt], max_new_tokens=20, temperature=0, stop_at_eos=False)
        assert result.tokens == alone.tokens


class AlwaysEos(Transformer):
    """A model that prefers eos everywhere."""

    def forward(self, tokens, start_pos=None):
        logits = super().forward(tokens, start_pos)
        logits[..., 2] += 100.0
        return logits


class EosInRowZero(Transformer):
    """A model whose first row prefers eos (id 2) everywhere; it counts its forward passes."""

    calls = 0

    def forward(self, tokens, start_pos=None):
        self.calls += 1
        logits = super().forward(tokens, start_pos)
        logits[0, :, 2] += 100.0
        return logits


def test_decoding_ends_once_every_row_is_done():
    plain = random_model()
    model = EosInRowZero(plain.args).eval()
    model.load_state_dict(plain.state_dict())
    # row 0 says eos at once; row 1 needs all its 10 tokens (the eos inside its prompt does not end it)
    says_eos, long_prompt = [3, 4], [5, 2, *range(6, 24)]
    [(first, why_first), (second, why_second)] = generate_tokens(model, [says_eos, long_prompt], 10, 0, eos_id=2)
    assert (first, why_first) == ([], "eos") and why_second == "max_new_tokens"
    assert [(second, why_second)] == generate_tokens(plain, [long_prompt], 10, 0, eos_id=2)
    # row 0 says eos at position 20 and row 1 is done at 12: no need to go on to position 29
    model.calls = 0
    generate_tokens(model, [list(range(3, 23)), [5, 6]], 10, 0, eos_id=2)
    assert model.calls < 28


def test_rows_stop_at_eos_and_at_max_seq_len(tokenizer):
    model = random_model(max_seq_len=24)
    [long] = generate(model, tokenizer, ["a b c"], max_new_tokens=100, temperature=0, stop_at_eos=False)
    assert long.stop == "max_seq_len" and len(long.prompt_tokens) + len(long.tokens) == 24
    torch.manual_seed(0)
    eager = AlwaysEos(model.args).eval()
    short = generate(eager, tokenizer, ["a b c", "a much longer prompt than that"], max_new_tokens=10, temperature=0)
    assert [(r.stop, r.tokens, r.text) for r in short] == [("eos", [], "")] * 2


def test_same_seed_same_text_and_top_k_one_is_greedy(tokenizer):
    model = random_model()
    a = generate(model, tokenizer, ["Lily"], 30, temperature=1.0, seed=7, stop_at_eos=False)[0].tokens
    b = generate(model, tokenizer, ["Lily"], 30, temperature=1.0, seed=7, stop_at_eos=False)[0].tokens
    c = generate(model, tokenizer, ["Lily"], 30, temperature=1.0, seed=8, stop_at_eos=False)[0].tokens
    assert a == b and a != c
    greedy = generate(model, tokenizer, ["Lily"], 30, temperature=0, stop_at_eos=False)[0].tokens
    assert (
        generate(model, tokenizer, ["Lily"], 30, temperature=1.3, top_k=1, seed=3, stop_at_eos=False)[0].tokens
        == greedy
    )


@pytest.mark.parametrize(
    "top_p, allowed", [(0.5, {0}), (0.7, {0, 1}), (0.8, {0, 1}), (0.81, {0, 1, 2}), (1.0, {0, 1, 2, 3})]
)
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, allowed):
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64)
    logits = probs.log().repeat(4000, 1)
    drawn = sample_next(logits, top_p=top_p, generator=torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == allowed
    kept = probs[0, sorted(allowed)]
    for token in allowed:  # the kept tokens keep their relative odds
        assert abs((drawn == token).double().mean() - probs[0, token] / kept.sum()) < 0.03


def test_top_k_keeps_the_k_most_likely():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0, -1.0]]).repeat(2000, 1)
    drawn = sample_next(logits, temperature=1.0, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {0, 2}


@pytest.fixture(scope="module")
def trained_run(sample_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "run"
    argv = ["--config", str(REPO / "configs" / "ci.toml"), "--out", str(out), "--quiet",
            "--data.source", sample_data.source, "--data.dir", sample_data.dir]  # fmt: skip
    assert train.main(argv) == 0
    return out


def run_generate(*args, stdin=None, env=None):
    return subprocess.run(
        [sys.executable, "generate.py", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=180,
        env=None if env is None else {**os.environ, **env},
    )


def test_generate_script_end_to_end(trained_run):
    result = run_generate(trained_run, "--prompt", "Once upon a time", "--max-new-tokens", "20", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Once upon a time") and len(result.stdout) > len("Once upon a time") + 10
    assert "prompt tokens" in result.stderr and "tokens/s" in result.stderr and "first token after" in result.stderr
    again = run_generate(trained_run, "--prompt", "Once upon a time", "--max-new-tokens", "20", "--seed", "1")
    assert again.stdout == result.stdout


def test_generate_script_batches_prompts_from_stdin(trained_run):
    result = run_generate(trained_run, "--max-new-tokens", "8", "--temperature", "0", stdin="Tom\nThe cat sat\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("Tom") and lines[1].startswith("The cat sat")


def test_generate_in_process_matches_the_library(trained_run, capsys):
    assert (
        generate_script.main([str(trained_run), "--prompt", "Lily", "--temperature", "0", "--max-new-tokens", "12"])
        == 0
    )
    model, _ = ckpt.load_model(trained_run)
    tok = Tokenizer(ckpt.resolve(trained_run) / "tokenizer.model")
    [expected] = generate(model, tok, ["Lily"], 12, temperature=0)
    assert capsys.readouterr().out.strip() == ("Lily" + expected.text).strip()


@pytest.mark.compile
def test_generate_script_compiled_on_cpu(trained_run, tmp_path):
    args = (trained_run, "--prompt", "Tom", "--prompt", "The cat sat", "--max-new-tokens", "30", "--temperature", "0")
    compiled = run_generate(*args, "--compile")
    assert compiled.returncode == 0, compiled.stderr
    assert "decode step compiled in" in compiled.stderr
    assert compiled.stdout == run_generate(*args).stdout
    no_compiler = run_generate(
        *args, "--compile", env={"CXX": "/nonexistent", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    )
    assert no_compiler.returncode == 2 and "Traceback" not in no_compiler.stderr
    assert (
        no_compiler.stderr.startswith("error: torch.compile could not build") and "--no-compile" in no_compiler.stderr
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--top-p", "0"], "top_p must be in (0, 1]"),
        (["--top-p", "1.5"], "top_p must be in (0, 1]"),
        (["--top-k", "-2"], "top_k must be >= 0"),
        (["--device", "tpu"], "--device must be cuda, mps, cpu or auto"),
        (["--prompt", "once upon a time " * 40], "leaves no room in max_seq_len=64"),
    ],
)
def test_bad_generation_input_gets_one_clear_line(trained_run, extra, message):
    result = run_generate(trained_run, *extra)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr and "Traceback" not in result.stderr


def test_missing_or_damaged_checkpoints(trained_run, tmp_path):
    assert "does not exist" in run_generate(tmp_path / "nowhere").stderr
    assert "no checkpoint in" in run_generate(tmp_path).stderr
    broken = tmp_path / "broken"
    folder = ckpt.resolve(trained_run)
    shutil.copytree(folder, broken)
    (broken / "tokenizer.model").unlink()
    result = run_generate(broken, "--prompt", "x")
    assert result.returncode == 2 and "tokenizer.model is missing" in result.stderr
    shutil.copy(folder / "tokenizer.model", broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 10)
    result = run_generate(broken, "--prompt", "x")
    assert result.returncode == 2 and "corrupt or truncated" in result.stderr and "Traceback" not in result.stderr
