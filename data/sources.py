"""Where stories come from: the Hugging Face hub through `datasets`, or local files.

Local sources are a folder, a file or a glob of
    .txt / .txt.gz          stories separated by lines holding `<|endoftext|>` (TinyStories' own format)
    .jsonl / .json / .parquet   one story per row, in a `text` field (read with `datasets`)
A folder is read in its most common of these formats. Splits follow file names as `datasets`
infers them: train*, valid* / validation* / val*, test*; files whose names say no split are
training text. Without a validation file a fixed fraction of
the training stories is held out, chosen by a hash of each story, so the choice is the same on
every run and machine.

Plain text is read here rather than through `datasets`' text builder: that builder yields one
row per line at about 6 MB/s on this project's 2-core reference machine, slower than
sentencepiece tokenizes, so reading would become the bottleneck; our reader runs at >100 MB/s.
"""

from __future__ import annotations

import glob
import gzip
import os
import re
import socket
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from .errors import DataError

SEPARATOR = b"<|endoftext|>"
TEXT_SUFFIXES = (".txt", ".txt.gz")
TABLE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet")
SPLIT_PATTERNS = {"train": r"train", "val": r"valid|validation|val|dev", "test": r"test"}
HUB_SPLITS = {"train": "train", "val": "validation"}
BATCH = 1024  # stories per batch handed to the tokenizer


def is_hub_name(source: str) -> bool:
    """`owner/name` that is not a path on this machine."""
    return re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None and not os.path.exists(source)


def split_of(path: Path) -> str:
    """The split a file belongs to by its name, as `datasets` infers it; 'train' when it names none."""
    name = path.name.lower()
    for split, pattern in SPLIT_PATTERNS.items():
        if re.match(rf"({pattern})([-_.\d]|$)", name):
            return split
    return "train"


def local_files(source: str) -> dict[str, list[Path]]:
    """The story files of a local source, by split: {'train': [...], 'val': [...]} (test files are ignored)."""
    path = Path(source)
    if path.is_dir():
        candidates = sorted(p for p in path.iterdir() if p.is_file())
    elif path.is_file():
        candidates = [path]
    else:
        candidates = sorted(Path(p) for p in glob.glob(source) if Path(p).is_file())
        if not candidates:
            raise DataError(
                f"data source {source!r} is neither a hub dataset nor an existing file, folder or glob; "
                "set --data.source to a folder of .txt/.txt.gz/.jsonl/.parquet files"
            )
    stories = [p for p in candidates if p.name.endswith(TEXT_SUFFIXES + TABLE_SUFFIXES)]
    if path.is_dir() and stories:  # like `datasets`, a folder is read in its most common format (so a stray
        kinds = Counter(_kind(p) for p in stories)  # manifest.json beside .txt.gz stories is left alone)
        stories = [p for p in stories if _kind(p) == kinds.most_common(1)[0][0]]
    if not stories:
        raise DataError(
            f"no .txt, .txt.gz, .jsonl, .json or .parquet files in {source!r}; "
            "set --data.source to a folder or glob of story files"
        )
    splits: dict[str, list[Path]] = {"train": [], "val": []}
    for p in stories:
        splits.setdefault(split_of(p), []).append(p)
    if not splits["train"]:
        raise DataError(f"{source!r} has no training files (only {', '.join(p.name for p in stories)}); add train*.txt")
    return splits


def _kind(path: Path) -> str:
    return "text" if path.name.endswith(TEXT_SUFFIXES) else "parquet" if path.suffix == ".parquet" else "json"


class StorySource:
    """The stories of one source, split into 'train' and 'val', read in batches."""

    def __init__(self, source: str, max_stories: int = 0, val_fraction: float = 0.02, skip_bad: bool = False):
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"data.val_fraction must be between 0 and 1, got {val_fraction}")
        self.source, self.max_stories, self.val_fraction, self.skip_bad = source, max_stories, val_fraction, skip_bad
        self.hub = is_hub_name(source)
        self.files = None if self.hub else local_files(source)
        self.held_out = not self.hub and not self.files["val"]
        self.skipped = 0  # stories dropped as invalid UTF-8 (skip_bad)

    def batches(self, split: str, limit: int = 0) -> Iterator[list[str]]:
        """Lists of stories of 'train' or 'val', in source order, at most `limit` (or max_stories) in all."""
        limit = min(x for x in (limit, self.max_stories, sys.maxsize) if x > 0)
        raw = self._hub_batches(split) if self.hub else self._file_batches(split)
        count = 0
        for batch in raw:
            if self.held_out:
                batch = [s for s in batch if self._is_held_out(s) == (split == "val")]
            batch = batch[: limit - count]
            if batch:
                count += len(batch)
                yield batch
            if count >= limit:
                return
        if count == 0:
            where = "the held-out fraction of " if self.held_out and split == "val" else ""
            raise DataError(
                f"no {split} stories in {where}{self.source!r}; check --data.source (and --data.val_fraction)"
            )

    def _is_held_out(self, story: str) -> bool:
        return zlib.crc32(story.encode()) % 1_000_000 < self.val_fraction * 1_000_000

    def _file_batches(self, split: str) -> Iterator[list[str]]:
        files = self.files["train" if self.held_out else split]
        for path in files:
            if path.name.endswith(TEXT_SUFFIXES):
                yield from self._text_file_batches(path)
            else:
                yield from _table_batches([str(path)], path)

    def _text_file_batches(self, path: Path) -> Iterator[list[str]]:
        """Stories of a `<|endoftext|>`-separated text file; bad UTF-8 is reported with its byte offset."""
        opener = gzip.open if path.suffix == ".gz" else open
        batch, lines, offset, bad = [], [], 0, False
        try:
            with opener(path, "rb") as f:
                for line in f:
                    if line.strip() == SEPARATOR:
                        story = "".join(lines).strip()
                        if story and not bad:
                            batch.append(story)
                        elif bad:
                            self.skipped += 1
                        lines, bad = [], False
                        if len(batch) == BATCH:
                            yield batch
                            batch = []
                    else:
                        try:
                            lines.append(line.decode("utf-8"))
                        except UnicodeDecodeError as e:
                            if not self.skip_bad:
                                where = "of the decompressed text " if path.suffix == ".gz" else ""
                                raise DataError(
                                    f"{path} is not valid UTF-8 at byte {offset + e.start} {where}"
                                    "; fix the file or pass --data.skip_bad true to drop such stories"
                                ) from None
                            bad = True
                    offset += len(line)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"cannot read {path} ({e}); the file may be damaged") from None
        story = "".join(lines).strip()
        if story and not bad:
            batch.append(story)
        self.skipped += bad
        if batch:
            yield batch

    def _hub_batches(self, split: str) -> Iterator[list[str]]:
        yield from _table_batches(self.source, self.source, hub_split=HUB_SPLITS[split])


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def import_datasets():
    """Import `datasets` lazily, offline when the hub cannot be reached, so it fails fast instead
    of retrying for half a minute (HF_HUB_OFFLINE must be set before the import)."""
    if "datasets" not in sys.modules and not hub_reachable():
        os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets

    return datasets


def _table_batches(files_or_name, label, hub_split: str | None = None) -> Iterator[list[str]]:
    """Batches of the `text` field of a hub dataset or of local json/parquet files, streamed by `datasets`."""
    datasets = import_datasets()
    try:
        if hub_split is not None:
            ds = datasets.load_dataset(files_or_name, split=hub_split, streaming=True)
        else:
            builder = "parquet" if str(label).endswith(".parquet") else "json"
            ds = datasets.load_dataset(builder, data_files=files_or_name, split="train", streaming=True)
        for rows in ds.iter(batch_size=BATCH):
            if "text" not in rows:
                raise DataError(f"{label} has no 'text' field (fields: {', '.join(rows)}); stories must be in 'text'")
            yield [s.strip() for s in rows["text"] if s and s.strip()]
    except DataError:
        raise
    except Exception as e:  # datasets raises many kinds: connection, not found, parse errors
        if hub_split is not None and os.environ.get("HF_HUB_OFFLINE") == "1":
            raise DataError(
                f"cannot reach the Hugging Face hub for {files_or_name!r} and it is not cached; "
                "point --data.source at local story files (a folder of .txt/.txt.gz/.jsonl/.parquet)"
            ) from None
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot read {label}: {message}") from None
