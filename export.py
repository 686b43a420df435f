"""Convert checkpoints: to Hugging Face or llama2.c formats, and from Hugging Face LLaMA folders.

python export.py runs/stories15M --to hf --out hf/stories15M
python export.py runs/stories15M --to llama2c --out out/model.bin      # and out/tokenizer.bin
python export.py path/to/hf_llama --from hf --out checkpoints/imported
"""

import argparse
import sys

from data.errors import DataError
from interop import ExportError
from interop.hf import export_hf, import_hf
from interop.llama2c import export_llama2c
from model.checkpoint import CheckpointError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="a run or checkpoint folder (--to), or a Hugging Face folder (--from hf)")
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to", choices=["hf", "llama2c"])
    direction.add_argument("--from", dest="from_", choices=["hf"])
    parser.add_argument("--out", required=True, help="the folder (hf, import) or .bin file (llama2c) to write")
    parser.add_argument(
        "--llama2c-version", type=int, choices=[0, 1], default=0,
        help="0: the legacy layout upstream run.c reads (default); 1: with the 'ak42' header",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        if args.from_ == "hf":
            out = import_hf(args.source, args.out, args.overwrite, args.quiet)
        elif args.to == "hf":
            out = export_hf(args.source, args.out, args.overwrite, args.quiet)
        else:
            out = export_llama2c(args.source, args.out, args.llama2c_version, args.quiet)
    except (ExportError, CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
