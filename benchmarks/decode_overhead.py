"""Host cost of eager decoding: ops dispatched and microseconds per new token, for a model so small
that its arithmetic is negligible.

    python benchmarks/decode_overhead.py
    python benchmarks/decode_overhead.py --dtype bfloat16   # the op counts of bf16 decoding on a GPU

On a GPU an eager decode step is bound by the host: every op is a Python call, a dispatch and
(unless it is a view) a kernel launch, and the GPU waits for them. The counts are the same on any
device, so this measures, on a laptop, what eager GPU decoding will pay per token.
"""

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from statistics import median

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import ModelArgs, Transformer  # noqa: E402
from model.sampling import generate_tokens  # noqa: E402

TINY = dict(dim=64, n_layers=6, n_heads=4, vocab_size=512, max_seq_len=512)  # stories15M's depth, little arithmetic


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched while it is active: views, ops that hand back their input
    (a cast to the dtype it has), and the rest, which write new memory: on a GPU, kernel launches."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            kind = "view"
        elif func._schema.is_mutable:
            kind = "kernel"
        else:
            inputs = {t.data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
            outputs = [t.data_ptr() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
            kind = "input back" if outputs and all(ptr in inputs for ptr in outputs) else "kernel"
        self.ops[kind] += 1
        return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: bfloat16 on CUDA, float32 elsewhere")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    torch.manual_seed(0)
    model = Transformer(ModelArgs(**TINY, max_batch_size=1)).to(device=device, dtype=dtype).eval()
    prompt, new = [[1, 5, 9, 12]], args.new_tokens

    generate_tokens(model, prompt, new, temperature=0)  # warm-up
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        generate_tokens(model, prompt, new, temperature=0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    with OpCounter() as whole:
        generate_tokens(model, prompt, new, temperature=0)
    with torch.inference_mode(), OpCounter() as forward:
        model(torch.tensor([[7]], device=device), start_pos=len(prompt[0]) + 1)

    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {name}, torch {torch.__version__}, {dtype}, {TINY}, batch 1, greedy, {new} new tokens")
    print("| per new token | ops | kernels | views | input back | us (median) |\n|---|---|---|---|---|---|")
    for label, ops, count in (("one forward", forward.ops, 1), ("generate_tokens", whole.ops, new)):
        row = [f"{n / count:.0f}" for n in (ops.total(), ops["kernel"], ops["view"], ops["input back"])]
        print(f"| {label} | {' | '.join(row)} | {'-' if count == 1 else f'{1e6 * median(seconds) / new:.0f}'} |")


if __name__ == "__main__":
    main()
