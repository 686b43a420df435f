"""Grouped-query causal self-attention with a key/value cache for incremental decoding."""

import torch
import torch.nn.functional as F
from torch import nn

from .args import ModelArgs
from .layers import dropout_layer
from .position import apply_rope


class KVCache(nn.Module):
    """Keys (already rotated) and values of past positions: buffers k, v [batch, n_kv_heads, seq_len, head_dim]."""

    def __init__(self, batch_size: int, n_kv_heads: int, seq_len: int, head_dim: int, device, dtype):
        super().__init__()
        shape = (batch_size, n_kv_heads, seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def update(self, start_pos, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, n_kv_heads, T, head_dim] at positions start_pos..start_pos+T-1.

        start_pos an int: returns the keys and values so far, [B, n_kv_heads, start_pos+T, head_dim].
        start_pos a 0-d tensor (one token, the static-shape decode step): returns the whole cache,
        [B, n_kv_heads, max_seq_len, head_dim], for the caller to mask, so shapes never change.
        """
        batch = k.shape[0]
        if isinstance(start_pos, torch.Tensor):
            self.k[:batch].index_copy_(2, start_pos.view(1), k)
            self.v[:batch].index_copy_(2, start_pos.view(1), v)
            return self.k[:batch], self.v[:batch]
        end = start_pos + k.shape[2]
        self.k[:batch, :, start_pos:end] = k
        self.v[:batch, :, start_pos:end] = v
        return self.k[:batch, :, :end], self.v[:batch, :, :end]


class Attention(nn.Module):
    """Multi-head attention where n_heads query heads share n_kv_heads key/value heads.

    Query head h reads key/value head h // (n_heads // n_kv_heads).
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.kv_heads, args.head_dim
        self.max_batch_size, self.max_seq_len = args.max_batch_size, args.max_seq_len
        self.wq = nn.Linear(args.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, args.dim, bias=False)
        self.dropout = args.dropout
        self.resid_dropout = dropout_layer(args.dropout)
        self.cache: KVCache | None = None

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        start_pos: int | torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: [B, T, dim] -> [B, T, dim].

        rope: apply_rope's tables for these positions (see rope_tables), or None without RoPE.
        start_pos: None for a full causal pass that touches no cache; otherwise the position of
        x's first token, whose keys and values go into the cache (a 0-d tensor in the static
        decode step, see KVCache.update).
        mask: bool (True = may attend), [T, start_pos + T] for a chunk of several tokens that
        starts past position 0, [1, max_seq_len] in the static decode step; None otherwise
        (plain causal attention).
        """
        batch, length, _ = x.shape
        q = self.wq(x).view(batch, length, self.n_heads, self.head_dim)
        k = self.wk(x).view(batch, length, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(batch, length, self.n_kv_heads, self.head_dim)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, head_dim]

        if start_pos is not None:
            if self.cache is None:
                self.cache = KVCache(
                    self.max_batch_size, self.n_kv_heads, self.max_seq_len, self.head_dim, x.device, k.dtype
                )
            k, v = self.cache.update(start_pos, k, v)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None and length > 1,  # from position 0, or one token that sees everything
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )
        out = out.transpose(1, 2).reshape(batch, length, self.n_heads * self.head_dim)
        return self.resid_dropout(self.wo(out))
