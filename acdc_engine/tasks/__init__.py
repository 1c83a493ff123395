"""Tasks: each module builds a ``TaskData`` (clean/corrupted tokens, metric positions, answers)."""

from acdc_engine.tasks.induction import make_induction
from acdc_engine.tasks.task_data import TaskData

__all__ = ["TaskData", "make_induction"]
