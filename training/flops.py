"""Model FLOPs per token and the device's peak, for model FLOPs utilisation (MFU)."""

import torch

from model import Transformer

# Dense bf16 tensor-core peaks, FLOP/s, from the vendors' datasheets.
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "RTX 4090": 165e12}


def flops_per_token(model: Transformer, seq_len: int) -> float:
    """Training FLOPs per token: 6 per weight that multiplies (forward and backward) plus attention's
    12 * layers * dim * seq_len (PaLM's appendix B). Embedding tables are lookups and count nothing;
    a tied output layer is counted once, through its matrix."""
    args = model.args
    weights = model.num_params()
    if not args.tie_embeddings:
        weights -= model.tok_embeddings.weight.numel()
    if args.pos_embedding == "learned":
        weights -= model.pos_embeddings.weight.numel()
    return 6 * weights + 12 * args.n_layers * args.dim * seq_len


def peak_flops(device: torch.device) -> float | None:
    """The device's bf16 peak in FLOP/s, or None where unknown (CPUs, unlisted GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK.items() if key in name), None)
