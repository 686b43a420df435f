"""Training-step speed: tokens/s, MFU and peak memory of our step at llama2.c's shapes.

    python benchmarks/train_speed.py                 # on CUDA: 15M, 42M, 110M; on a CPU: the tiny shape
    python benchmarks/train_speed.py --shapes 15M --steps 30

The step is train.py's: bf16 autocast and torch.compile on CUDA, fused AdamW, cross-entropy on
random tokens (vocab 32000, as llama2.c's anchors). Results go in benchmarks/RESULTS.md.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import ModelArgs, Transformer  # noqa: E402
from training.flops import flops_per_token, peak_flops  # noqa: E402
from training.loss import next_token_loss  # noqa: E402
from training.optimizer import build_optimizer  # noqa: E402

# name: (ModelArgs, batch size); llama2.c's anchor settings
SHAPES = {
    "tiny": (dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=2048, max_seq_len=128), 32),
    "15M": (dict(dim=288, n_layers=6, n_heads=6, vocab_size=32000, max_seq_len=256), 128),
    "42M": (dict(dim=512, n_layers=8, n_heads=8, vocab_size=32000, max_seq_len=1024), 32),
    "110M": (dict(dim=768, n_layers=12, n_heads=12, vocab_size=32000, max_seq_len=1024), 32),
}


def measure(name: str, device: torch.device, steps: int, compile: bool, mode: str | None = None) -> dict:
    shape, batch = SHAPES[name]
    args = ModelArgs(**shape, multiple_of=32)
    torch.manual_seed(0)
    with torch.device(device):
        model = Transformer(args)
    optimizer = build_optimizer(model, 3e-4, 0.1, (0.9, 0.95), device)
    loss_of = torch.compile(next_token_loss, mode=mode) if compile else next_token_loss
    bf16 = device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    seq = args.max_seq_len
    data = [torch.randint(0, args.vocab_size, (batch, seq + 1), device=device) for _ in range(4)]

    def step(i):
        tokens = data[i % len(data)]
        with autocast:
            loss = loss_of(model, tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for i in range(3 if device.type == "cpu" else 10):  # warm up, compile
        step(i)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    for i in range(steps):
        loss = step(i)
    loss.item()
    sync()
    elapsed = time.perf_counter() - start
    tokens_per_s = steps * batch * seq / elapsed
    peak = peak_flops(device)
    return {
        "shape": name,
        "params": model.num_params(),
        "batch": f"{batch}x{seq}",
        "tokens/s": tokens_per_s,
        "ms/step": 1000 * elapsed / steps,
        "mfu": tokens_per_s * flops_per_token(model, seq) / peak if peak else None,
        "peak GiB": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile the step (default: on CUDA only, as train.py)",
    )
    parser.add_argument("--mode", help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    else:
        print(f"# CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    shapes = args.shapes or (["15M", "42M", "110M"] if device.type == "cuda" else ["tiny"])
    compile = args.compile if args.compile is not None else device.type == "cuda"
    print(
        "| shape | params | batch | tokens/s | ms/step | MFU | peak GiB | compile |\n|---|---|---|---|---|---|---|---|"
    )
    for name in shapes:
        r = measure(name, device, args.steps, compile, args.mode)
        mfu = f"{r['mfu']:.3f}" if r["mfu"] else "-"
        mem = f"{r['peak GiB']:.1f}" if r["peak GiB"] else "-"
        cells = [
            name,
            f"{r['params'] / 1e6:.1f}M",
            r["batch"],
            f"{r['tokens/s']:,.0f}",
            f"{r['ms/step']:.1f}",
            mfu,
            mem,
        ]
        print("| " + " | ".join(cells + [str(compile)]) + " |", flush=True)


if __name__ == "__main__":
    main()
