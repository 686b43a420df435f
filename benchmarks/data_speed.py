"""Data pipeline speed on the TinyStories sample: tokenizer training, pretokenization (ours vs a
bare sentencepiece loop over the same stories, 1 and 2 threads), and the batch loader.

    python benchmarks/data_speed.py [--source ../shared/data/tinystories]
"""

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.loader import TrainBatches  # noqa: E402
from data.prepare import shard_dtype, write_shard  # noqa: E402
from data.sources import StorySource  # noqa: E402
from data.tokenizer import train_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class Silent:
    def update(self, n):
        pass

    def set_postfix(self, **kwargs):
        pass


def write_shard_of(source, tokenizer, out, dtype, threads):
    """Our pretokenization: read the training stories, encode them, write the shard."""
    write_shard(source.batches("train"), tokenizer, out, dtype, threads, Silent())


def best_of(runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=str(REPO.parent / "shared" / "data" / "tinystories"))
    parser.add_argument("--vocab-size", type=int, default=4096)
    args = parser.parse_args()
    source = StorySource(args.source)
    stories = [s for batch in source.batches("train") for s in batch]
    megabytes = sum(len(s.encode()) for s in stories) / 1e6
    print(f"# {len(stories):,} training stories, {megabytes:.2f} MB of text")

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        tokenizer = train_tokenizer(source.batches("train"), args.vocab_size, Path(tmp) / "tok.model")
        print(f"tokenizer training (vocab {args.vocab_size}, all cores): {time.perf_counter() - start:.2f} s")

        print("| threads | bare sp.encode MB/s | ours (read + encode + write) MB/s | ours tokens/s | ratio |")
        print("|---|---|---|---|---|")
        out, dtype = Path(tmp) / "train.bin", shard_dtype(tokenizer.vocab_size)
        for threads in (1, 2):
            bare = best_of(3, partial(tokenizer.sp.encode, stories, num_threads=threads))
            ours = best_of(3, partial(write_shard_of, source, tokenizer, out, dtype, threads))
            tokens = out.stat().st_size // dtype.itemsize
            cells = [
                threads,
                f"{megabytes / bare:.1f}",
                f"{megabytes / ours:.1f}",
                f"{tokens / ours:,.0f}",
                f"{ours / bare:.2f}",
            ]
            print("| " + " | ".join(map(str, cells)) + " |")

        shard = np.memmap(out, dtype=dtype, mode="r")
        batches = TrainBatches(shard, batch_size=32, seq_len=256, seed=0)
        count = 200
        elapsed = best_of(3, lambda: [batches.get(step) for step in range(count)])
        print(
            f"loader: {count / elapsed:,.0f} batches/s of 32 x 256 ({count * 32 * 256 / elapsed / 1e6:.1f}M tokens/s)"
        )


if __name__ == "__main__":
    main()
