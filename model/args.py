"""ModelArgs: the one description of a network's shape, shared by training, sampling and export."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

POS_EMBEDDINGS = ("rope", "learned", "sinusoidal", "none")
ROPE_SCALINGS = (None, "linear", "ntk")


@dataclass
class ModelArgs:
    """A LLaMA-style decoder. Field names follow Meta's `llama/model.py`.

    The defaults are llama2.c's stories15M shape.
    """

    dim: int = 288
    n_layers: int = 6
    n_heads: int = 6
    n_kv_heads: int | None = None  # None: as many as n_heads (plain multi-head attention)
    vocab_size: int = 32000
    multiple_of: int = 32  # the SwiGLU hidden size is rounded up to a multiple of this
    ffn_dim_multiplier: float | None = None
    hidden_dim: int | None = None  # the SwiGLU width given outright (imported models); None: LLaMA's rule
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_batch_size: int = 32  # KV cache rows
    max_seq_len: int = 256  # KV cache length, and the size of the position tables
    dropout: float = 0.0
    tie_embeddings: bool = True
    pos_embedding: str = "rope"  # "rope" | "learned" | "sinusoidal" | "none"
    # RoPE scaling applied at inference to reach past the training length:
    # "linear" (position interpolation) divides positions by the factor, "ntk" (NTK-aware)
    # raises theta to theta * factor ** (head_dim / (head_dim - 2)).
    rope_scaling: str | None = None
    rope_scaling_factor: float = 1.0

    def __post_init__(self) -> None:
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"ModelArgs: {message}")

        for name in ("dim", "n_layers", "n_heads", "vocab_size", "multiple_of", "max_batch_size", "max_seq_len"):
            value = getattr(self, name)
            require(isinstance(value, int) and value > 0, f"{name} must be a positive integer, got {value!r}")
        require(self.dim % self.n_heads == 0, f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.n_kv_heads is not None:
            require(
                isinstance(self.n_kv_heads, int) and 0 < self.n_kv_heads <= self.n_heads,
                f"n_kv_heads must be between 1 and n_heads ({self.n_heads}), got {self.n_kv_heads!r}",
            )
            require(
                self.n_heads % self.n_kv_heads == 0,
                f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})",
            )
        require(
            self.pos_embedding in POS_EMBEDDINGS,
            f"pos_embedding must be one of {POS_EMBEDDINGS}, got {self.pos_embedding!r}",
        )
        if self.pos_embedding == "rope":
            require(self.head_dim % 2 == 0, f"RoPE needs an even head dim (dim / n_heads), got {self.head_dim}")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        require(self.norm_eps > 0, f"norm_eps must be positive, got {self.norm_eps}")
        require(self.rope_theta > 0, f"rope_theta must be positive, got {self.rope_theta}")
        require(
            self.rope_scaling in ROPE_SCALINGS,
            f"rope_scaling must be one of {ROPE_SCALINGS}, got {self.rope_scaling!r}",
        )
        require(self.rope_scaling_factor >= 1.0, f"rope_scaling_factor must be >= 1, got {self.rope_scaling_factor}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        """The number of key/value heads, with None resolved."""
        return self.n_kv_heads or self.n_heads

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelArgs:
        """Build from a plain dict; an unknown key is an error that lists the valid ones."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"ModelArgs: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
        return cls(**values)
