"""Regenerate the trained testbeds' ground-truth circuits shipped in the package.

    python experiments/testbed_ground_truth.py

For every shipped testbed in ``acdc_engine.evaluation.testbed_truth.MECHANISMS`` (model and task
defaults): the attention-role ground truth, written to
  acdc_engine/reference_circuits/<model>.json
and, per model, the roles found, the edge count and the metric block (the task's default metric
under resample ablation: full model, truth, empty circuit) printed.
"""

from __future__ import annotations

from acdc_engine.evaluation.faithfulness import normalised_faithfulness
from acdc_engine.evaluation.testbed_truth import MECHANISMS, testbed_truth
from acdc_engine.models import load_model
from acdc_engine.reference_circuits import FOLDER as REFERENCE_FOLDER
from acdc_engine.tasks import make_task
from acdc_engine.formats.circuit_file import save_circuit


def main() -> None:
    for name, mechanism in MECHANISMS.items():
        model = load_model(name)
        truth = testbed_truth(model, name, make_task(mechanism.task, model))
        path = save_circuit(truth, REFERENCE_FOLDER / f"{name}.json")
        m = truth.metric
        faithfulness = normalised_faithfulness(m["circuit"], m["full"], m["empty"])
        print(f"{name} ({mechanism.task}) -> {path.name}")
        print(f"  roles: {truth.method['roles']}")
        print(f"  {truth.n_edges} / {truth.n_edges_total} edges; metric {m}; normalised faithfulness {faithfulness:.3f}")


if __name__ == "__main__":
    main()
