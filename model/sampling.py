"""Sampling text from a model through its KV cache: prefill the prompts, then one token at a time.

The tokenizer is anything with encode(text) -> ids, decode(ids) -> text, bos_id and eos_id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .transformer import Transformer

PAD = -1  # marks the slots of a row that its prompt does not fill
DONE_CHECK_EVERY = 8


@dataclass
class Completion:
    prompt_tokens: list[int]
    tokens: list[int]  # the new tokens, without the eos that ended them
    text: str  # the decoded new tokens
    stop: str  # "eos", "max_new_tokens" or "max_seq_len"


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 keeps every token), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p}")


def sample_next(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, generator=None
) -> torch.Tensor:
    """Choose one token per row from logits [B, vocab] -> [B].

    temperature 0 is greedy. top_k keeps the k most likely tokens; top_p keeps the smallest set of
    most likely tokens whose probability reaches p (nucleus sampling). Both apply after temperature.
    """
    if temperature == 0 or top_k == 1:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # probability of the more likely tokens
        sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def decode_attention_backends():
    """SDPA kernels for decoding: not cuDNN's, which builds a new plan for every key length and so
    costs ~50 ms per token (measured on an H100, torch 2.11; benchmarks/RESULTS.md)."""
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


@torch.inference_mode()
def generate_tokens(
    model: Transformer,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    eos_id: int | None = None,
    on_step: Callable[[list[int]], None] | None = None,
) -> list[tuple[list[int], str]]:
    """Continue each prompt (a list of token ids); all rows are decoded together as one batch.

    Meta's scheme for prompts of different lengths: the first forward prefills every row up to the
    shortest prompt (start_pos=0); then each step feeds one token per row with start_pos = its
    position, where a row still inside its prompt takes its next prompt token instead of the
    sample. A row stops at eos_id (unless None), after max_new_tokens, or at the model's
    max_seq_len. on_step(row 0's new tokens so far) is called after each step, for streaming.
    Returns, per row, (new tokens without the eos, why it stopped: "eos" | "max_new_tokens" | "max_seq_len").
    """
    check_sampling(temperature, top_k, top_p)
    device = next(model.parameters()).device
    max_seq_len = model.args.max_seq_len
    longest = max(len(p) for p in prompts)
    if longest >= max_seq_len:
        raise ValueError(f"a prompt of {longest} tokens leaves no room in max_seq_len={max_seq_len}; shorten it")
    if model.args.max_batch_size < len(prompts) or model.layers[0].attention.cache is None:
        model.reset_cache(len(prompts))
    total = min(max_seq_len, longest + max_new_tokens)
    tokens = torch.full((len(prompts), total), PAD, dtype=torch.long, device=device)
    for row, ids in enumerate(prompts):
        tokens[row, : len(ids)] = torch.tensor(ids, device=device)
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None

    is_prompt = tokens != PAD
    shortest = min(len(p) for p in prompts)
    ends = [len(p) + max_new_tokens for p in prompts]
    with decode_attention_backends():
        prev = 0
        for pos in range(shortest, total):
            logits = model(tokens[:, prev:pos], start_pos=prev)[:, -1]
            chosen = sample_next(logits, temperature, top_k, top_p, generator)
            if pos < longest:  # rows still inside their prompt keep its token
                chosen = torch.where(is_prompt[:, pos], tokens[:, pos], chosen)
            tokens[:, pos] = chosen
            prev = pos
            if on_step is not None:
                on_step(_new_tokens(tokens[0, : pos + 1].tolist(), len(prompts[0]), eos_id))
            # asking the GPU whether all rows are done waits for it; do so every few tokens only (finished
            # rows decode a few extra tokens, cut off below), and keep the steps in between to the model,
            # the choice and the write: on a GPU every further op is one more launch per token
            if on_step is not None or pos % DONE_CHECK_EVERY == 0:
                if _all_done(tokens[:, : pos + 1], is_prompt[:, : pos + 1], ends, eos_id):
                    break

    results = []
    for row, ids in enumerate(prompts):
        end = min(len(ids) + max_new_tokens, total)
        new = _new_tokens(tokens[row, :end].tolist(), len(ids), eos_id)
        if len(new) < end - len(ids):
            stop = "eos"
        elif len(new) == max_new_tokens:
            stop = "max_new_tokens"
        else:
            stop = "max_seq_len"
        results.append((new, stop))
    return results


def generate(
    model: Transformer,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop_at_eos: bool = True,
    on_step: Callable[[list[int]], None] | None = None,
) -> list[Completion]:
    """Complete text prompts (each starts with bos); generate_tokens does the work."""
    encoded = [[tokenizer.bos_id] + tokenizer.encode(p) for p in prompts]
    eos_id = tokenizer.eos_id if stop_at_eos else None
    results = generate_tokens(model, encoded, max_new_tokens, temperature, top_k, top_p, seed, eos_id, on_step)
    completions = []
    for ids, (new, stop) in zip(encoded, results, strict=True):
        prompt_text = tokenizer.decode(ids[1:])  # decoded together, so a leading space of the first new piece stays
        completions.append(Completion(ids, new, tokenizer.decode(ids[1:] + new)[len(prompt_text) :], stop))
    return completions


def _all_done(tokens: torch.Tensor, is_prompt: torch.Tensor, ends: list[int], eos_id: int | None) -> bool:
    """Whether every row of tokens [B, filled] has either filled its last slot (ends[row]: prompt length plus
    max_new_tokens) or written eos_id after its prompt."""
    filled = tokens.shape[1]
    counting = [row for row, end in enumerate(ends) if end > filled]
    if not counting or eos_id is None:
        return not counting
    said_eos = ((tokens[counting] == eos_id) & ~is_prompt[counting]).any(dim=-1)
    return bool(said_eos.all())


def _new_tokens(row: list[int], prompt_len: int, eos_id: int | None) -> list[int]:
    """A row's generated tokens, cut before the first eos (and before any unfilled slot)."""
    new = row[prompt_len:]
    cut = [i for i, t in enumerate(new) if t in (PAD, eos_id)]
    return new[: cut[0]] if cut else new
