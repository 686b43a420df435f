"""Decoding speed of generate(): tokens/s through the KV cache, eager and compiled, against
Hugging Face `generate` on the same shape, and time per token as the context grows.

    python benchmarks/decode_speed.py                         # 15M and 110M shapes
    python benchmarks/decode_speed.py --shapes 15M --no-hf

Random weights (vocab 32000), greedy, a 16-token prompt and 256 new tokens, as in the anchors of
benchmarks/RESULTS.md. bf16 on CUDA, float32 on a CPU.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import ModelArgs, Transformer  # noqa: E402
from model.sampling import decode_attention_backends, generate_tokens  # noqa: E402

SHAPES = {
    "15M": dict(dim=288, n_layers=6, n_heads=6, vocab_size=32000, multiple_of=32),
    "110M": dict(dim=768, n_layers=12, n_heads=12, vocab_size=32000, multiple_of=32),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(shape: str, device, dtype, batch: int, seq_len: int = 1024) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(ModelArgs(**SHAPES[shape], max_seq_len=seq_len, max_batch_size=batch))
    return model.to(device=device, dtype=dtype).eval()


def ours(model, batch: int, prompt_len: int, new: int, repeats: int) -> float:
    """New tokens per second of generate_tokens (prefill included), median of `repeats` runs after a warm-up."""
    device = next(model.parameters()).device
    prompts = torch.randint(3, model.args.vocab_size, (batch, prompt_len)).tolist()
    generate_tokens(model, prompts, new, temperature=0)  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        generate_tokens(model, prompts, new, temperature=0)
        sync(device)
        times.append(time.perf_counter() - start)
    return batch * new / sorted(times)[len(times) // 2]


def huggingface(shape: str, device, dtype, prompt_len: int, new: int) -> float | None:
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        return None
    s = SHAPES[shape]
    hidden = Transformer(ModelArgs(**s)).layers[0].feed_forward.w1.out_features
    config = LlamaConfig(
        vocab_size=s["vocab_size"], hidden_size=s["dim"], intermediate_size=hidden, num_hidden_layers=s["n_layers"],
        num_attention_heads=s["n_heads"], max_position_embeddings=1024, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
    ids = torch.randint(3, s["vocab_size"], (1, prompt_len), device=device)
    kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    model.generate(ids, **kwargs)
    sync(device)
    start = time.perf_counter()
    model.generate(ids, **kwargs)
    sync(device)
    return new / (time.perf_counter() - start)


def per_token_ms(model, context: int, use_cache: bool, steps: int = 16) -> float:
    """Milliseconds per new token at a given context length, through the cache or recomputing everything."""
    device = next(model.parameters()).device
    tokens = torch.randint(3, model.args.vocab_size, (1, context + steps), device=device)
    with torch.inference_mode(), decode_attention_backends():
        model.reset_cache(1)
        if use_cache:
            model(tokens[:, :context], start_pos=0)
        sync(device)
        start = time.perf_counter()
        for t in range(context, context + steps):
            model(tokens[:, t : t + 1], start_pos=t) if use_cache else model(tokens[:, : t + 1])
        sync(device)
    return 1000 * (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--no-hf", action="store_true", help="skip Hugging Face generate")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=True, help="also time the compiled decode step"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {name}, torch {torch.__version__}, {dtype}, prompt 16, 256 new tokens, greedy")
    print("| shape | batch | ours eager tok/s | ours compiled tok/s | HF generate tok/s |\n|---|---|---|---|---|")
    for shape in args.shapes:
        for batch in (1, 8, 32) if shape == "15M" else (1,):
            eager = ours(build(shape, device, dtype, batch), batch, 16, 256, args.repeats)
            compiled = "-"
            if args.compile:
                model = build(shape, device, dtype, batch)
                model.compile_decode()
                compiled = f"{ours(model, batch, 16, 256, args.repeats):,.0f}"
            hf = huggingface(shape, device, dtype, 16, 256) if batch == 1 and not args.no_hf else None
            print(f"| {shape} | {batch} | {eager:,.0f} | {compiled} | {f'{hf:,.0f}' if hf else '-'} |", flush=True)

    print("\n# ms per new token against context length (15M, batch 1, eager)")
    print("| context | with KV cache | without (full recompute) |\n|---|---|---|")
    model = build("15M", device, dtype, 1, seq_len=1100)
    per_token_ms(model, 64, True)  # warm-up
    for context in (64, 128, 256, 512, 1024):
        print(
            f"| {context} | {per_token_ms(model, context, True):.2f} | {per_token_ms(model, context, False):.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
