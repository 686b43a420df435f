"""Hugging Face LLaMA folders: export a checkpoint to one, import one into a checkpoint.

Meta's checkpoints (and ours) rotate interleaved pairs (x[2i], x[2i+1]); Hugging Face's
LlamaAttention rotates halves (x[i], x[i + d/2]). The two agree once the rows of wq and wk are
permuted within each head: row 2i goes to i and row 2i+1 to d/2 + i.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from data.tokenizer import Tokenizer
from model import ModelArgs
from model import checkpoint as ckpt
from model.layers import ffn_hidden_dim

from . import ExportError
from .safetensors_stream import DTYPES, write_streaming

DTYPE_OF = {name: dtype for dtype, name in DTYPES.items()}  # safetensors' dtype names -> torch

LAYER_NAMES = {  # ours -> Hugging Face, per layer
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
GLOBAL_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def hf_name(ours: str) -> str:
    if ours in GLOBAL_NAMES:
        return GLOBAL_NAMES[ours]
    _, layer, rest = ours.split(".", 2)
    return f"model.layers.{layer}.{LAYER_NAMES[rest]}"


def interleaved_to_halves(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Permute the rows of wq / wk [n_heads * head_dim, dim] from Meta's RoPE layout to Hugging Face's."""
    rows, dim = weight.shape
    return weight.view(n_heads, rows // n_heads // 2, 2, dim).transpose(1, 2).reshape(rows, dim)


def halves_to_interleaved(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of interleaved_to_halves."""
    rows, dim = weight.shape
    return weight.view(n_heads, 2, rows // n_heads // 2, dim).transpose(1, 2).reshape(rows, dim)


def permute_rope_rows(name: str, tensor: torch.Tensor, args: ModelArgs, permute) -> torch.Tensor:
    """Apply `permute` (one of the two above) to wq and wk; every other tensor passes as it is."""
    if name.endswith("attention.wq.weight"):
        return permute(tensor, args.n_heads)
    if name.endswith("attention.wk.weight"):
        return permute(tensor, args.kv_heads)
    return tensor


def hf_config(args: ModelArgs, dtype: torch.dtype) -> dict:
    """A LlamaConfig as JSON. NTK-aware scaling is a larger base, so it is written as rope_theta."""
    theta = args.rope_theta
    if args.rope_scaling == "ntk":
        theta *= args.rope_scaling_factor ** (args.head_dim / (args.head_dim - 2))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": args.vocab_size,
        "hidden_size": args.dim,
        "intermediate_size": args.hidden_dim or ffn_hidden_dim(args.dim, args.multiple_of, args.ffn_dim_multiplier),
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": args.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": args.max_seq_len,
        "rms_norm_eps": args.norm_eps,
        "rope_theta": theta,
        "rope_scaling": {"rope_type": "linear", "factor": args.rope_scaling_factor}
        if args.rope_scaling == "linear"
        else None,
        "tie_word_embeddings": args.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }
    return config


def _tokenizer_files(out: Path, tokenizer_file: Path, max_len: int) -> None:
    shutil.copyfile(tokenizer_file, out / "tokenizer.model")
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    config = {
        "tokenizer_class": "LlamaTokenizer",
        **special,
        "pad_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "add_prefix_space": True,
        "legacy": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len,
        "sp_model_kwargs": {},
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


class _Output:
    """An output folder that appears whole or not at all."""

    def __init__(self, out: Path, overwrite: bool):
        if out.exists() and any(out.iterdir()) and not overwrite:
            raise ExportError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out, self.tmp = out, Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, kind, error, trace):
        if kind is None:
            if self.out.exists():
                shutil.rmtree(self.out)
            self.tmp.rename(self.out)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def check_exportable(args: ModelArgs, tokenizer_vocab: int, fmt: str) -> None:
    if args.pos_embedding != "rope":
        raise ExportError(
            f"this model uses {args.pos_embedding} position embeddings; {fmt} models are LLaMA's, which use RoPE only"
        )
    if args.vocab_size > tokenizer_vocab:
        raise ExportError(
            f"the model has {args.vocab_size} token ids but its tokenizer only {tokenizer_vocab}; "
            "export a model trained with this tokenizer"
        )


def export_hf(checkpoint: str | Path, out: str | Path, overwrite: bool = False, quiet: bool = False) -> Path:
    """Write a folder that transformers' LlamaForCausalLM and AutoTokenizer load as they are."""
    folder = ckpt.resolve(checkpoint)
    args = ModelArgs.from_dict(ckpt.load_config(folder)["model"])
    tokenizer = Tokenizer(folder / ckpt.TOKENIZER)
    check_exportable(args, tokenizer.vocab_size, "Hugging Face LLaMA")
    try:
        source = safe_open(folder / ckpt.WEIGHTS, framework="pt")
    except (SafetensorError, OSError) as e:
        raise ckpt.CheckpointError(f"{folder / ckpt.WEIGHTS} is corrupt or truncated ({e})") from None
    names = [n for n in source.keys() if n != "output.weight" or not args.tie_embeddings]
    dtype = DTYPE_OF[source.get_slice(names[0]).get_dtype()]

    def load(hf: str) -> torch.Tensor:
        progress.update(1)
        return permute_rope_rows(by_hf[hf], source.get_tensor(by_hf[hf]), args, interleaved_to_halves)

    by_hf = {hf_name(n): n for n in names}
    specs = [(hf_name(n), tuple(source.get_slice(n).get_shape()), dtype) for n in names]
    with _Output(Path(out), overwrite) as tmp, tqdm(total=len(specs), desc="exporting", disable=quiet) as progress:
        write_streaming(tmp / "model.safetensors", specs, load)
        (tmp / "config.json").write_text(json.dumps(hf_config(args, dtype), indent=2) + "\n")
        generation = {"bos_token_id": 1, "eos_token_id": 2, "do_sample": True, "temperature": 1.0, "top_p": 0.9}
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        _tokenizer_files(tmp, folder / ckpt.TOKENIZER, args.max_seq_len)
    return Path(out)


def model_args_from_hf(config: dict, where: Path) -> ModelArgs:
    """ModelArgs for a Hugging Face LlamaConfig (as JSON)."""
    if config.get("model_type") != "llama" and "LlamaForCausalLM" not in config.get("architectures", []):
        kind = config.get("model_type") or config.get("architectures") or "unknown"
        raise ExportError(
            f"{where} holds a {kind} model, not a LLaMA one; only LlamaForCausalLM folders can be imported"
        )
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in (None, "default", "linear"):
        raise ExportError(f"{where}: rope scaling {kind!r} is not supported (only linear)")
    theta = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    dim, heads = config["hidden_size"], config["num_attention_heads"]
    if config.get("head_dim", dim // heads) != dim // heads:
        raise ExportError(f"{where}: head_dim {config['head_dim']} is not hidden_size / num_attention_heads")
    return ModelArgs(
        dim=dim,
        n_layers=config["num_hidden_layers"],
        n_heads=heads,
        n_kv_heads=config.get("num_key_value_heads") or heads,
        vocab_size=config["vocab_size"],
        hidden_dim=config["intermediate_size"],
        norm_eps=config.get("rms_norm_eps", 1e-6),
        rope_theta=float(theta),
        max_seq_len=config.get("max_position_embeddings", 2048),
        max_batch_size=1,
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        rope_scaling="linear" if kind == "linear" else None,
        rope_scaling_factor=float(scaling.get("factor", 1.0)) if kind == "linear" else 1.0,
    )


def _hf_shards(hf_dir: Path) -> dict[str, Path]:
    """{tensor name: file} from model.safetensors or a sharded model.safetensors.index.json."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        mapping = json.loads(index.read_text())["weight_map"]
        missing = sorted({f for f in mapping.values() if not (hf_dir / f).is_file()})
        if missing:
            raise ExportError(f"{hf_dir} lacks the shard(s) {', '.join(missing)} named in its index; download them")
        return {name: hf_dir / f for name, f in mapping.items()}
    single = hf_dir / "model.safetensors"
    if not single.is_file():
        raise ExportError(
            f"no model.safetensors (or index of shards) in {hf_dir}; only safetensors weights can be imported"
        )
    with safe_open(single, framework="pt") as f:
        return {name: single for name in f.keys()}


def import_hf(hf_dir: str | Path, out: str | Path, overwrite: bool = False, quiet: bool = False) -> Path:
    """Turn a local Hugging Face LLaMA folder into a checkpoint folder of ours."""
    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise ExportError(f"{hf_dir} has no config.json; give a Hugging Face model folder")
    config = json.loads((hf_dir / "config.json").read_text())
    args = model_args_from_hf(config, hf_dir)
    if not (hf_dir / "tokenizer.model").is_file():
        raise ExportError(f"{hf_dir} has no tokenizer.model; only sentencepiece tokenizers can be imported")
    files = _hf_shards(hf_dir)
    ours = _our_names(args)
    missing = [hf_name(n) for n in ours if hf_name(n) not in files]
    if missing:
        raise ExportError(
            f"{hf_dir} lacks {missing[0]} (and {len(missing) - 1} more tensors); is the download complete?"
        )

    handles: dict[Path, object] = {}

    def shard_of(name: str):
        path = files[hf_name(name)]
        if path not in handles:
            handles[path] = safe_open(path, framework="pt")
        return handles[path]

    def load(name: str) -> torch.Tensor:
        progress.update(1)
        return permute_rope_rows(name, shard_of(name).get_tensor(hf_name(name)), args, halves_to_interleaved)

    def spec(name: str):
        piece = shard_of(name).get_slice(hf_name(name))
        return name, tuple(piece.get_shape()), DTYPE_OF[piece.get_dtype()]

    with _Output(Path(out), overwrite) as tmp, tqdm(total=len(ours), desc="importing", disable=quiet) as progress:
        write_streaming(tmp / ckpt.WEIGHTS, [spec(n) for n in ours], load)
        (tmp / ckpt.CONFIG).write_text(
            json.dumps({"model": args.to_dict(), "imported_from": str(hf_dir)}, indent=2) + "\n"
        )
        shutil.copyfile(hf_dir / "tokenizer.model", tmp / ckpt.TOKENIZER)
    return Path(out)


def _our_names(args: ModelArgs) -> list[str]:
    """Our tensor names for a model, in checkpoint order (a tied output layer is stored once)."""
    names = ["tok_embeddings.weight"]
    for layer in range(args.n_layers):
        names += [f"layers.{layer}.{rest}" for rest in LAYER_NAMES]
    names.append("norm.weight")
    if not args.tie_embeddings:
        names.append("output.weight")
    return names
