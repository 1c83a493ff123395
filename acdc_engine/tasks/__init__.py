"""Tasks: each module builds a ``TaskData`` (clean/corrupted tokens, metric positions, answers).

Every built-in task registers a ``TaskSpec`` in ``TASKS``: its name (the ``task=`` choice on the
command line), its Hydra structured config (the schema of ``conf/task/<name>.yaml``) and its builder.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.values import check_values
from acdc_engine.tasks import docstring, greater_than, induction, ioi, jsonl, mib_data
from acdc_engine.tasks import tracr as tracr_tasks
from acdc_engine.tasks import predecessor
from acdc_engine.tasks.induction import make_induction
from acdc_engine.tasks.jsonl import make_jsonl_task
from acdc_engine.core.task_data import TaskData, TaskSpec

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (induction.SPEC, jsonl.SPEC, ioi.SPEC, greater_than.SPEC, docstring.SPEC, *tracr_tasks.SPECS, predecessor.SPEC, mib_data.SPEC)}


def make_task(name: str, model: Any, **params: Any) -> TaskData:
    """Build the built-in task ``name`` for ``model``; AcdcError naming the parameter when one of
    ``params`` is not a field of the task's config, not of its field's type, or outside its range."""
    if name not in TASKS:
        raise AcdcError(f"unknown task '{name}'; choose one of {', '.join(TASKS)} or pass a TaskData")
    fields = [f.name for f in dataclasses.fields(TASKS[name].config) if f.name != "name"]
    unknown = sorted(set(map(str, params)) - set(fields))
    if unknown:
        raise AcdcError(f"unknown task_params {', '.join(unknown)} for task '{name}'; it takes {', '.join(fields) or 'none'}")
    check_values(TASKS[name].config, params, "task_params.")
    return TASKS[name].build(model, **params)


__all__ = ["TASKS", "TaskData", "TaskSpec", "make_induction", "make_jsonl_task", "make_task"]
