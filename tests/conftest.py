"""Shared fixtures: the TinyStories sample beside the repository, and small corpora made here."""

import os
import random
from pathlib import Path

import pytest

from data.config import DataConfig
from data.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("TINYSTORIES_SAMPLE", REPO.parent / "shared" / "data" / "tinystories"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real TinyStories sample (../shared/data/tinystories). CI must have it; elsewhere its tests skip."""
    if not SAMPLE.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"the TinyStories sample is missing at {SAMPLE}")
        pytest.skip(f"no TinyStories sample at {SAMPLE} (set TINYSTORIES_SAMPLE)")
    return SAMPLE


@pytest.fixture(scope="session")
def sample_data(sample_dir, tmp_path_factory) -> DataConfig:
    """The sample tokenized once per test session with a 1024-token vocabulary."""
    cfg = DataConfig(source=str(sample_dir), dir=str(tmp_path_factory.mktemp("sample_data")), vocab_size=1024)
    prepare(cfg, quiet=True)
    return cfg


WORDS = "the a cat dog sun moon tree big small happy sad ran jumped saw played with in on and then".split()


def write_corpus(folder: Path, n_stories: int = 300, seed: int = 0, name: str = "stories.txt") -> list[str]:
    """A made-up corpus in TinyStories' text format; returns its stories."""
    rng = random.Random(seed)
    stories = []
    for i in range(n_stories):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "." for _ in range(3)]
        stories.append(f"Story {i}: " + "\n".join(lines))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories))
    return stories
