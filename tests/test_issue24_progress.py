"""EAP-IG counts its steps with a progress bar in a terminal, and stays quiet in logs and under CI."""

import io
import sys

from factories import random_task, small_model


class Terminal(io.StringIO):
    def isatty(self):
        return True


def eap_ig_output(monkeypatch, ci):
    from acdc_engine import discover

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    discover(small_model(attn_only=True), random_task(), method="eap-ig", steps=3, top_n=5, progress=True)
    return terminal.getvalue()


def test_in_a_terminal_eap_ig_shows_its_steps(monkeypatch):
    assert "EAP-IG steps" in eap_ig_output(monkeypatch, ci=False)


def test_under_ci_eap_ig_shows_no_bar(monkeypatch):
    assert "EAP-IG steps" not in eap_ig_output(monkeypatch, ci=True)


def test_outside_a_terminal_eap_ig_shows_no_bar(capsys):
    from acdc_engine import discover

    discover(small_model(attn_only=True), random_task(), method="eap-ig", steps=3, top_n=5, progress=True)
    assert "EAP-IG steps" not in capsys.readouterr().err
