"""A sentencepiece BPE tokenizer with LLaMA's choices: unk=0, bos=1, eos=2, no pad, byte fallback."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import sentencepiece as spm

from .errors import DataError

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2


class Tokenizer:
    """Encode text to ids and back with a sentencepiece model file."""

    bos_id, eos_id = BOS_ID, EOS_ID

    def __init__(self, model_file: str | Path):
        self.path = Path(model_file)
        if not self.path.is_file():
            raise DataError(f"tokenizer {self.path} does not exist; give an existing sentencepiece .model file")
        self.proto = self.path.read_bytes()
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(self.proto)
        except RuntimeError:
            raise DataError(f"{self.path} is not a sentencepiece model; give a .model file") from None
        if (self.sp.bos_id(), self.sp.eos_id()) != (BOS_ID, EOS_ID):
            raise DataError(
                f"{self.path} has bos={self.sp.bos_id()}, eos={self.sp.eos_id()}; "
                f"this project needs bos={BOS_ID}, eos={EOS_ID} (LLaMA's ids)"
            )
        self.sha256 = hashlib.sha256(self.proto).hexdigest()

    @property
    def vocab_size(self) -> int:
        return self.sp.vocab_size()

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        return [BOS_ID] * bos + self.sp.encode(text) + [EOS_ID] * eos

    def encode_batch(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
        """Encode many texts at once on `num_threads` threads (0: all cores); no bos/eos added."""
        return self.sp.encode(texts, num_threads=num_threads or os.cpu_count() or 1)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode(list(ids))

    def id_to_piece(self, token_id: int) -> str:
        return self.sp.id_to_piece(token_id)


def _lines(stories: Iterable[list[str]]) -> Iterator[str]:
    """sentencepiece learns from sentences: each non-empty line of each story."""
    for batch in stories:
        for story in batch:
            for line in story.split("\n"):
                if line.strip():
                    yield line


def train_tokenizer(
    stories: Iterable[list[str]], vocab_size: int, model_file: str | Path, num_threads: int = 0
) -> Tokenizer:
    """Train a BPE tokenizer on batches of stories and write it to `model_file` (atomically)."""
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_lines(stories),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            character_coverage=1.0,
            byte_fallback=True,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            unk_surface=r" \342\201\207 ",
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_id=-1,
            input_sentence_size=5_000_000,
            shuffle_input_sentence=True,
            max_sentence_length=16384,
            self_test_sample_size=0,
            num_threads=num_threads or os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        message = str(e)
        too_large = re.search(r"Vocabulary size (?:is )?too high.*<= (\d+)", message)
        if too_large:
            limit = too_large.group(1)
            raise DataError(
                f"data.vocab_size={vocab_size} is too large for this little text (at most {limit}); "
                "lower --data.vocab_size or add text"
            ) from None
        too_small = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
        if too_small:
            raise DataError(
                f"data.vocab_size={vocab_size} is too small: the 256 byte pieces, the special ids and this text's "
                f"characters need at least {too_small.group(2)}; raise --data.vocab_size"
            ) from None
        raise DataError(f"sentencepiece could not train a tokenizer: {message.strip()}") from None
    path = Path(model_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(model.getvalue())
    tmp.replace(path)
    return Tokenizer(path)
