"""DataConfig: the `[data]` section of a config file, read by both `data.prepare` and `train.py`."""

from dataclasses import dataclass

HUB_DATASET = "roneneldan/TinyStories"


@dataclass
class DataConfig:
    source: str = HUB_DATASET  # a hub dataset name, or a local folder / file / glob
    dir: str = "data_cache/tinystories"  # where the tokenizer and the shards are written
    vocab_size: int = 4096
    tokenizer: str = ""  # an existing sentencepiece .model to use; empty: train one on the training text
    max_stories: int = 0  # take only the first N stories of each split; 0: all
    val_fraction: float = 0.02  # held out of the training text when the source has no validation split
    tokenizer_train_stories: int = 200_000  # stories the tokenizer is trained on (the first ones)
    num_proc: int = 0  # threads for tokenizing; 0: all cores
    skip_bad: bool = False  # drop stories that are not valid UTF-8 (with a warning) instead of stopping
