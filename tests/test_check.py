"""graphrnn/check.py: the gradient check finds a wrong gradient, samples large parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.check import MAX_FULL, gradient_check
from graphrnn.errors import GraphRNNError

ELMAN = Path(__file__).resolve().parents[1] / "models" / "elman.grnn"


def test_large_parameters_are_checked_on_the_requested_samples():
    model = gr.load(ELMAN, I=3, H=24, O=2)  # W: 576 elements, over MAX_FULL
    assert model.params["W"].size > MAX_FULL
    results = {r.name: r for r in gradient_check(model, tau=3, batch=2, samples=7)}
    assert results["W"].checked == 7 and results["W"].total == 576
    assert results["b"].checked == results["b"].total == 24
    assert max(r.rel_error for r in results.values()) < 1e-7


def test_a_wrong_gradient_is_reported(monkeypatch):
    model = gr.load(ELMAN, I=3, H=4, O=2)
    compiled = type(model.compile("reference", "float64"))
    right = compiled.loss_and_grad

    def wrong(self, params, inputs, targets):
        loss, grads = right(self, params, inputs, targets)
        grads["b"] = grads["b"] * 1.01
        return loss, grads

    monkeypatch.setattr(compiled, "loss_and_grad", wrong)
    results = {r.name: r for r in gradient_check(model, tau=3, batch=2)}
    assert results["b"].rel_error > 1e-3 and results["W"].rel_error < 1e-7


def test_samples_must_be_positive():
    with pytest.raises(GraphRNNError, match="samples must be a positive integer"):
        gradient_check(gr.load(ELMAN, I=2, H=2, O=2), samples=0)
    assert np.isfinite(gradient_check(gr.load(ELMAN, I=2, H=2, O=2), samples=1)[0].rel_error)


def test_cli_gives_unnamed_sizes_distinct_defaults(tmp_path, capsys):
    from graphrnn.cli import main

    assert main(["check", str(ELMAN), "--tau", "2", "--batch", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Elman (I=3, H=4, O=5)")
    assert out.count(" rel_error=") == 5 and "max_rel_error=" in out
    swapped = tmp_path / "swapped.grnn"
    swapped.write_text(ELMAN.read_text().replace("U @ x(t) + W @ h(t-1)", "W @ x(t) + U @ h(t-1)"))
    assert main(["check", str(swapped)]) == 2  # with every size 4 this passed the check
    assert "matmul: inner sizes differ" in capsys.readouterr().err


def test_progress_reports_each_parameter_as_it_is_done():
    seen = []
    results = gradient_check(gr.load(ELMAN, I=2, H=2, O=2), tau=2, batch=1, progress=seen.append)
    assert seen == results and len(seen) == 5


@pytest.mark.parametrize("bad", [dict(tau=-3), dict(batch=0), dict(tau=2.5)])
def test_tau_and_batch_must_be_positive_integers(bad):
    with pytest.raises(GraphRNNError, match="must be a positive integer"):
        gradient_check(gr.load(ELMAN, I=2, H=2, O=2), **bad)


def test_cli_refuses_sizes_that_cannot_fit(capsys):
    from graphrnn.cli import main

    assert main(["check", str(ELMAN), "--dim", "H=1000000000"]) == 2
    err = capsys.readouterr().err
    assert "of memory is needed" in err and "'W' [1000000000, 1000000000]" in err


def test_plan_gives_the_loss_evaluations_ahead():
    seen = []
    model = gr.load(ELMAN, I=2, H=2, O=2)
    gradient_check(model, tau=2, batch=1, plan=lambda n, s: seen.append((n, s)))
    ((evaluations, seconds),) = seen
    assert evaluations == 2 * sum(v.size for v in model.params.values()) and seconds > 0


def test_full_sets_which_parameters_are_checked_on_every_element():
    model = gr.load(ELMAN, I=3, H=24, O=2)
    results = {r.name: r for r in gradient_check(model, tau=2, batch=1, samples=3, full=3)}
    assert all(r.checked == min(3, r.total) for r in results.values())
    assert results["b"].total == 24 and results["c"].checked == 2
