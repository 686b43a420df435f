"""llama2.c's files: the model .bin that run.c reads, and its tokenizer.bin.

Model, version 0 ("legacy", what upstream run.c reads): seven int32 (dim, hidden_dim, n_layers,
n_heads, n_kv_heads, vocab_size, max_seq_len; vocab_size negative when the output layer is not
tied), then float32 tensors. Version 1: the uint32 magic "ak42", int32 version 1, the same seven
int32, a uint8 "shared classifier" flag, zeros up to byte 256, then the tensors.
Tensors, each stacked over layers (tensor_order): version 0 holds tok_embeddings, attention_norm,
wq, wk, wv, wo, ffn_norm, w1, w2, w3, norm, then RoPE's cos and sin tables ([max_seq_len,
head_dim / 2] each, which run.c skips); version 1 holds the norms first (attention_norm,
ffn_norm, norm), then tok_embeddings and the matrices. Last, output when it is not tied.
Meta's interleaved RoPE is llama2.c's, so no permutation.

Tokenizer: int32 max piece length, then per token: float32 score, int32 byte length, the bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm import tqdm

from data.tokenizer import Tokenizer
from model import ModelArgs
from model import checkpoint as ckpt
from model.layers import ffn_hidden_dim
from model.position import rope_frequencies

from .hf import check_exportable

MAGIC = 0x616B3432  # "ak42"
MATRICES = [
    "attention.wq",
    "attention.wk",
    "attention.wv",
    "attention.wo",
    "feed_forward.w1",
    "feed_forward.w2",
    "feed_forward.w3",
]


def tensor_order(args: ModelArgs, version: int) -> list[str]:
    """Our tensor names (without '.weight') in the order the file holds them, before RoPE tables and output."""

    def stacked(part):
        return [f"layers.{layer}.{part}" for layer in range(args.n_layers)]

    if version == 0:
        parts = ["attention_norm", *MATRICES[:4], "ffn_norm", *MATRICES[4:]]
        return ["tok_embeddings", *[n for part in parts for n in stacked(part)], "norm"]
    norms = stacked("attention_norm") + stacked("ffn_norm") + ["norm"]
    return norms + ["tok_embeddings", *[n for part in MATRICES for n in stacked(part)]]


def header(args: ModelArgs, version: int) -> bytes:
    hidden = args.hidden_dim or ffn_hidden_dim(args.dim, args.multiple_of, args.ffn_dim_multiplier)
    vocab = args.vocab_size if (args.tie_embeddings or version == 1) else -args.vocab_size
    sizes = struct.pack("<7i", args.dim, hidden, args.n_layers, args.n_heads, args.kv_heads, vocab, args.max_seq_len)
    if version == 0:
        return sizes
    head = struct.pack("<Ii", MAGIC, 1) + sizes + struct.pack("<B", int(args.tie_embeddings))
    return head + b"\0" * (256 - len(head))


def export_llama2c(checkpoint: str | Path, out: str | Path, version: int = 0, quiet: bool = False) -> Path:
    """Write FILE.bin (float32) and tokenizer.bin beside it, atomically."""
    folder = ckpt.resolve(checkpoint)
    args = ModelArgs.from_dict(ckpt.load_config(folder)["model"])
    tokenizer = Tokenizer(folder / ckpt.TOKENIZER)
    check_exportable(args, tokenizer.vocab_size, "llama2.c")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_model, tmp_tok = out.with_name(out.name + ".tmp"), out.with_name("tokenizer.bin.tmp")
    try:
        with safe_open(folder / ckpt.WEIGHTS, framework="pt") as weights, open(tmp_model, "wb") as f:
            f.write(header(args, version))
            for name in tqdm(tensor_order(args, version), desc="exporting", disable=quiet):
                f.write(weights.get_tensor(f"{name}.weight").float().numpy().tobytes())
            if version == 0:  # the tables run.c's first version read, and the current one skips
                positions = torch.arange(args.max_seq_len, dtype=torch.float32)
                angles = torch.outer(positions, rope_frequencies(args.head_dim, args.rope_theta))
                f.write(angles.cos().numpy().tobytes() + angles.sin().numpy().tobytes())
            if not args.tie_embeddings:
                f.write(weights.get_tensor("output.weight").float().numpy().tobytes())
        write_tokenizer(tokenizer, tmp_tok)
        tmp_model.replace(out)
        tmp_tok.replace(out.with_name("tokenizer.bin"))
    finally:
        tmp_model.unlink(missing_ok=True)
        tmp_tok.unlink(missing_ok=True)
    return out


def write_tokenizer(tokenizer, path: str | Path) -> None:
    """llama2.c's tokenizer.bin: each piece with its score, '▁' as a space, byte pieces as the byte."""
    sp = tokenizer.sp
    pieces = []
    for i in range(sp.vocab_size()):
        piece = sp.id_to_piece(i)
        if i == 1:
            piece = "\n<s>\n"  # as llama2.c's tokenizer.py writes bos and eos
        elif i == 2:
            piece = "\n</s>\n"
        pieces.append((piece.replace("▁", " ").encode(), sp.get_score(i)))
    with open(path, "wb") as f:
        f.write(struct.pack("<I", max(len(b) for b, _ in pieces)))
        for data, score in pieces:
            f.write(struct.pack("<fI", score, len(data)))
            f.write(data)
