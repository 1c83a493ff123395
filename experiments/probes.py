"""Exact ACDC with and without its probes (``run_acdc``'s ``predict``) on small models.

    OMP_NUM_THREADS=1 python experiments/probes.py              # every model, best of 8
    OMP_NUM_THREADS=1 python experiments/probes.py --rounds 3 --models default

The probes only plan passes, so both runs give the same circuit (checked here); what differs is the
time. Each model's run (``Measurement`` set-up included, batch size 32, KL) alternates without and
with probes for ``--rounds`` rounds and keeps the best of each, so both see the same load. Prints
the machine as the first JSON line, then one line per model: its work (prompts x tokens x d_model,
which picks the predictor: ``acdc_engine.measure.measurement.predictor``), seconds and passes (the
probes' included) without and with probes, and the change in time. The models are the benchmark's
two small cases and six random ones of 2 and 3 layers, with and without MLPs, at threshold 1e-3.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import CASES, build, machine  # noqa: E402

from acdc_engine import TaskData  # noqa: E402
from acdc_engine.measure.measurement import Measurement  # noqa: E402
from acdc_engine.methods.acdc import run_acdc  # noqa: E402
from acdc_engine.models import load_model  # noqa: E402

MLP_2x4 = dict(n_layers=2, n_heads=4, d_model=64, d_head=16, d_mlp=256, d_vocab=64, act_fn="gelu", seed=0)
ATTN_3x4 = dict(n_layers=3, n_heads=4, d_model=64, d_head=16, d_vocab=64, attn_only=True, act_fn=None, seed=2)
MLP_2x8 = dict(n_layers=2, n_heads=8, d_model=128, d_head=16, d_mlp=512, d_vocab=100, act_fn="gelu", seed=3)
MLP_3x4 = dict(n_layers=3, n_heads=4, d_model=32, d_head=8, d_mlp=128, d_vocab=50, act_fn="gelu", seed=1)
RANDOM_MODELS = {  # name: (config, n_prompts, n_tokens)
    "mlp2x4-d64-32x17": (MLP_2x4, 32, 17),
    "attn3x4-d64-40x20": (ATTN_3x4, 40, 20),
    "mlp2x8-d128-20x20": (MLP_2x8, 20, 20),
    "attn3x4-d64-20x12": (ATTN_3x4, 20, 12),
    "mlp3x4-d32-20x12": (MLP_3x4, 20, 12),
    "mlp2x4-d64-20x12": (MLP_2x4, 20, 12),
}
MODELS = ["default", "autocircuit-shape", *RANDOM_MODELS]


def setting(name: str) -> tuple[torch.nn.Module, TaskData, float]:
    """(model, task, threshold) of a benchmark case or a random model."""
    if name in CASES:
        model, task = build(name)
        return model, task, CASES[name]["threshold"]
    config, n_prompts, n_tokens = RANDOM_MODELS[name]
    model = load_model("random", config=dict(config, n_ctx=32, normalization_type="LN"))
    g = torch.Generator().manual_seed(0)
    clean, corrupted = (torch.randint(0, model.cfg.d_vocab, (n_prompts, n_tokens), generator=g) for _ in range(2))
    return model, TaskData(name, clean, corrupted, positions=[n_tokens - 1]), 1e-3


def compare(name: str, rounds: int) -> dict:
    model, task, threshold = setting(name)

    def run(probes: bool):
        measurement = Measurement(model, task, metric="kl", threads=1)
        predict = measurement.predictor if probes else None
        return run_acdc(measurement.graph, measurement.evaluate, threshold, batch_size=32, progress=False, predict=predict)

    best, results = {False: float("inf"), True: float("inf")}, {}
    for probes in (False, True):  # warm-up
        run(probes)
    for _ in range(rounds):
        for probes in (False, True):
            start = time.perf_counter()
            results[probes] = run(probes)
            best[probes] = min(best[probes], time.perf_counter() - start)
    without, with_probes = results[False], results[True]
    same = torch.equal(without.kept.edges, with_probes.kept.edges) and torch.equal(without.kept.head_inputs, with_probes.kept.head_inputs)
    return {
        "model": name, "work": task.clean.numel() * model.cfg.d_model,
        "seconds_without": round(best[False], 4), "seconds_with": round(best[True], 4),
        "passes_without": without.forward_passes, "passes_with": with_probes.forward_passes,
        "change": f"{100 * (best[True] / best[False] - 1):+.0f}%", "same_circuit": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(machine()), flush=True)
    for name in args.models:
        print(json.dumps(compare(name, args.rounds)), flush=True)


if __name__ == "__main__":
    main()
