"""One rule for every progress bar (acdc_engine.core.progress): drawn when asked for, stderr is a
terminal and CI is not set; ACDC's candidates, a threshold sweep and acdc-evaluate's methods follow it."""

import io
import sys

from factories import random_task, small_model


class Terminal(io.StringIO):
    def isatty(self):
        return True


def as_terminal(monkeypatch) -> Terminal:
    """stderr as a terminal, outside CI; returns it to read what was drawn. (Called in the test
    itself: pytest's capture sets sys.stderr again between a fixture and the test.)"""
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.delenv("CI", raising=False)
    return stderr


def test_a_bar_is_drawn_in_a_terminal(monkeypatch):
    from acdc_engine.core.progress import show_progress

    as_terminal(monkeypatch)
    assert show_progress(True)


def test_no_bar_when_not_asked_for(monkeypatch):
    from acdc_engine.core.progress import show_progress

    as_terminal(monkeypatch)
    assert not show_progress(False)


def test_no_bar_under_ci(monkeypatch):
    from acdc_engine.core.progress import show_progress

    as_terminal(monkeypatch)
    monkeypatch.setenv("CI", "true")
    assert not show_progress(True)


def test_no_bar_outside_a_terminal(monkeypatch):
    from acdc_engine.core.progress import show_progress

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.delenv("CI", raising=False)
    assert not show_progress(True)


def test_acdc_counts_its_candidates_in_a_terminal(monkeypatch):
    from acdc_engine import discover

    terminal = as_terminal(monkeypatch)
    discover(small_model(attn_only=True), random_task(), threshold=0.01)
    assert "ACDC candidates" in terminal.getvalue()


def test_acdc_draws_no_bar_into_a_log(capsys):
    from acdc_engine import discover

    discover(small_model(attn_only=True), random_task(), threshold=0.01)
    assert "ACDC candidates" not in capsys.readouterr().err


def test_a_threshold_sweep_counts_its_thresholds(monkeypatch):
    from acdc_engine.evaluation.sweep import acdc_threshold_sweep

    terminal = as_terminal(monkeypatch)
    acdc_threshold_sweep(small_model(attn_only=True), random_task(), [0.01, 0.1])
    assert "ACDC sweep" in terminal.getvalue()


def test_a_method_comparison_counts_its_methods(monkeypatch):
    from acdc_engine.evaluation.method_comparison import compare_methods

    terminal = as_terminal(monkeypatch)
    compare_methods(small_model(attn_only=True), random_task(), methods=["acdc"], thresholds=[0.01])
    assert "methods" in terminal.getvalue()
