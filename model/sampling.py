"""Sampling text from a model through its KV cache: prefill the prompts, then one token at a time.

The tokenizer is anything with encode(text) -> ids, decode(ids) -> text, bos_id and eos_id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .transformer import Transformer


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


@torch.inference_mode()
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
    """Complete each prompt; all of them are decoded together as one batch.

    Meta's scheme for prompts of different lengths: the first forward prefills every row up to the
    shortest prompt (start_pos=0); then each step feeds one token per row with start_pos = its
    position, where a row still inside its prompt takes its next prompt token instead of the
    sample. A row stops at eos, after max_new_tokens, or at the model's max_seq_len.
    on_step(row 0's new tokens so far) is called after each step, for streaming.
    """
    check_sampling(temperature, top_k, top_p)
    device = next(model.parameters()).device
    encoded = [[tokenizer.bos_id] + tokenizer.encode(p) for p in prompts]
    max_seq_len = model.args.max_seq_len
    longest = max(len(t) for t in encoded)
    if longest >= max_seq_len:
        raise ValueError(f"a prompt of {longest} tokens leaves no room in max_seq_len={max_seq_len}; shorten it")
    if model.args.max_batch_size < len(prompts) or model.layers[0].attention.cache is None:
        model.reset_cache(max(len(prompts), 1))
    total = min(max_seq_len, longest + max_new_tokens)
    pad = -1
    tokens = torch.full((len(prompts), total), pad, dtype=torch.long, device=device)
    for row, ids in enumerate(encoded):
        tokens[row, : len(ids)] = torch.tensor(ids, device=device)
    is_prompt = tokens != pad
    lengths = torch.tensor([len(ids) for ids in encoded], device=device)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None

    prev = 0
    for pos in range(min(len(t) for t in encoded), total):
        logits = model(tokens[:, prev:pos], start_pos=prev)[:, -1]
        chosen = sample_next(logits, temperature, top_k, top_p, generator)
        chosen = torch.where(is_prompt[:, pos], tokens[:, pos], chosen)
        tokens[:, pos] = chosen
        new = ~is_prompt[:, pos]
        done |= new & (pos + 1 - lengths >= max_new_tokens)
        if stop_at_eos:
            done |= new & (chosen == tokenizer.eos_id)
        prev = pos
        if on_step is not None:
            on_step(_new_tokens(tokens[0, : pos + 1].tolist(), len(encoded[0]), tokenizer.eos_id, stop_at_eos))
        if done.all():
            break

    completions = []
    for row, ids in enumerate(encoded):
        full = tokens[row].tolist()
        end = min(len(ids) + max_new_tokens, total)
        new = _new_tokens(full[:end], len(ids), tokenizer.eos_id, stop_at_eos)
        if stop_at_eos and len(new) < end - len(ids):
            stop = "eos"
        elif len(new) == max_new_tokens:
            stop = "max_new_tokens"
        else:
            stop = "max_seq_len"
        prompt_text = tokenizer.decode(ids[1:])  # decoded together, so a leading space of the first new piece stays
        completions.append(Completion(ids, new, tokenizer.decode(ids[1:] + new)[len(prompt_text) :], stop))
    return completions


def _new_tokens(row: list[int], prompt_len: int, eos_id: int, stop_at_eos: bool) -> list[int]:
    """A row's generated tokens, cut before the first eos (and before any unfilled slot)."""
    new = row[prompt_len:]
    cut = [i for i, t in enumerate(new) if t == -1 or (stop_at_eos and t == eos_id)]
    return new[: cut[0]] if cut else new
