"""The data pipeline: text -> tokenizer -> shards -> batches, and every bad input it must refuse."""

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from data.config import DataConfig
from data.errors import DataError
from data.loader import TrainBatches, open_shards, val_batches
from data.prepare import prepare
from data.sources import StorySource, split_of
from data.tokenizer import Tokenizer
from tests.conftest import REPO, write_corpus


def test_tokenizer_round_trips_text_with_llama_ids(sample_data):
    tok = Tokenizer(f"{sample_data.dir}/tokenizer.model")
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (1, 2, 1024)
    assert tok.id_to_piece(0) == "<unk>" and tok.id_to_piece(1) == "<s>" and tok.id_to_piece(2) == "</s>"
    text = 'Once upon a time, Lily saw 1234 birds.\n\n  She said: "Wow!" — café 🐦'
    ids = tok.encode(text, bos=True, eos=True)
    assert ids[0] == 1 and ids[-1] == 2 and 0 not in ids  # byte fallback: no unknowns even for emoji
    assert tok.decode(ids) == text
    assert all(tok.id_to_piece(i) in "0123456789" for i in tok.encode("1234")[1:])  # digits are split


def test_shards_are_the_stories_encoded_back_to_back(sample_data, sample_dir):
    tok = Tokenizer(f"{sample_data.dir}/tokenizer.model")
    meta = json.loads((REPO / sample_data.dir / "meta.json").read_text())
    shards = open_shards(sample_data.dir, tok.sha256, 1024)
    stories = [s.strip() for s in gzip.open(sample_dir / "valid_v2.txt.gz", "rt").read().split("<|endoftext|>")]
    stories = [s for s in stories if s]
    valid_first = [s.strip() for s in gzip.open(sample_dir / "valid.txt.gz", "rt").read().split("<|endoftext|>")]
    expected = []
    for story in [s for s in valid_first if s] + stories:  # split files in name order: valid, valid_v2
        expected += [1] + tok.encode(story) + [2]
    assert shards["val"].tolist() == expected
    assert meta["val_tokens"] == len(expected) and meta["val_stories"] == 2301
    assert meta["train_stories"] == 7240 and meta["train_tokens"] == len(shards["train"])
    assert meta["held_out_val"] is False and meta["dtype"] == "uint16"
    # every story starts right after the previous one's eos
    train = np.asarray(shards["train"])
    assert train[0] == 1 and train[-1] == 2
    assert np.array_equal(np.flatnonzero(train == 1)[1:], np.flatnonzero(train == 2)[:-1] + 1)


def test_prepare_on_a_generated_corpus_holds_out_a_fixed_fraction(tmp_path):
    stories = write_corpus(tmp_path / "corpus", n_stories=400)
    cfg = DataConfig(source=str(tmp_path / "corpus"), dir=str(tmp_path / "out"), vocab_size=320, val_fraction=0.1)
    prepare(cfg, quiet=True)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["held_out_val"] is True
    assert meta["train_stories"] + meta["val_stories"] == 400
    assert 20 <= meta["val_stories"] <= 60  # about 10%
    tok = Tokenizer(tmp_path / "out" / "tokenizer.model")
    held = [list(s) for s in StorySource(cfg.source, val_fraction=0.1).batches("val")]
    assert [s for batch in held for s in batch] == [s for s in stories if s in held[0]]
    total = sum(len(tok.encode(s)) + 2 for s in stories)
    assert meta["train_tokens"] + meta["val_tokens"] == total


def test_prepare_skips_work_that_is_already_done(tmp_path):
    write_corpus(tmp_path / "corpus")
    cfg = DataConfig(source=str(tmp_path / "corpus"), dir=str(tmp_path / "out"), vocab_size=320)
    prepare(cfg, quiet=True)
    stamp = (tmp_path / "out" / "train.bin").stat().st_mtime_ns
    prepare(cfg, quiet=True)
    assert (tmp_path / "out" / "train.bin").stat().st_mtime_ns == stamp
    cfg.max_stories = 100  # another setting: the shards are made again
    prepare(cfg, quiet=True)
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["train_stories"] == 100


def test_max_stories_takes_a_prefix(tmp_path):
    stories = write_corpus(tmp_path / "c", name="train.txt")
    write_corpus(tmp_path / "c", n_stories=50, seed=1, name="valid.txt")
    got = [s for b in StorySource(str(tmp_path / "c"), max_stories=120).batches("train") for s in b]
    assert got == stories[:120]


@pytest.mark.parametrize(
    "name, split",
    [
        ("train_000.txt.gz", "train"),
        ("valid.txt.gz", "val"),
        ("validation-0.jsonl", "val"),
        ("val.txt", "val"),
        ("test.parquet", "test"),
        ("stories.txt", "train"),
        ("trainee.txt", "train"),
    ],
)
def test_splits_follow_file_names(name, split, tmp_path):
    assert split_of(tmp_path / name) == split


def test_jsonl_and_parquet_sources_through_datasets(tmp_path):
    stories = write_corpus(tmp_path / "txt", n_stories=40)
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "train.jsonl").write_text(
        "".join(json.dumps({"text": s, "id": i}) + "\n" for i, s in enumerate(stories))
    )
    assert [s for b in StorySource(str(tmp_path / "j")).batches("train") for s in b] == [
        s for s in stories if not StorySource(str(tmp_path / "j"))._is_held_out(s)
    ]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": stories}), tmp_path / "train.parquet")
    pq.write_table(pa.table({"text": stories[:5]}), tmp_path / "valid.parquet")
    source = StorySource(str(tmp_path / "*.parquet"))
    assert [s for b in source.batches("val") for s in b] == stories[:5]


def test_loader_is_deterministic_and_splits_a_global_batch_across_ranks(sample_data):
    train = open_shards(sample_data.dir)["train"]
    one = TrainBatches(train, batch_size=8, seq_len=32, seed=3, accum_steps=2)
    x, y = one.get(step=5, micro=1)
    assert x.shape == (8, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    assert torch.equal(x, TrainBatches(train, 8, 32, seed=3, accum_steps=2).get(5, 1)[0])
    assert not torch.equal(x, one.get(6, 1)[0]) and not torch.equal(x, one.get(5, 0)[0])
    assert not torch.equal(x, TrainBatches(train, 8, 32, seed=4, accum_steps=2).get(5, 1)[0])
    ranks = [TrainBatches(train, 4, 32, seed=3, rank=r, world_size=2, accum_steps=2).get(5, 1)[0] for r in (0, 1)]
    assert not torch.equal(ranks[0], ranks[1])
    assert torch.equal(torch.cat(ranks), x)  # two ranks of 4 = one process of 8


def test_validation_batches_are_fixed_and_cover_the_shard(sample_data):
    val = open_shards(sample_data.dir)["val"]
    batches = val_batches(val, batch_size=4, seq_len=64, max_batches=5)
    assert len(batches) == 5 and all(x.shape == (4, 64) for x, _ in batches)
    again = val_batches(val, batch_size=4, seq_len=64, max_batches=5)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    assert torch.equal(batches[-1][1][-1], torch.from_numpy(val[-64:].astype(np.int64)))  # reaches the end
    few = val_batches(val[:200], batch_size=4, seq_len=64, max_batches=5)
    assert sum(len(x) for x, _ in few) == 3  # only three windows fit in 200 tokens


# ---- bad input: one clear error each ---------------------------------------------------------


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(DataError, match="neither a hub dataset nor an existing file"):
        StorySource(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .txt"):
        StorySource(str(tmp_path / "empty"))
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "train.txt").write_text("\n<|endoftext|>\n  \n")
    with pytest.raises(DataError, match="no train stories"):
        list(StorySource(str(tmp_path / "blank")).batches("train"))


def test_invalid_utf8_is_reported_with_file_and_offset_or_skipped(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    good = b"A good story.\n<|endoftext|>\n"
    (folder / "train.txt").write_bytes(good + b"A bad \xff story.\n<|endoftext|>\nAnother good one.\n<|endoftext|>\n")
    with pytest.raises(DataError, match=rf"train.txt is not valid UTF-8 at byte {len(good) + 6}.*skip_bad"):
        list(StorySource(str(folder)).batches("train"))
    source = StorySource(str(folder), skip_bad=True, val_fraction=0.001)
    assert [s for b in source.batches("train") for s in b] == ["A good story.", "Another good one."]
    assert source.skipped == 1


def test_vocab_too_large_for_the_text(tmp_path):
    write_corpus(tmp_path / "c", n_stories=20)
    with pytest.raises(DataError, match=r"data.vocab_size=5000 is too large .*at most \d+"):
        prepare(DataConfig(source=str(tmp_path / "c"), dir=str(tmp_path / "o"), vocab_size=5000), quiet=True)
    assert not (tmp_path / "o" / "meta.json").exists()


def test_shards_of_another_tokenizer_are_refused(tmp_path, sample_data):
    write_corpus(tmp_path / "c")
    cfg = DataConfig(source=str(tmp_path / "c"), dir=str(tmp_path / "o"), vocab_size=320)
    prepare(cfg, quiet=True)
    other = Tokenizer(f"{sample_data.dir}/tokenizer.model")
    with pytest.raises(DataError, match="made with another tokenizer"):
        open_shards(cfg.dir, other.sha256)
    with pytest.raises(DataError, match="vocab_size is 256; set --model.vocab_size 320"):
        open_shards(cfg.dir, vocab_size=256)


def test_a_given_tokenizer_must_match_the_vocab_size(tmp_path, sample_data):
    write_corpus(tmp_path / "c")
    cfg = DataConfig(
        source=str(tmp_path / "c"),
        dir=str(tmp_path / "o"),
        vocab_size=320,
        tokenizer=f"{sample_data.dir}/tokenizer.model",
    )
    with pytest.raises(DataError, match="has 1024 ids but data.vocab_size is 320; set --data.vocab_size 1024"):
        prepare(cfg, quiet=True)
    cfg.vocab_size = 1024
    prepare(cfg, quiet=True)
    assert open_shards(cfg.dir, Tokenizer(cfg.tokenizer).sha256)


def test_truncated_shard_and_too_long_sequences(tmp_path):
    write_corpus(tmp_path / "c")
    cfg = DataConfig(source=str(tmp_path / "c"), dir=str(tmp_path / "o"), vocab_size=320)
    prepare(cfg, quiet=True)
    shards = open_shards(cfg.dir)
    with pytest.raises(DataError, match="fewer than one sequence of max_seq_len"):
        val_batches(shards["val"], 4, seq_len=len(shards["val"]), max_batches=1)
    with pytest.raises(DataError, match="lower --model.max_seq_len"):
        TrainBatches(shards["train"], 4, seq_len=len(shards["train"]))
    path = tmp_path / "o" / "train.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match="truncated"):
        open_shards(cfg.dir)
    with pytest.raises(DataError, match="prepare the data first"):
        open_shards(tmp_path)


def test_not_a_tokenizer(tmp_path):
    (tmp_path / "x.model").write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a sentencepiece model"):
        Tokenizer(tmp_path / "x.model")
    with pytest.raises(DataError, match="does not exist"):
        Tokenizer(tmp_path / "missing.model")


def test_cli_fails_fast_and_clearly_when_the_hub_is_unreachable(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "data.prepare", "--data.dir", str(tmp_path / "o"), "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot reach the Hugging Face hub for 'roneneldan/TinyStories'")
    assert "--data.source" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_rejects_an_unknown_key(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "data.prepare", "--data.vocab", "300"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "error: unknown key data.vocab; valid keys in [data]: source, dir, vocab_size"
    )
