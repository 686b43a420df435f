"""Interop: Hugging Face's LlamaForCausalLM must compute what our model computes, llama2.c files
must parse back to our tensors, and imports must be exact."""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

import export
from data.tokenizer import Tokenizer
from model import ModelArgs, Transformer
from model import checkpoint as ckpt
from model.sampling import generate
from tests.conftest import REPO

transformers = pytest.importorskip("transformers")


def make_checkpoint(folder, tokenizer_file, seed=0, **overrides):
    torch.manual_seed(seed)
    args = ModelArgs(
        **{**dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=1024, max_seq_len=64), **overrides}
    )
    model = Transformer(args).eval()
    for name, p in model.named_parameters():
        if "norm" in name:
            p.data.uniform_(0.5, 1.5)
    ckpt.save(folder, model.state_dict(), {"model": args.to_dict()}, tokenizer_file)
    return model


@pytest.fixture(scope="module")
def tokenizer_file(sample_data):
    return f"{sample_data.dir}/tokenizer.model"


@pytest.mark.parametrize("tie", [True, False])
def test_hugging_face_computes_the_same_logits(tmp_path, tokenizer_file, tie):
    ours = make_checkpoint(tmp_path / "c", tokenizer_file, tie_embeddings=tie, rope_theta=500.0)
    assert export.main([str(tmp_path / "c"), "--to", "hf", "--out", str(tmp_path / "hf"), "--quiet"]) == 0
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    for length in (1, 7, 40):
        tokens = torch.randint(0, 1024, (2, length))
        with torch.no_grad():
            expected, got = ours(tokens), hf(tokens).logits
        assert (got - expected).norm() / expected.norm() < 1e-5, length
    tok = Tokenizer(tokenizer_file)
    prompt = "Once upon a time, there was a cat"
    [mine] = generate(ours, tok, [prompt], 20, temperature=0, stop_at_eos=False)
    ids = torch.tensor([mine.prompt_tokens])
    theirs = hf.generate(ids, max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=0)
    assert theirs[0, ids.shape[1] :].tolist() == mine.tokens


def test_the_exported_tokenizer_encodes_like_ours(tmp_path, tokenizer_file):
    make_checkpoint(tmp_path / "c", tokenizer_file)
    assert export.main([str(tmp_path / "c"), "--to", "hf", "--out", str(tmp_path / "hf"), "--quiet"]) == 0
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = Tokenizer(tokenizer_file)
    paragraph = 'Once upon a time, Lily found 12 red apples.\nShe said: "Wow!" and ran  home — happy.'
    assert theirs(paragraph)["input_ids"] == ours.encode(paragraph, bos=True)
    assert theirs.decode(ours.encode(paragraph), skip_special_tokens=True) == paragraph


def test_import_of_an_export_is_bit_exact(tmp_path, tokenizer_file):
    make_checkpoint(tmp_path / "c", tokenizer_file, tie_embeddings=False, n_kv_heads=1)
    assert export.main([str(tmp_path / "c"), "--to", "hf", "--out", str(tmp_path / "hf"), "--quiet"]) == 0
    assert export.main([str(tmp_path / "hf"), "--from", "hf", "--out", str(tmp_path / "back"), "--quiet"]) == 0
    before, after = ckpt.load_weights(tmp_path / "c"), ckpt.load_weights(tmp_path / "back")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model, _ = ckpt.load_model(tmp_path / "back")  # and it loads as a model of ours
    assert model.args.n_kv_heads == 1 and not model.args.tie_embeddings


def test_import_of_a_sharded_folder_made_by_transformers(tmp_path, tokenizer_file):
    make_checkpoint(tmp_path / "c", tokenizer_file)
    export.main([str(tmp_path / "c"), "--to", "hf", "--out", str(tmp_path / "hf"), "--quiet"])
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32)
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    (tmp_path / "sharded" / "tokenizer.model").write_bytes((tmp_path / "hf" / "tokenizer.model").read_bytes())
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert export.main([str(tmp_path / "sharded"), "--from", "hf", "--out", str(tmp_path / "ours"), "--quiet"]) == 0
    model, _ = ckpt.load_model(tmp_path / "ours")
    tokens = torch.randint(0, 1024, (1, 12))
    with torch.no_grad():
        assert torch.allclose(model(tokens), hf(tokens).logits, atol=1e-4)
    # and generate.py samples from it
    command = [sys.executable, "generate.py", str(tmp_path / "ours"), "--prompt", "Once", "--max-new-tokens", "5"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("Once"), result.stderr


def read_llama2c(path, version):
    """An independent reader of llama2.c's format, written from its export.py's description."""
    data = path.read_bytes()
    if version == 1:
        magic, ver = struct.unpack_from("<Ii", data, 0)
        assert (magic, ver) == (0x616B3432, 1)
        fields = struct.unpack_from("<7i", data, 8)
        shared = data[36]
        offset = 256
    else:
        fields = struct.unpack_from("<7i", data, 0)
        shared = int(fields[5] > 0)
        offset = 28
    floats = np.frombuffer(data, dtype=np.float32, offset=offset)
    return fields, shared, floats


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("tie", [True, False])
def test_llama2c_export_parses_back(tmp_path, tokenizer_file, version, tie):
    model = make_checkpoint(tmp_path / "c", tokenizer_file, tie_embeddings=tie)
    out = tmp_path / "out" / "model.bin"
    assert (
        export.main([str(tmp_path / "c"), "--to", "llama2c", "--out", str(out), "--llama2c-version", str(version)]) == 0
    )
    (dim, hidden, layers, heads, kv, vocab, seq), shared, floats = read_llama2c(out, version)
    assert (dim, hidden, layers, heads, kv, abs(vocab), seq) == (64, 192, 2, 4, 2, 1024, 64)
    assert shared == int(tie)
    state = {k: v.numpy().ravel() for k, v in model.state_dict().items()}
    per_layer = lambda part: np.concatenate([state[f"layers.{i}.{part}.weight"] for i in range(2)])  # noqa: E731
    matrices = [per_layer(p) for p in ("attention.wq", "attention.wk", "attention.wv", "attention.wo")]
    ffn = [per_layer(p) for p in ("feed_forward.w1", "feed_forward.w2", "feed_forward.w3")]
    if version == 0:
        head_dim = 16
        angles = np.outer(np.arange(64), 10000.0 ** (-np.arange(0, head_dim, 2) / head_dim))
        expected = [state["tok_embeddings.weight"], per_layer("attention_norm"), *matrices, per_layer("ffn_norm"), *ffn,
                    state["norm.weight"], np.cos(angles).ravel(), np.sin(angles).ravel()]  # fmt: skip
    else:
        expected = [per_layer("attention_norm"), per_layer("ffn_norm"), state["norm.weight"],
                    state["tok_embeddings.weight"], *matrices, *ffn]  # fmt: skip
    if not tie:
        expected.append(state["output.weight"])
    expected = np.concatenate(expected).astype(np.float32)
    assert floats.shape == expected.shape
    assert np.allclose(floats, expected, atol=1e-6)


def test_llama2c_tokenizer_parses_back(tmp_path, tokenizer_file):
    make_checkpoint(tmp_path / "c", tokenizer_file)
    export.main([str(tmp_path / "c"), "--to", "llama2c", "--out", str(tmp_path / "model.bin"), "--quiet"])
    data = (tmp_path / "tokenizer.bin").read_bytes()
    (max_len,), offset, pieces = struct.unpack_from("<I", data), 4, []
    while offset < len(data):
        score, length = struct.unpack_from("<fI", data, offset)
        pieces.append((data[offset + 8 : offset + 8 + length].decode("utf-8", "replace"), score))
        offset += 8 + length
    sp = Tokenizer(tokenizer_file).sp
    assert len(pieces) == 1024 and pieces[1][0] == "\n<s>\n" and pieces[2][0] == "\n</s>\n"
    assert max_len == max(len(piece.encode()) for piece, _ in pieces)
    for i in range(3, 1024):
        assert pieces[i] == (sp.id_to_piece(i).replace("▁", " "), pytest.approx(sp.get_score(i)))


@pytest.mark.parametrize("to", ["hf", "llama2c"])
@pytest.mark.parametrize("pos_embedding", ["learned", "sinusoidal"])
def test_models_without_rope_are_refused(tmp_path, tokenizer_file, to, pos_embedding, capsys):
    make_checkpoint(tmp_path / "c", tokenizer_file, pos_embedding=pos_embedding)
    assert export.main([str(tmp_path / "c"), "--to", to, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"uses {pos_embedding} position embeddings" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() and len(list(tmp_path.iterdir())) == 1


def test_a_vocab_larger_than_the_tokenizer_is_refused(tmp_path, tokenizer_file, capsys):
    make_checkpoint(tmp_path / "c", tokenizer_file, vocab_size=2000)
    assert export.main([str(tmp_path / "c"), "--to", "hf", "--out", str(tmp_path / "o")]) == 2
    assert "2000 token ids but its tokenizer only 1024" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_hugging_face_folders(tmp_path, tokenizer_file, capsys):
    make_checkpoint(tmp_path / "c", tokenizer_file)
    export.main([str(tmp_path / "c"), "--to", "hf", "--out", str(tmp_path / "hf"), "--quiet"])
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(
        json.dumps({**config, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    )
    assert export.main([str(tmp_path / "hf"), "--from", "hf", "--out", str(tmp_path / "o")]) == 2
    assert "holds a gpt2 model, not a LLaMA one" in capsys.readouterr().err

    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    weights = (tmp_path / "hf" / "model.safetensors").read_bytes()
    (tmp_path / "hf" / "model.safetensors").unlink()
    assert export.main([str(tmp_path / "hf"), "--from", "hf", "--out", str(tmp_path / "o")]) == 2
    assert "no model.safetensors" in capsys.readouterr().err
    (tmp_path / "hf" / "model-00001-of-00002.safetensors").write_bytes(weights)
    index = {"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors",
                            "lm_head.weight": "model-00002-of-00002.safetensors"}}  # fmt: skip
    (tmp_path / "hf" / "model.safetensors.index.json").write_text(json.dumps(index))
    assert export.main([str(tmp_path / "hf"), "--from", "hf", "--out", str(tmp_path / "o")]) == 2
    assert "lacks the shard(s) model-00002-of-00002.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
