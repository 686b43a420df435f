"""Sample stories from a checkpoint: `python generate.py RUN_OR_CHECKPOINT --prompt "Once upon a time"`.

    python generate.py runs/stories15M --prompt "Once upon a time" --temperature 0.8 --top-p 0.9
    python generate.py runs/tiny --prompt "Lily" --prompt "The dog" --max-new-tokens 100   # one batch
    python generate.py runs/tiny --prompts-file prompts.txt        # one prompt per line (or on stdin)

The prompts are prefilled through the KV cache (start_pos=0), then decoded one token at a time
with start_pos at the current position. A single prompt streams as it is generated.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from data.errors import DataError
from data.tokenizer import Tokenizer
from model import checkpoint as ckpt
from model.device import pick_device
from model.sampling import check_sampling, generate
from model.transformer import COMPILE_ERRORS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="a run folder (its latest checkpoint) or a checkpoint folder")
    p.add_argument("--prompt", action="append", help="a prompt; repeat for a batch")
    p.add_argument("--prompts-file", help="a file with one prompt per line ('-' for stdin)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=0.9, help="keep the smallest set reaching this probability")
    p.add_argument("--seed", type=int, default=None, help="the same seed gives the same text")
    p.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    p.add_argument("--device", default="auto", help="cuda, mps or cpu")
    p.add_argument("--dtype", choices=list(DTYPES), help="default: bfloat16 on CUDA, float32 elsewhere")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the decode step (default: on CUDA; on a CPU it compiles for ~15 s, then decodes ~3x faster)",
    )
    return p.parse_args(argv)


def read_prompts(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        source = sys.stdin if args.prompts_file == "-" else Path(args.prompts_file)
        if isinstance(source, Path) and not source.is_file():
            raise ValueError(f"--prompts-file {source} does not exist")
        text = source.read() if source is sys.stdin else source.read_text()
        prompts += [line for line in text.splitlines() if line.strip()]
    elif not prompts and not sys.stdin.isatty():
        prompts += [line for line in sys.stdin.read().splitlines() if line.strip()]
    return prompts or [""]


class Stream:
    """Print row 0's text as it grows (decoding the whole row each time keeps multi-byte characters whole)."""

    def __init__(self, tokenizer, prompt_ids):
        self.tokenizer, self.prompt_ids, self.shown = tokenizer, prompt_ids, tokenizer.decode(prompt_ids[1:])
        self.first_token_at = None
        print(self.shown, end="", flush=True)

    def __call__(self, new_tokens: list[int]) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        text = self.tokenizer.decode(self.prompt_ids[1:] + new_tokens)
        if text.startswith(self.shown) and "\ufffd" not in text[len(self.shown) :]:
            print(text[len(self.shown) :], end="", flush=True)
            self.shown = text


def run(args) -> int:
    check_sampling(args.temperature, args.top_k, args.top_p)
    if args.max_new_tokens < 1 or args.num_samples < 1:
        raise ValueError("--max-new-tokens and --num-samples must be at least 1")
    prompts = read_prompts(args)
    device = torch.device(pick_device(args.device))
    dtype = DTYPES[args.dtype] if args.dtype else torch.bfloat16 if device.type == "cuda" else torch.float32
    folder = ckpt.resolve(args.checkpoint)
    if not (folder / ckpt.TOKENIZER).is_file():
        raise ckpt.CheckpointError(
            f"{folder / ckpt.TOKENIZER} is missing; copy the tokenizer the model was trained with there"
        )
    tokenizer = Tokenizer(folder / ckpt.TOKENIZER)
    model, _ = ckpt.load_model(folder, device=device, dtype=dtype, max_batch_size=len(prompts))
    if tokenizer.vocab_size != model.args.vocab_size:
        raise ckpt.CheckpointError(
            f"{folder}: the tokenizer has {tokenizer.vocab_size} tokens, the model {model.args.vocab_size}"
        )
    if args.compile if args.compile is not None else device.type == "cuda":
        model.compile_decode()
        start = time.perf_counter()
        generate(model, tokenizer, prompts, max_new_tokens=3, temperature=0)  # compiles, so the timings below do not
        print(f"[decode step compiled in {time.perf_counter() - start:.1f} s]", file=sys.stderr)

    for sample in range(args.num_samples):
        seed = None if args.seed is None else args.seed + sample
        stream = Stream(tokenizer, [tokenizer.bos_id] + tokenizer.encode(prompts[0])) if len(prompts) == 1 else None
        start = time.perf_counter()
        results = generate(
            model,
            tokenizer,
            prompts,
            args.max_new_tokens,
            args.temperature,
            args.top_k,
            args.top_p,
            seed,
            on_step=stream,
        )
        elapsed = time.perf_counter() - start
        for prompt, result in zip(prompts, results, strict=True):
            if stream is None:
                print(prompt + result.text)
            elif stream.shown != stream.tokenizer.decode(result.prompt_tokens[1:] + result.tokens):
                print(result.text[len(stream.shown) - len(prompt) :], end="")
            if result.stop == "max_seq_len":
                print(f"\n[stopped at the model's max_seq_len={model.args.max_seq_len}]", file=sys.stderr)
        print()
        new = sum(len(r.tokens) for r in results)
        ttft = (
            f", first token after {1000 * (stream.first_token_at - start):.0f} ms"
            if stream and stream.first_token_at
            else ""
        )
        print(
            f"[{sum(len(r.prompt_tokens) for r in results)} prompt tokens, {new} new tokens in {elapsed:.2f} s "
            f"({new / elapsed:.1f} tokens/s){ttft}]",
            file=sys.stderr,
        )
        if sample + 1 < args.num_samples:
            print("---")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (ValueError, DataError) as e:  # CheckpointError is a ValueError too
        print(f"error: {e}", file=sys.stderr)
        return 2
    except COMPILE_ERRORS as e:
        reason = str(e).strip().splitlines()[0]
        print(
            f"error: torch.compile could not build the decode step ({reason}); run with --no-compile", file=sys.stderr
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
