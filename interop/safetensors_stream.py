"""Write a safetensors file one tensor at a time, so a model larger than memory can be converted.

The format (github.com/huggingface/safetensors): an 8-byte little-endian header length, a JSON
header giving each tensor's dtype, shape and byte range, then the raw bytes in that order. The
safetensors package only writes from a dict held in memory, hence this small writer; reading
uses the package's lazy `safe_open`.
"""

import json
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64"}


def write_streaming(
    path: str | Path, specs: Iterable[tuple[str, tuple[int, ...], torch.dtype]], load: Callable[[str], torch.Tensor]
) -> None:
    """Write tensors named in `specs` (name, shape, dtype), each produced by load(name) when its turn comes."""
    specs = list(specs)
    header, offset = {}, 0
    for name, shape, dtype in specs:
        size = dtype.itemsize
        for dim in shape:
            size *= dim
        header[name] = {"dtype": DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for name, shape, dtype in specs:
            tensor = load(name).contiguous()
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise ValueError(f"{name}: expected {shape} {dtype}, got {tuple(tensor.shape)} {tensor.dtype}")
            f.write(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
