"""RoPE against absolute position embeddings: `python compare.py RUN_DIR [RUN_DIR ...] --out reports/pe`.

Reads each run's metrics.jsonl and latest checkpoint, groups runs by model.pos_embedding (several
seeds of one variant give a mean and a spread), and writes into --out:
    curves.png      validation loss against training tokens, every run
    positions.png   loss along a window up to 4x the training context (RoPE also scaled)
    decay.png       RoFormer's long-term decay bound for the runs' head dim and theta
    report.md       the tables, the samples, and how to read them
"""

import argparse
import sys
from pathlib import Path

from analysis import CompareError
from analysis import report as rpt
from analysis.extrapolation import FACTORS, bytes_per_token, evaluate_lengths, sample, validation_tokens
from analysis.runs import by_variant, load_run
from data.errors import DataError
from model import checkpoint as ckpt
from model.args import ModelArgs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders written by train.py")
    parser.add_argument("--out", default="reports/pe", help="the report folder")
    parser.add_argument("--prompt", default="Once upon a time")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed, the same for every model")
    parser.add_argument("--windows", type=int, default=32, help="validation windows per context length")
    args = parser.parse_args(argv)
    try:
        write_report(args)
    except (CompareError, ckpt.CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {Path(args.out) / 'report.md'}")
    return 0


def write_report(args) -> None:
    runs = [load_run(path) for path in args.runs]
    contexts = {r.context for r in runs}
    if len(contexts) > 1:
        raise CompareError(
            f"the runs were trained with different contexts ({sorted(contexts)}); compare like with like"
        )
    context = contexts.pop()
    groups = by_variant(runs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    evaluations, bpt, params, samples = {}, {}, {}, {}
    for variant, members in groups.items():
        evaluations[variant] = []
        for run in members:
            print(f"evaluating {run.name} ({variant})", file=sys.stderr)
            tokens, tokenizer = validation_tokens(run)
            bpt[run.name] = bytes_per_token(tokens, tokenizer)
            evaluations[variant].append(evaluate_lengths(run, tokens, args.windows))
        params[variant] = ckpt.load_model(members[0].checkpoint)[0].num_params()
        samples[variant] = sample(members[0], args.prompt, args.seed)

    rpt.plot_curves(groups, out / "curves.png")
    rpt.plot_positions(evaluations, context, out / "positions.png")
    model_args = ModelArgs.from_dict(runs[0].config["model"])
    rpt.plot_decay(model_args.head_dim, model_args.rope_theta, out / "decay.png")

    lines = [
        "# RoPE against absolute position embeddings",
        "",
        f"Runs: {', '.join(f'`{r.path}`' for r in runs)}. Training context {context} tokens. "
        "Where a variant has several runs (seeds), cells give mean ± standard deviation.",
        "",
        "## Training",
        "",
        *rpt.results_table(groups, bpt, params),
        "",
        "Final val loss is train.py's last evaluation (its fixed validation batches). Bits per byte divide",
        "it by ln 2 and by the validation text's bytes per token, so tokenizers of different sizes compare.",
        "",
        "![validation loss against training tokens](curves.png)",
        "",
        "## Length extrapolation",
        "",
        f"Mean validation loss over {args.windows} windows of each length (nats/token). RoPE is also evaluated",
        "with position interpolation (positions divided by the factor) and NTK-aware scaling (theta raised",
        "to theta * factor^(d/(d-2))), both applied at inference only.",
        "",
        *rpt.extrapolation_table(evaluations, FACTORS, context),
        "",
        "![loss along the window](positions.png)",
        "",
        "## RoPE's long-term decay",
        "",
        f"The bound on attention between two tokens as their distance grows (head dim {model_args.head_dim}, "
        f"theta {model_args.rope_theta:g}).",
        "",
        "![long-term decay](decay.png)",
        "",
        f"## Samples (prompt {args.prompt!r}, seed {args.seed}, temperature 0.8, top-k 40)",
        "",
    ]
    for variant, text in samples.items():
        lines += [f"**{variant}** ({groups[variant][0].name}):", "", "> " + text.replace("\n", "\n> "), ""]
    lines += [
        "## In wandb",
        "",
        "Runs trained with `--log.wandb true` carry their config; in the wandb project, group the runs by",
        "`model.pos_embedding` to see these curves with seeds merged.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
