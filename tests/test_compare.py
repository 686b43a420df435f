"""compare.py on tiny runs made here: plots, tables, extrapolation, and the refusal for learned tables."""

import math

import numpy as np
import pytest

import compare
import train
from analysis.decay import relative_upper_bound
from analysis.extrapolation import evaluate_lengths, validation_tokens
from analysis.runs import load_run
from tests.conftest import REPO


@pytest.fixture(scope="module")
def runs(sample_data, tmp_path_factory):
    """Three tiny runs that differ only in their position embedding."""
    root = tmp_path_factory.mktemp("compare")
    folders = {}
    for variant in ("rope", "learned", "sinusoidal"):
        folders[variant] = root / variant
        argv = ["--config", str(REPO / "configs" / "ci.toml"), "--out", str(folders[variant]), "--quiet",
                "--data.source", sample_data.source, "--data.dir", sample_data.dir, "--model.pos_embedding", variant,
                "--train.max_steps", "20", "--train.eval_interval", "10", "--train.sample_tokens", "0"]  # fmt: skip
        assert train.main(argv) == 0
    return folders


def test_extrapolation_works_for_rope_and_sinusoidal_and_is_refused_for_learned(runs):
    for variant in ("rope", "sinusoidal", "learned"):
        run = load_run(runs[variant])
        tokens, _ = validation_tokens(run)
        results = {(r.method, r.factor): r for r in evaluate_lengths(run, tokens, windows=4, factors=(1.0, 2.0))}
        assert results[("plain", 1.0)].loss is not None
        assert results[("plain", 1.0)].by_position.shape == (64,)
        doubled = results[("plain", 2.0)]
        if variant == "learned":
            assert doubled.loss is None and "rows for 64 positions only" in doubled.note
        else:
            assert math.isfinite(doubled.loss) and doubled.by_position.shape == (128,)
        if variant == "rope":
            assert math.isfinite(results[("linear", 2.0)].loss) and math.isfinite(results[("ntk", 2.0)].loss)
            assert results[("linear", 2.0)].loss != doubled.loss


def test_compare_writes_the_report(runs, tmp_path):
    out = tmp_path / "report"
    assert compare.main([str(p) for p in runs.values()] + ["--out", str(out), "--windows", "4"]) == 0
    for name in ("curves.png", "positions.png", "decay.png", "report.md"):
        assert (out / name).stat().st_size > 1000, name
    report = (out / "report.md").read_text()
    for variant in ("rope", "learned", "sinusoidal"):
        assert f"| {variant} | 1 |" in report
    assert "rope + position interpolation" in report and "rope + NTK-aware" in report
    assert "n/a: learned: a learned table has rows for 64 positions only." in report
    assert report.count("> Once upon a time") == 3


def test_compare_refuses_what_is_not_a_run(tmp_path, capsys):
    assert compare.main([str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err


def test_long_term_decay_starts_at_one_and_falls():
    bound = relative_upper_bound(64, 10000.0, 512)
    assert math.isclose(bound[0], (np.arange(1, 33)).mean())  # at distance 0 every |S_j| = j
    assert bound[256] < 0.5 * bound[0] and bound[0] == bound.max()
