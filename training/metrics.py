"""Where a run's numbers go: metrics.jsonl always, wandb when asked. Only rank 0 writes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


class MetricsLog:
    """Append rows to RUN/metrics.jsonl, and mirror them to wandb if enabled."""

    def __init__(self, run_dir: Path, enabled: bool, wandb_cfg=None, config: dict | None = None, resume_step: int = 0):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.wandb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_rows_after(resume_step)
        if wandb_cfg is not None and wandb_cfg.wandb:
            self.wandb = start_wandb(wandb_cfg, run_dir, config)

    def _drop_rows_after(self, step: int) -> None:
        """A resumed run logs again the steps after its checkpoint; drop the rows it will rewrite
        (all of them for a new run, step 0)."""
        if not self.path.exists():
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if 0 < json.loads(r)["step"] <= step]
        self.path.write_text("".join(r + "\n" for r in kept))

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def start_wandb(cfg, run_dir: Path, config: dict | None):
    """A wandb run; offline when there is no API key, so it never stops to ask for one."""
    import wandb

    mode = "online" if os.environ.get("WANDB_API_KEY") or _logged_in() else "offline"
    if mode == "offline":
        print("wandb: no API key, logging offline (wandb sync later to upload)", file=sys.stderr)
    return wandb.init(
        project=cfg.wandb_project,
        name=cfg.wandb_run_name or Path(run_dir).name,
        config=config,
        dir=str(run_dir),
        mode=os.environ.get("WANDB_MODE", mode),
        resume="allow",
        id=Path(run_dir).resolve().name,
    )


def _logged_in() -> bool:
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text()
