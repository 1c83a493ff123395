"""Cases for the table scripts: MODEL:TASK[:TRUTH] strings, loaded or skipped with a reason.

MODEL is a name for ``acdc_engine.models.load_model``, TASK a built-in task, TRUTH a circuit file or
the name of a circuit shipped in ``acdc_engine/reference_circuits``. A case whose model, task or
truth cannot be had (not built yet, needs a model hub, ...) is skipped: ``load_case`` raises
``AcdcError`` with the reason, and the scripts print it and go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from acdc_engine.core.errors import AcdcError


@dataclass
class Case:
    spec: str
    model_name: str
    task_name: str
    truth_spec: str | None


def parse_case(spec: str, truth_required: bool) -> Case:
    """MODEL:TASK:TRUTH, or MODEL:TASK where a truth is optional."""
    parts = spec.split(":")
    lengths = (3,) if truth_required else (2, 3)
    if len(parts) not in lengths or not all(parts):
        form = "MODEL:TASK:TRUTH" if truth_required else "MODEL:TASK[:TRUTH]"
        raise SystemExit(f"case '{spec}': expected {form}")
    return Case(spec, parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def load_case(case: Case, device: str = "cpu") -> tuple[Any, Any, Any]:
    """(model, task data, truth circuit or None); AcdcError saying why the case cannot run."""
    from acdc_engine.evaluation.overlap import load_circuit_or_reference
    from acdc_engine.models import load_model
    from acdc_engine.tasks import TASKS, make_task

    if case.task_name not in TASKS:
        raise AcdcError(f"task '{case.task_name}' is not built in (built in: {', '.join(TASKS)})")
    truth = load_circuit_or_reference(case.truth_spec) if case.truth_spec else None
    try:
        model = load_model(case.model_name, device=device)
    except (ImportError, OSError) as error:
        raise AcdcError(f"model '{case.model_name}' cannot be loaded: {error}") from None
    return model, make_task(case.task_name, model), truth


def machine_line() -> str:
    """The machine the figures were measured on, in one line."""
    import os
    import platform
    from pathlib import Path

    import torch

    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")),
               platform.processor()) if cpuinfo.exists() else platform.processor()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
