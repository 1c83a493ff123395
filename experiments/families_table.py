"""Every supported model family end to end: a tiny random model per family, saved offline with
``save_pretrained``, run through ``acdc-discover model=local model.path=DIR task=jsonl``.

    python experiments/families_table.py            # every family
    python experiments/families_table.py llama gemma2

Prints a line describing the machine, then a Markdown table: family, the features its config turns
on, edges, max |engine - model| logit difference (float32, the run's self-check), whether exact ACDC's
circuit equals the naive reference's (float64, in process), and the command's discovery seconds (one
thread).
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the model builders and the naive reference live with the tests

from families import FAMILIES, PROMPT_LENGTH, WORDS, build_family  # noqa: E402
from naive_reference import naive_kl_acdc_kept_edges  # noqa: E402

from acdc_engine import discover  # noqa: E402
from acdc_engine.models import load_model  # noqa: E402
from acdc_engine.tasks import make_task  # noqa: E402
from acdc_engine.formats.circuit_file import circuit_to_dict

THRESHOLD = 0.02
N_RECORDS = 4


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def write_records(path: Path) -> None:
    """Text records of PROMPT_LENGTH - 1 words (BOS makes PROMPT_LENGTH tokens), repeated halves."""
    rng = random.Random(0)
    lines = []
    for _ in range(N_RECORDS):
        half = [rng.choice(WORDS) for _ in range((PROMPT_LENGTH - 1) // 2)]
        clean = (half * 2 + half)[: PROMPT_LENGTH - 1]
        corrupted = [rng.choice(WORDS) for _ in range(PROMPT_LENGTH - 1)]
        lines.append(json.dumps({"clean": " ".join(clean), "corrupted": " ".join(corrupted)}))
    path.write_text("\n".join(lines) + "\n")


def run_command(folder: Path, records: Path, out: Path) -> dict:
    command = [
        sys.executable, "-m", "acdc_engine.commands.discover", "model=local", f"model.path={folder}", "task=jsonl",
        f"task.path={records}", f"method.threshold={THRESHOLD}", "progress=false", f"hydra.run.dir={out}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # tiny models: threads only add overhead
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=out.parent)
    if result.returncode != 0:
        raise RuntimeError(f"{folder.name}: acdc-discover failed: {result.stderr.strip()[-400:]}")
    return json.loads((out / "circuit.json").read_text())


def identical_to_naive(folder: Path, records: Path) -> bool:
    model = load_model("local", path=str(folder), dtype="float64")
    task = make_task("jsonl", model, path=str(records))
    circuit = discover(model, task, threshold=THRESHOLD, progress=False)
    kept = {name for name, edge in circuit_to_dict(circuit)["edges"].items() if edge["kept"]}
    return kept == naive_kl_acdc_kept_edges(model, task.clean, task.corrupted, task.positions.tolist(), THRESHOLD)


def main() -> None:
    names = sys.argv[1:] or list(FAMILIES)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, python {platform.python_version()}")
    print("| family | features | edges | kept | max abs engine - model logit (float32) | identical to naive | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        records = scratch / "records.jsonl"
        write_records(records)
        for name in names:
            folder = build_family(name, scratch / name)
            circuit = run_command(folder, records, scratch / f"{name}-run")
            features = ", ".join(load_model("local", path=str(folder)).cfg.features()) or "-"
            same = "yes" if identical_to_naive(folder, records) else "NO"
            kept = sum(edge["in_graph"] for edge in circuit["edges"].values())
            print(
                f"| {name} | {features} | {len(circuit['edges'])} | {kept} | "
                f"{circuit['run']['self_check']['max_abs_logit_diff_full']:.2e} | {same} | {circuit['run']['seconds']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
