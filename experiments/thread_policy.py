"""The thread policy against fixed thread counts, on an idle machine and beside a busy process.

    python experiments/thread_policy.py                 # every case, idle and busy
    python experiments/thread_policy.py --cases default --competitors 1

For each case and each setting (``one``: threads=1; ``all``: one thread per usable CPU, torch's
default; ``policy``: threads=None, ``acdc_engine.core.threads``) the run is timed in a fresh process
(best of ``--repeats`` warm runs), first with the machine as it is, then with ``--competitors``
processes spinning beside it (each a pure-Python busy loop, one core each). Prints one JSON line per
(case, load, setting) with seconds, the thread count the run used, and the ratio to ``one`` under the
same load; the first line describes the machine. Decisions are compared across settings (the
circuit must be the same for every thread count).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES = {
    "default": "from acdc_engine.models import load_model; model = load_model('toy-induction-2l'); task = 'induction'; kw = dict(threshold=0.05)",
    "eap-gpt2-width": (  # 64 prompts x 48 tokens x d_model 768: 2.4M elements a pass, two threads' worth
        "from acdc_engine.architecture import random_model; import torch;"
        "model = random_model(dict(n_layers=4, n_heads=12, d_model=768, d_head=64, d_mlp=3072, d_vocab=2048, n_ctx=64,"
        " act_fn='gelu', normalization_type='LN', attn_only=False, seed=0), seed=0).eval();"
        "from acdc_engine import TaskData; g = torch.Generator().manual_seed(0);"
        "task = TaskData('random', torch.randint(0, 2048, (64, 48), generator=g), torch.randint(0, 2048, (64, 48), generator=g));"
        "kw = dict(method='eap', metric='kl', top_n=100)"
    ),
}
SETTINGS = ("one", "all", "policy")

CHILD = """
import json, sys, time, torch
sys.path.insert(0, {root!r})
{setup}
from acdc_engine import discover
threads = {threads}
times, used, kept = [], None, None
for _ in range({repeats} + 1):
    start = time.perf_counter()
    circuit = discover(model, task, progress=False, threads=threads, **kw)
    times.append(time.perf_counter() - start)
    kept = sorted(circuit.edges())
from acdc_engine.core.threads import thread_count
from acdc_engine.api import work_elements
from acdc_engine.resolve import resolve
used = thread_count(work_elements(resolve(model, task)), threads)
print(json.dumps({{"seconds": min(times[1:]), "threads": used, "kept": kept}}))
"""


def busy_loop() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run(case: str, setting: str, repeats: int) -> dict:
    usable = len(os.sched_getaffinity(0))
    threads = {"one": 1, "all": usable, "policy": None}[setting]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    code = CHILD.format(root=str(ROOT), setup=CASES[case], threads=threads, repeats=repeats)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--competitors", type=int, default=1, help="busy processes beside the run in the 'busy' load")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    print(json.dumps({"machine": platform.node(), "cpu": cpu, "usable_cpus": len(os.sched_getaffinity(0)), "load_before": os.getloadavg()}))
    for case in args.cases:
        for load in ("as-is", "busy"):
            competitors = [busy_loop() for _ in range(args.competitors)] if load == "busy" else []
            try:
                time.sleep(1.0 if competitors else 0.0)
                results = {setting: run(case, setting, args.repeats) for setting in SETTINGS}
            finally:
                for process in competitors:
                    process.kill()
            same = len({tuple(r["kept"]) for r in results.values()}) == 1
            for setting, r in results.items():
                print(json.dumps({
                    "case": case, "load": load, "setting": setting, "threads": r["threads"], "seconds": round(r["seconds"], 4),
                    "vs_one": round(r["seconds"] / results["one"]["seconds"], 3), "same_circuit_every_setting": same,
                }), flush=True)


if __name__ == "__main__":
    main()
