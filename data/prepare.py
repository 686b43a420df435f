"""Text -> tokenizer -> token shards: `python -m data.prepare [--config FILE] [--data.KEY VALUE ...]`.

Writes into data.dir:
    tokenizer.model   trained on the first data.tokenizer_train_stories stories (unless data.tokenizer names one)
    train.bin, val.bin   every story as [bos] + tokens + [eos], back to back (uint16, or uint32 past 65536 ids)
    meta.json         what the shards were made from and how many tokens and stories they hold
Work whose output already exists and matches the config is skipped. Files are written under
temporary names and renamed when complete, and meta.json last, so an interrupted run is redone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .config import DataConfig
from .errors import DataError
from .sources import StorySource
from .tokenizer import BOS_ID, EOS_ID, Tokenizer, train_tokenizer

FORMAT = 1
SPLITS = ("train", "val")


def shard_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def wanted_meta(cfg: DataConfig) -> dict:
    """The settings that decide a shard's content; a shard made with other ones is rebuilt."""
    return {
        "format": FORMAT,
        "source": cfg.source,
        "max_stories": cfg.max_stories,
        "val_fraction": cfg.val_fraction,
        "vocab_size": cfg.vocab_size,
        "tokenizer": cfg.tokenizer or "trained",
        "tokenizer_train_stories": 0 if cfg.tokenizer else cfg.tokenizer_train_stories,
    }


def read_meta(data_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(data_dir) / "meta.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_up_to_date(cfg: DataConfig) -> bool:
    out = Path(cfg.dir)
    meta = read_meta(out)
    if meta is None or {k: meta.get(k) for k in wanted_meta(cfg)} != wanted_meta(cfg):
        return False
    try:
        tokenizer = Tokenizer(cfg.tokenizer or out / "tokenizer.model")
    except DataError:
        return False
    itemsize = np.dtype(meta["dtype"]).itemsize
    sizes_match = all(
        (out / f"{s}.bin").is_file() and (out / f"{s}.bin").stat().st_size == meta[f"{s}_tokens"] * itemsize
        for s in SPLITS
    )
    return tokenizer.sha256 == meta["tokenizer_sha256"] and sizes_match


def write_shard(
    batches, tokenizer: Tokenizer, path: Path, dtype: np.dtype, num_threads: int, progress
) -> tuple[int, int]:
    """Encode batches of stories into `path`; returns (tokens, stories)."""
    tmp = path.with_name(path.name + ".tmp")
    tokens = stories = 0
    with open(tmp, "wb") as f:
        for batch in batches:
            flat: list[int] = []
            for ids in tokenizer.encode_batch(batch, num_threads):
                flat.append(BOS_ID)
                flat.extend(ids)
                flat.append(EOS_ID)
            np.asarray(flat, dtype=dtype).tofile(f)
            tokens += len(flat)
            stories += len(batch)
            progress.update(len(batch))
            progress.set_postfix(tokens=f"{tokens:,}", refresh=False)
    tmp.replace(path)
    return tokens, stories


def prepare(cfg: DataConfig, quiet: bool = False) -> Path:
    """Make data.dir's tokenizer and shards for this config, unless they are already there; returns data.dir."""
    out = Path(cfg.dir)
    if is_up_to_date(cfg):
        return out
    source = StorySource(cfg.source, cfg.max_stories, cfg.val_fraction, cfg.skip_bad)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # the shards below no longer match it
    started = time.perf_counter()

    if cfg.tokenizer:
        tokenizer = Tokenizer(cfg.tokenizer)
        if tokenizer.vocab_size != cfg.vocab_size:
            raise DataError(
                f"tokenizer {cfg.tokenizer} has {tokenizer.vocab_size} ids but data.vocab_size is {cfg.vocab_size}; "
                f"set --data.vocab_size {tokenizer.vocab_size}"
            )
    else:
        stories = source.batches("train", limit=cfg.tokenizer_train_stories)
        first = next(stories)  # an unreachable or empty source fails here, before anything is said
        if not quiet:
            print(
                f"training a {cfg.vocab_size}-token tokenizer on up to {cfg.tokenizer_train_stories:,} stories",
                file=sys.stderr,
            )
        tokenizer = train_tokenizer(
            itertools.chain([first], stories),
            cfg.vocab_size,
            out / "tokenizer.model",
            cfg.num_proc,
        )

    dtype = shard_dtype(cfg.vocab_size)
    meta = {**wanted_meta(cfg), "tokenizer_sha256": tokenizer.sha256, "dtype": dtype.name}
    for split in SPLITS:
        with tqdm(desc=f"tokenizing {split}", unit=" stories", disable=quiet, file=sys.stderr) as bar:
            tokens, stories = write_shard(
                source.batches(split), tokenizer, out / f"{split}.bin", dtype, cfg.num_proc, bar
            )
        meta[f"{split}_tokens"], meta[f"{split}_stories"] = tokens, stories
    meta["held_out_val"] = source.held_out
    meta["skipped_bad_stories"] = source.skipped
    meta["seconds"] = round(time.perf_counter() - started, 2)
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(out / "meta.json")
    if source.skipped:
        print(f"warning: skipped {source.skipped} stories that were not valid UTF-8", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    from configs import ConfigError, load

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="a TOML config file (its [data] section is used)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load({"data": DataConfig}, args.config, overrides, ignore_sections=True)["data"]
        out = prepare(cfg, quiet=args.quiet)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = read_meta(out)
    print(
        f"{out}: {meta['train_tokens']:,} train tokens ({meta['train_stories']:,} stories), "
        f"{meta['val_tokens']:,} val tokens ({meta['val_stories']:,} stories)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
