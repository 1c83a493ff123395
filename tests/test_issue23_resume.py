"""Issue 23, probe 10: resuming a finished run neither rewrites its checkpoint nor counts the
set-up again in ``run.seconds`` (the run that saved the checkpoint counted it once)."""

from acdc_engine import api, discover
from factories import random_task, small_model


class Clock:
    """A stand-in for the ``time`` module in ``acdc_engine.api``: each model set-up takes an hour."""

    now = 0.0

    @classmethod
    def perf_counter(cls):
        return cls.now


def test_resuming_a_finished_run_counts_its_set_up_once(tmp_path, monkeypatch):
    model, task = small_model(attn_only=True), random_task()
    path = tmp_path / "run.safetensors"
    finished = discover(model, task, threshold=0.01, checkpoint=path, progress=False)
    saved = path.read_bytes()

    measurement = api.Measurement

    def slow_set_up(*args, **kwargs):
        Clock.now += 3600.0
        return measurement(*args, **kwargs)

    monkeypatch.setattr(api, "time", Clock)
    monkeypatch.setattr(api, "Measurement", slow_set_up)
    resumed = discover(model, task, threshold=0.01, checkpoint=path, progress=False)
    assert path.read_bytes() == saved
    assert resumed.run["seconds"] < 3600.0  # the checkpoint's seconds, and no hour of set-up
    assert resumed.edges() == finished.edges()
