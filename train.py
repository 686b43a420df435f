"""Train a LLaMA-style model from a config: `python train.py [--config FILE] [--section.key value ...]`.

python train.py                                   # configs/stories15M.toml on TinyStories from the hub
python train.py --config configs/tiny.toml --data.source ../shared/data/tinystories
python train.py --resume --out runs/tiny          # continue exactly where it stopped
torchrun --nproc_per_node=8 train.py --config configs/stories110M.toml   # DDP (or --train.parallel fsdp)
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

import configs
from data.errors import DataError
from data.loader import TrainBatches, open_shards, val_batches
from data.prepare import prepare
from data.tokenizer import Tokenizer
from model import Transformer
from model import checkpoint as ckpt
from model.device import DeviceError, pick_device
from model.sampling import generate
from model.transformer import COMPILE_ERRORS
from training import distributed
from training.config import DEFAULT_CONFIG, load_run_config
from training.flops import flops_per_token, peak_flops
from training.loss import next_token_loss
from training.metrics import MetricsLog
from training.optimizer import build_optimizer
from training.schedule import learning_rate

USER_ERRORS = (configs.ConfigError, DataError, ckpt.CheckpointError, DeviceError)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="Any config key: --section.key value")
    parser.add_argument("--config", help="a TOML config (default configs/stories15M.toml)")
    parser.add_argument("--out", help="the run folder (default runs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="start over in a run folder that holds checkpoints")
    parser.add_argument("--device", default="auto", help="cuda, mps or cpu (default: the first available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_known_args(argv)


def load_config(args, overrides) -> tuple[dict, Path, Path | None]:
    """The run's config, its folder, and the checkpoint to resume from (None for a new run)."""
    config_file = Path(args.config) if args.config else DEFAULT_CONFIG
    run_dir = Path(args.out) if args.out else Path("runs") / config_file.stem
    existing = ckpt.list_checkpoints(run_dir)
    if args.resume:
        if not existing:
            raise ckpt.CheckpointError(f"--resume: no checkpoint in {run_dir}; start a new run without --resume")
        return load_run_config(ckpt.load_config(existing[-1]), overrides), run_dir, existing[-1]
    if existing and not args.overwrite:
        raise ckpt.CheckpointError(
            f"{run_dir} already holds checkpoints; pass --resume to continue it, --overwrite to start over, "
            "or --out to pick another folder"
        )
    return load_run_config(config_file, overrides), run_dir, None


def open_data(cfg: dict, d: distributed.Dist, quiet: bool):
    """Prepare the data (rank 0; skipped when done already) and open it: (tokenizer, shards)."""
    if d.is_main:
        prepare(cfg["data"], quiet=quiet)
    distributed.barrier(d)
    data_dir = Path(cfg["data"].dir)
    tokenizer = Tokenizer(cfg["data"].tokenizer or data_dir / "tokenizer.model")
    vocab_size = cfg["model"].vocab_size
    if tokenizer.vocab_size != vocab_size:
        raise configs.ConfigError(
            f"model.vocab_size={vocab_size} but the tokenizer has {tokenizer.vocab_size} tokens; "
            f"set --model.vocab_size {tokenizer.vocab_size}"
        )
    return tokenizer, open_shards(data_dir, tokenizer.sha256, vocab_size)


def accumulation_steps(tokens_per_step: int, batch_size: int, seq_len: int, world_size: int) -> int:
    """Micro-steps per optimizer step that reach train.tokens_per_step (0: one)."""
    micro_tokens = batch_size * seq_len * world_size
    if tokens_per_step == 0:
        return 1
    if tokens_per_step % micro_tokens:
        raise configs.ConfigError(
            f"train.tokens_per_step={tokens_per_step} is not a multiple of batch_size x max_seq_len x processes "
            f"= {micro_tokens}; pick a multiple"
        )
    return tokens_per_step // micro_tokens


def initial_weights(path: str, model: Transformer) -> dict:
    """The weights of checkpoint `path` for train.init_from, checked against the configured model's shapes."""
    weights = ckpt.load_model(path)[0].state_dict()
    for name, tensor in model.state_dict().items():
        if name not in weights or weights[name].shape != tensor.shape:
            found = tuple(weights[name].shape) if name in weights else "missing"
            raise ckpt.CheckpointError(
                f"train.init_from={path} does not fit the configured model: {name} is {found}, "
                f"the config needs {tuple(tensor.shape)}; set the [model] section to the checkpoint's shapes"
            )
    return weights


@contextmanager
def stop_on_signals():
    """SIGINT / SIGTERM ask the loop to save a checkpoint and stop after the current step
    (a second SIGINT interrupts at once). Yields the list that a signal appends to."""
    requested: list[int] = []

    def handler(signum, frame):
        if requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def evaluate(loss_of, model, batches, autocast) -> float:
    """Mean loss over the fixed validation batches (every process evaluates all of them)."""
    model.eval()
    with torch.no_grad(), autocast:
        losses = [loss_of(model, x, y) for x, y in batches]
    model.train()
    return torch.stack(losses).mean().item()


def sample_story(model: Transformer, tokenizer, prompt: str, tokens: int, seed: int, autocast) -> str:
    """A short story from the model as it is now, to watch it learn. Frees the KV cache afterwards."""
    with autocast:
        text = prompt + generate(model, tokenizer, [prompt], tokens, temperature=0.8, top_k=40, seed=seed)[0].text
    model.reset_cache()
    return text


def train(args, overrides) -> int:
    cfg, run_dir, resume_from = load_config(args, overrides)
    margs, tcfg = cfg["model"], cfg["train"]
    d, device = distributed.setup(pick_device(args.device))
    quiet = args.quiet or not d.is_main
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    bf16 = tcfg.dtype == "bfloat16" or (tcfg.dtype == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    tokenizer, shards = open_data(cfg, d, quiet)
    seq_len = margs.max_seq_len
    accum = accumulation_steps(tcfg.tokens_per_step, tcfg.batch_size, seq_len, d.world_size)
    tokens_per_step = accum * tcfg.batch_size * seq_len * d.world_size
    batches = TrainBatches(shards["train"], tcfg.batch_size, seq_len, tcfg.seed, d.rank, d.world_size, accum)
    val = val_batches(shards["val"], tcfg.batch_size, seq_len, tcfg.eval_batches)

    # the model and optimizer: a resumed run loads both, init_from loads weights only
    torch.manual_seed(tcfg.seed)
    with torch.device(device):
        raw = Transformer(margs)
    model = distributed.wrap(raw, d, tcfg.parallel, device)
    optimizer = build_optimizer(raw, tcfg.lr, tcfg.weight_decay, (tcfg.beta1, tcfg.beta2), device)
    start_step, tokens_seen = 0, 0
    if resume_from is not None:
        state = ckpt.load_train_state(resume_from)
        start_step, tokens_seen = state["step"], state["tokens"]
        weights = ckpt.load_model(resume_from)[0].state_dict()
        distributed.load_full_state(raw, optimizer, weights, ckpt.load_optimizer_state(resume_from))
    elif tcfg.init_from:
        distributed.load_full_state(raw, None, initial_weights(tcfg.init_from, raw))
    use_compile = tcfg.compile if tcfg.compile is not None else device.type == "cuda"
    loss_of = torch.compile(next_token_loss) if use_compile else next_token_loss

    if args.overwrite and d.is_main:
        shutil.rmtree(run_dir / ckpt.CHECKPOINTS, ignore_errors=True)
    config_dict = configs.as_dict(cfg)
    log = MetricsLog(run_dir, d.is_main, cfg["log"], config_dict, resume_step=start_step)
    flops_token, peak = flops_per_token(raw, seq_len), peak_flops(device)
    if not quiet:
        print(
            f"{run_dir}: {raw.num_params():,} parameters, {tokens_per_step:,} tokens/step "
            f"({accum} micro-step(s) x {d.world_size} process(es)), {device}, {'bf16' if bf16 else 'fp32'}",
            file=sys.stderr,
        )

    def save(step: int) -> Path:
        model_state = distributed.full_model_state(raw)
        optim_state = distributed.full_optimizer_state(raw, optimizer)
        folder = ckpt.step_folder(run_dir, step)
        if d.is_main:
            # the data order and dropout are functions of (seed, step, rank): the step is all a resume needs
            train_state = {"step": step, "tokens": tokens_seen, "data_position": step, "seed": tcfg.seed}
            ckpt.save(folder, model_state, config_dict, tokenizer.path, optim_state, train_state)
            ckpt.prune(run_dir, tcfg.keep_checkpoints)
        distributed.barrier(d)
        return folder

    def train_step(step: int) -> tuple[float, bool]:
        """One optimizer step over accum micro-batches; returns the loss and whether a signal asked to stop."""
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, tcfg.lr, tcfg.min_lr, tcfg.warmup_steps, tcfg.max_steps)
        torch.manual_seed(tcfg.seed * 1_000_003 + step * d.world_size + d.rank)  # dropout masks
        loss_sum = torch.zeros((), device=device)
        for micro in range(accum):
            x, y = (t.to(device, non_blocking=True) for t in batches.get(step, micro))
            with distributed.no_sync(model, sync=micro == accum - 1), autocast:
                loss = loss_of(model, x, y) / accum
            loss.backward()
            loss_sum += loss.detach()
        loss_value, stop = distributed.step_summary(loss_sum, bool(stop_requested), d)
        if not math.isfinite(loss_value):  # checked before the update, so the weights stay good
            raise TrainingDiverged(
                f"the loss is {loss_value} at step {step}; the weights were not updated and "
                f"{last_saved or 'no checkpoint'} is the last good checkpoint; lower --train.lr and --resume"
            )
        if tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss_value, stop

    last_saved = resume_from
    step = start_step
    with (
        stop_on_signals() as stop_requested,
        tqdm(total=tcfg.max_steps, initial=start_step, disable=quiet, file=sys.stderr, dynamic_ncols=True) as bar,
    ):
        window_start, window_steps = time.perf_counter(), 0
        while step < tcfg.max_steps:
            loss, stop = train_step(step)
            step += 1
            tokens_seen += tokens_per_step
            window_steps += 1
            bar.update(1)
            last = step == tcfg.max_steps
            if step % cfg["log"].log_interval == 0 or last:
                speed = window_steps * tokens_per_step / (time.perf_counter() - window_start)
                mfu = speed * flops_token / (peak * d.world_size) if peak else None
                lr = optimizer.param_groups[0]["lr"]
                log.log(
                    {"step": step, "loss": loss, "lr": lr, "tokens": tokens_seen, "tokens_per_s": speed, "mfu": mfu}
                )
                bar.set_postfix(
                    loss=f"{loss:.3f}", lr=f"{lr:.1e}", tok_s=f"{speed:,.0f}", mfu=f"{mfu:.2f}" if mfu else "-"
                )
            if step % tcfg.eval_interval == 0 or last:
                row = {"step": step, "tokens": tokens_seen, "val_loss": evaluate(loss_of, model, val, autocast)}
                if tcfg.sample_tokens > 0:
                    row["sample"] = sample_story(
                        raw, tokenizer, tcfg.sample_prompt, tcfg.sample_tokens, tcfg.seed, autocast
                    )
                log.log(row)
                if not quiet:
                    bar.write(f"step {step}: val loss {row['val_loss']:.4f}  {row.get('sample', '')!r}")
            if step % tcfg.ckpt_interval == 0 or last or stop:
                last_saved = save(step)
            if stop:
                if not quiet:
                    bar.write(f"stopped at step {step}; saved {last_saved}; continue with --resume --out {run_dir}")
                break
            if step % cfg["log"].log_interval == 0 or step % tcfg.eval_interval == 0 or step % tcfg.ckpt_interval == 0:
                window_start, window_steps = time.perf_counter(), 0  # evaluation and saving are not training speed
    log.close()
    distributed.teardown(d)
    return 0


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    try:
        return train(args, overrides)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except COMPILE_ERRORS as e:
        reason = str(e).strip().splitlines()[0]
        print(
            f"error: torch.compile could not build the training step ({reason}); use --train.compile false",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
