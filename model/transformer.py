"""The decoder: token embeddings, n_layers pre-norm blocks, a final norm and the output layer."""

import dataclasses
import math

import torch
from torch import nn
from torch._dynamo.exc import BackendCompilerFailed
from torch._inductor import config as inductor_config
from torch.nn.attention import SDPBackend, sdpa_kernel

from .args import ModelArgs
from .attention import Attention
from .layers import FeedForward, RMSNorm, dropout_layer, ffn_hidden_dim
from .position import LearnedPositionEmbedding, RotaryEmbedding, SinusoidalPositionEmbedding

try:  # what torch.compile raises when it cannot build code (no C++ compiler for a CPU build, say)
    from torch._inductor.exc import InductorError

    COMPILE_ERRORS: tuple[type[Exception], ...] = (InductorError, BackendCompilerFailed)
except ImportError:  # torch 2.6 reports every backend failure as BackendCompilerFailed
    COMPILE_ERRORS = (BackendCompilerFailed,)


class TransformerBlock(nn.Module):
    """x + attention(norm(x)), then h + feed_forward(norm(h))."""

    def __init__(self, layer_id: int, args: ModelArgs):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args)
        hidden = args.hidden_dim or ffn_hidden_dim(args.dim, args.multiple_of, args.ffn_dim_multiplier)
        self.feed_forward = FeedForward(args.dim, hidden, args.dropout)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x, rope, start_pos=None, mask=None):
        """x: [B, T, dim] -> [B, T, dim]; the other arguments are Attention.forward's."""
        h = x + self.attention(self.attention_norm(x), rope, start_pos, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """A LLaMA-style language model with Meta's weight names."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.rope = RotaryEmbedding(args) if args.pos_embedding == "rope" else None
        if args.pos_embedding == "learned":
            self.pos_embeddings = LearnedPositionEmbedding(args.max_seq_len, args.dim)
        elif args.pos_embedding == "sinusoidal":
            self.pos_embeddings = SinusoidalPositionEmbedding(args.max_seq_len, args.dim)
        else:
            self.pos_embeddings = None
        self.dropout = dropout_layer(args.dropout)
        self.layers = nn.ModuleList(TransformerBlock(i, args) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self._decode_step = None  # see use_static_decode
        self.init_weights()

    def init_weights(self) -> None:
        """GPT-2's scheme, as llama2.c uses it: normal(0, 0.02) everywhere, and the two
        projections that write into the residual stream (wo, w2) scaled by 1/sqrt(2 * n_layers)
        so the stream's variance does not grow with depth. Norm weights start at one."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding, LearnedPositionEmbedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        residual_std = 0.02 / math.sqrt(2 * self.args.n_layers)
        for layer in self.layers:
            nn.init.normal_(layer.attention.wo.weight, mean=0.0, std=residual_std)
            nn.init.normal_(layer.feed_forward.w2.weight, mean=0.0, std=residual_std)

    def forward(self, tokens: torch.Tensor, start_pos: int | None = None) -> torch.Tensor:
        """tokens: [B, T] int -> logits [B, T, vocab_size] (float32 unless autocast says otherwise).

        start_pos=None: a full causal pass over positions 0..T-1 that touches no cache.
        start_pos=k: tokens sit at positions k..k+T-1; their keys and values are written into the
        KV cache, and attention reads the cache up to k+T.
        """
        batch, length = tokens.shape
        self._check_positions(batch, length, start_pos)
        if self._decode_step is not None and length == 1 and start_pos is not None:
            # compiled steps are specialised on input strides; a column sliced from a wider token buffer has that
            # buffer's row length as its stride, so hand them a fresh [B, 1] copy
            return self._decode_step(tokens.clone(memory_format=torch.contiguous_format), start_pos)
        return self.unchecked_forward(tokens, start_pos)

    def unchecked_forward(self, tokens: torch.Tensor, start_pos: int | None) -> torch.Tensor:
        """forward without the position checks and the decode-step dispatch."""
        length = tokens.shape[1]
        first = 0 if start_pos is None else start_pos
        h = self.tok_embeddings(tokens)
        if self.pos_embeddings is not None:
            h = h + self.pos_embeddings(first, length).to(h.dtype)
        h = self.dropout(h)
        rope = self.rope(first, length) if self.rope is not None else None
        mask = None
        if first > 0 and length > 1:  # a chunk after the prefill: query i sees keys 0..first+i
            keys = torch.arange(first + length, device=tokens.device)
            mask = keys[None, :] <= (first + torch.arange(length, device=tokens.device))[:, None]
        for layer in self.layers:
            h = layer(h, rope, start_pos, mask)
        return self.output(self.norm(h))

    def static_decode_step(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """One token per row at position `pos` (a 0-d tensor): tokens [B, 1] -> logits [B, 1, vocab].

        Every shape is fixed (attention reads the whole cache under a mask), so torch.compile can
        turn the step into one CUDA graph that is replayed for every token, as gpt-fast does.
        Positions are not checked here; forward checks them before calling it.
        """
        h = self.tok_embeddings(tokens)
        at = pos.view(1)  # index_select, not table[pos]: a tensor index would make the shape data-dependent
        if self.pos_embeddings is not None:
            table = self.pos_embeddings.weight if self.args.pos_embedding == "learned" else self.pos_embeddings.table
            h = h + table.index_select(0, at).to(h.dtype)
        rope = (self.rope.cos.index_select(0, at), self.rope.sin.index_select(0, at)) if self.rope is not None else None
        mask = (torch.arange(self.args.max_seq_len, device=tokens.device) <= pos)[None, :]
        for layer in self.layers:
            h = layer(h, rope, pos, mask)
        return self.output(self.norm(h))

    def use_static_decode(self, compile: bool = True) -> None:
        """Route one-token forwards through static_decode_step, compiled with CUDA graphs unless told not to."""
        device = self.tok_embeddings.weight.device
        self.register_buffer("decode_positions", torch.arange(self.args.max_seq_len, device=device), persistent=False)
        step = self.static_decode_step
        if compile:
            step = torch.compile(step, mode="reduce-overhead", fullgraph=True)

        def static_step(tokens: torch.Tensor, start_pos: int) -> torch.Tensor:
            # a view into a tensor already on the device: torch.tensor(start_pos, device=...) would copy
            # from the host and so wait for the GPU at every token
            return step(tokens, self.decode_positions[start_pos])

        self._decode_step = static_step

    def compile_decode(self) -> None:
        """Compile the one-token decode step in the way that is fastest on the model's device.

        CUDA: the static step as CUDA graphs (use_static_decode). CPU: see compile_cpu_decode; that
        step keeps the weights it first ran with, so compile after loading them, not during training.
        """
        device = self.tok_embeddings.weight.device
        if device.type == "cuda":
            self.use_static_decode()
        elif device.type == "cpu":
            self._decode_step = compile_cpu_decode(self.unchecked_forward)
        else:
            raise ValueError(f"compiled decoding runs on cuda or cpu, not {device.type}; decode without compiling")

    def _check_positions(self, batch: int, length: int, start_pos: int | None) -> None:
        """Raise a clear ValueError for positions or a batch the model cannot serve."""
        first = 0 if start_pos is None else start_pos
        if first < 0:
            raise ValueError(f"start_pos must be >= 0, got {start_pos}")
        if first + length > self.args.max_seq_len:
            raise ValueError(
                f"positions {first}..{first + length - 1} exceed max_seq_len={self.args.max_seq_len}; "
                "use a shorter input or a model built with a larger max_seq_len"
            )
        if start_pos is not None and batch > self.args.max_batch_size:
            raise ValueError(
                f"batch of {batch} exceeds the KV cache's max_batch_size={self.args.max_batch_size}; "
                "build the model with a larger max_batch_size"
            )

    def reset_cache(self, max_batch_size: int | None = None) -> None:
        """Drop every layer's KV cache; the next forward with start_pos allocates a fresh one,
        with room for max_batch_size rows when given (args.max_batch_size otherwise)."""
        if max_batch_size is not None:
            self.args = dataclasses.replace(self.args, max_batch_size=max_batch_size)
        for layer in self.layers:
            layer.attention.cache = None
            layer.attention.max_batch_size = self.args.max_batch_size

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameters counted once (a tied output layer is not counted twice)."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.tok_embeddings.weight.numel()
            if isinstance(self.pos_embeddings, LearnedPositionEmbedding):
                total -= self.pos_embeddings.weight.numel()
        return total


def compile_cpu_decode(forward):
    """forward(tokens, start_pos), compiled by inductor for one-token steps on a CPU.

    A CPU decode step is memory-bound matrix-vector products, which MKL runs on one thread through
    nn.Linear's transposed weight (2.2 ms for stories15M's 32000x288 output layer). Inductor's
    C++ GEMM template, on weights frozen into the compiled code, takes 0.4-0.55 ms on both cores;
    attention is decomposed (SDPA's MATH backend) so it fuses with its neighbours. The second
    position recompiles the step with start_pos symbolic (torch.compile's automatic dynamic shapes),
    and from then on one compiled step reads only the filled part of the cache at every position;
    marking everything dynamic from the start would add ~0.15 ms of shape guards to every token.
    """
    compiled = torch.compile(forward, mode="max-autotune", fullgraph=True)

    def step(tokens: torch.Tensor, start_pos: int) -> torch.Tensor:
        # set around each call because compiling happens inside one (torch.compile's options= does not reach freezing)
        with (
            inductor_config.patch(freezing=True, max_autotune_gemm_backends="CPP", autotune_num_choices_displayed=0),
            sdpa_kernel(SDPBackend.MATH),
        ):
            return compiled(tokens, start_pos)

    return step
