"""Peak memory of the learned-mask methods on GPT-2 small's shape, measured against the float pass's formula.

    python experiments/learned_mask_memory.py                       # 16 prompts x 20 tokens
    python experiments/learned_mask_memory.py --prompts 8 --tokens 16 --methods edge-pruning

A random model of GPT-2 small's shape (12 layers x 12 heads, d_model 768, d_mlp 3072, vocabulary
50257, float32) runs ``--steps`` training steps of each method in its own process. Printed per
method: the peak resident memory of that process (``ru_maxrss``), the same process's resident memory
just before the method ran (model, prompts and the patcher's baseline), their difference (what
training adds), and ``patching/float_pass.py``'s estimate of one float pass's autograd memory times
the mask samples a step runs (UGS: ``samples``; the others: 1), from the memory model
(``acdc_engine.patching.memory``). One JSON line per method after a
line describing the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPT2 = dict(n_layers=12, n_heads=12, d_model=768, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=64,
            act_fn="gelu", normalization_type="LN", attn_only=False, seed=0)

CHILD = """
import json, resource, sys, torch
sys.path.insert(0, {root!r})
from acdc_engine.architecture import random_model
from acdc_engine import TaskData
from acdc_engine.measure.measurement import Measurement
from acdc_engine.methods import method_spec
from acdc_engine.methods.method import MethodInput
torch.set_num_threads(1)
model = random_model({config!r}, seed=0).eval()
g = torch.Generator().manual_seed(0)
n, t = {prompts}, {tokens}
task = TaskData("random", torch.randint(0, 50257, (n, t), generator=g), torch.randint(0, 50257, (n, t), generator=g))
measurement = Measurement(model, task, "kl")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
spec = method_spec({method!r})
params = spec.parse({params!r})
inputs = MethodInput(graph=measurement.graph, patcher=measurement.patcher, metric=measurement.metric, metric_name="kl",
                     evaluate=measurement.evaluate, ablation="resample", progress=False, resume=None, checkpointer=None)
spec.run(inputs, params)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"before_mb": before / 1024, "peak_mb": peak / 1024}}))
"""


def float_pass_estimate_mb(c: int, n: int, t: int) -> float:
    """The memory model's float pass (``acdc_engine.patching.memory.float_pass_elements_per_token``)
    for GPT-2 small's shape, float32, ``c`` circuits of ``n`` prompts x ``t`` tokens, in MiB."""
    sys.path.insert(0, str(ROOT))
    from acdc_engine.architecture.native import tl_architecture
    from acdc_engine.patching.memory import float_pass_elements_per_token

    cfg, _ = tl_architecture(GPT2, "gpt2-shape")
    return 4 * c * n * t * float_pass_elements_per_token(cfg, n_tokens=t, split_input=False) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["edge-pruning", "subnetwork-probing", "ugs"])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--samples", type=int, default=12, help="UGS's mask samples per step (MIB's 12)")
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(json.dumps({"machine": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "prompts": args.prompts,
                      "tokens": args.tokens, "model": "GPT-2 small shape, random, float32"}))
    for method in args.methods:
        params = {"steps": args.steps, "top_n": 100}
        samples = args.samples if method == "ugs" else 1
        if method == "ugs":
            params["samples"] = samples
        code = CHILD.format(root=str(ROOT), config=GPT2, prompts=args.prompts, tokens=args.tokens, method=method, params=params)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps({
            "method": method, "mask_samples": samples, "before_mb": round(measured["before_mb"]),
            "peak_mb": round(measured["peak_mb"]), "training_adds_mb": round(measured["peak_mb"] - measured["before_mb"]),
            "float_pass_estimate_mb": round(float_pass_estimate_mb(samples, args.prompts, args.tokens)),
        }), flush=True)


if __name__ == "__main__":
    main()
