"""The memory model (``acdc_engine.patching.memory``) against measured peaks at MIB's models' widths,
and its projection to their full depth.

    python experiments/mib_memory.py                         # every model, 1- and 2-layer slices, 10 x 16 tokens
    python experiments/mib_memory.py --models llama3 --layers 1 2 --prompts 10 --tokens 16
    python experiments/mib_memory.py --project-only          # only the full-depth table
    python experiments/mib_memory.py --measured OUT.jsonl    # depth check and table from an earlier run's measurements

For each model (MIB's GPT-2 small, Qwen-2.5-0.5B, Gemma-2-2B, Llama-3.1-8B: their widths, heads,
key/value heads, d_head, d_mlp, vocabulary; random float32 weights) cut to ``--layers`` layers, and
each ``MemoryProfile``, a child process builds the model and a random task, resets its peak
resident memory (``/proc/self/clear_refs``), runs what a method of that profile runs (the patcher
and one patched pass of one circuit; the patcher and EAP-IG's edge scores at 2 points; the patcher
and EAP-IG's receiver gradients at 2 points; the patcher and one float-mask pass with its backward),
and reports how far the peak rose above the resident memory before: the method's memory, the
weights excluded. Printed beside it: ``method_bytes``' estimate and their ratio.

Then, for each (model, profile) measured at two depths, ``depth_check``: how much a layer adds,
measured and estimated, and both extended linearly to the model's full depth at the measured size;
their ratio is the estimate's calibration at full depth.

Then the projection: each model at full depth, in bfloat16, at MIB's batch of 20 prompts of
``--mib-tokens`` tokens: the weights (from the widths, ``weights_bytes``) plus ``method_bytes`` per
profile, in GB (gradient methods also with the engine's prompt chunks), the same times the
calibration where it is above 1 (``calibrated_gb``), and whether that fits an 80 GB GPU.
One JSON line each, after a line describing the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COMMON = dict(act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary", gated_mlp=True,
              attn_only=False, n_ctx=2048, final_rms=True)
MODELS = {  # MIB's models' widths (their Hugging Face configs); the engine's graph of each
    "gpt2": dict(n_layers=12, n_heads=12, d_model=768, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=1024,
                 act_fn="gelu_new", normalization_type="LN", attn_only=False),
    "qwen2.5": dict(COMMON, n_layers=24, n_heads=14, n_key_value_heads=2, d_model=896, d_head=64, d_mlp=4864,
                    d_vocab=151936),
    "gemma2": dict(COMMON, n_layers=26, n_heads=8, n_key_value_heads=4, d_model=2304, d_head=256, d_mlp=9216,
                   d_vocab=256000),
    "llama3": dict(COMMON, n_layers=32, n_heads=32, n_key_value_heads=8, d_model=4096, d_head=128, d_mlp=14336,
                   d_vocab=128256),
}
PROFILES = ("patched pass", "gradient scores", "gradients held", "learned masks")

CHILD = r"""
import json, os, sys, torch
sys.path.insert(0, {root!r})
from acdc_engine.architecture.native import tl_architecture
from acdc_engine.architecture.spec import ModelSpec
from acdc_engine.measure.metrics import kl_divergence
from acdc_engine.patching import EdgePatcher
from acdc_engine.patching.memory import MemoryProfile, method_bytes
torch.set_num_threads(1)

def rss_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

config, profile, n, t = {config!r}, MemoryProfile({profile!r}), {prompts}, {tokens}
cfg, extras = tl_architecture(config, "slice")
model = ModelSpec(cfg, rotary_bases=extras["rotary_bases"]).eval()
generator = torch.Generator().manual_seed(0)
with torch.no_grad():
    for name, param in model.named_parameters():
        if name.rsplit(".", 1)[-1] == "w":
            param.fill_(1.0)
        else:
            param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
n_params = sum(p.numel() for p in model.parameters())
clean = torch.randint(0, cfg.d_vocab, (n, t), generator=generator)
corrupted = torch.randint(0, cfg.d_vocab, (n, t), generator=generator)
positions = torch.tensor([t - 1])
open("/proc/self/clear_refs", "w").write("5")  # the peak resident memory starts again from here
before = rss_mb("VmRSS:")
patcher = EdgePatcher(model, clean, corrupted, positions)
metric = kl_divergence(patcher.logits(patcher.graph.full_mask()))
if profile is MemoryProfile.PATCHED_PASS:
    patcher.logits(patcher.graph.empty_mask())
elif profile is MemoryProfile.GRADIENT_SCORES:
    from acdc_engine.methods.eap import eap_ig_scores
    eap_ig_scores(patcher, metric, steps=2)
elif profile is MemoryProfile.GRADIENTS_HELD:
    from acdc_engine.methods.eap import eap_ig_gradients
    eap_ig_gradients(patcher, metric, steps=2)
else:
    from acdc_engine.core.mask import CircuitMask
    from acdc_engine.patching.float_pass import float_mask_logits
    g = patcher.graph
    edges = torch.full(g.edge_exists.shape, 0.5, requires_grad=True)
    heads = torch.full(tuple(g.full_head_input_mask().shape), 1.0)
    metric(float_mask_logits(patcher, CircuitMask(edges, heads))[None]).sum().backward()
peak = rss_mb("VmHWM:")
estimate = method_bytes(profile, cfg, n_prompts=n, n_tokens=t, n_positions=1, split_input=False) / 2**20
print(json.dumps({{"before_mb": round(before), "method_mb": round(peak - before), "estimate_mb": round(estimate),
                  "n_params": n_params}}))
"""


def measure(name: str, layers: int, profile: str, prompts: int, tokens: int) -> dict:
    """One child process's measurement (``CHILD``) of ``profile`` on ``name`` cut to ``layers`` layers."""
    config = dict(MODELS[name], n_layers=layers, dtype="float32")
    code = CHILD.format(root=str(ROOT), config=config, profile=profile, prompts=prompts, tokens=tokens)
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    line = {"model": name, "layers": layers, "profile": profile, "prompts": prompts, "tokens": tokens}
    if child.returncode != 0:
        return {**line, "error": child.stderr.strip()[-600:]}
    result = json.loads(child.stdout.strip().splitlines()[-1])
    return {**line, **result, "measured_over_estimate": round(result["method_mb"] / max(1, result["estimate_mb"]), 2)}


def weights_bytes(name: str, bytes_per_param: int = 2) -> int:
    """The full-depth model's weights as the engine holds them: embedding and unembedding (untied),
    positional embedding where absolute, and per layer q/k/v/o (with key/value heads) and the MLP
    (three matrices gated, two otherwise); biases and norms are left out (under 0.1%)."""
    m = MODELS[name]
    d, heads, kv, d_head, d_mlp = m["d_model"], m["n_heads"], m.get("n_key_value_heads", m["n_heads"]), m["d_head"], m["d_mlp"]
    per_layer = d * d_head * (2 * heads + 2 * kv) + (3 if m.get("gated_mlp") else 2) * d * d_mlp
    positions = m["n_ctx"] * d if m.get("positional_embedding_type", "standard") == "standard" else 0
    return bytes_per_param * (2 * m["d_vocab"] * d + positions + m["n_layers"] * per_layer)


def projection(name: str, prompts: int, tokens: int, calibration: dict | None = None, gpu_gb: float = 80.0) -> list[dict]:
    """Full depth, bfloat16, ``prompts`` x ``tokens``: weights plus ``method_bytes`` per profile,
    gradient passes over all prompts at once and over the most prompts per pass that fit ``gpu_gb``
    (``prompts_per_pass``: as ``acdc_engine.patching.gradients`` chunks them, passes in
    ``GRADIENT_MEMORY_FRACTION`` of the memory left after the weights and the tables). With
    ``calibration`` {(model, profile): measured / estimated at full depth} (``depth_check``), also
    the method's memory times it where it is above 1 (``calibrated_gb``)."""
    import dataclasses

    import torch
    from acdc_engine.architecture.native import tl_architecture
    from acdc_engine.patching.gradients import GRADIENT_MEMORY_FRACTION
    from acdc_engine.patching.memory import MemoryProfile, method_bytes

    cfg, _ = tl_architecture(dict(MODELS[name]), name)
    cfg = dataclasses.replace(cfg, dtype=torch.bfloat16)
    weights = weights_bytes(name) / 1e9
    lines = []
    for profile in PROFILES:
        def total_gb(per_pass: int | None) -> float:
            held = method_bytes(MemoryProfile(profile), cfg, n_prompts=prompts, n_tokens=tokens, n_positions=1,
                                split_input=False, mask_samples=12 if profile == "learned masks" else 1,
                                prompts_per_pass=per_pass)
            return weights + held / 1e9

        line = {"projection": name, "layers": cfg.n_layers, "dtype": "bfloat16", "prompts": prompts, "tokens": tokens,
                "profile": profile, "weights_gb": round(weights, 1), "all_prompts_gb": round(total_gb(None), 1)}
        if profile in ("gradient scores", "gradients held"):  # the engine's rule: passes in half the memory left
            per_prompt = (total_gb(2) - total_gb(1)) or math.inf
            left = gpu_gb - total_gb(1) + per_prompt
            per_pass = max(1, min(prompts, int(GRADIENT_MEMORY_FRACTION * left / per_prompt)))
            line["prompts_per_pass"] = per_pass
            line["chunked_gb"] = round(total_gb(per_pass), 1)
        best = min(line["all_prompts_gb"], line.get("chunked_gb", math.inf))
        factor = max(1.0, (calibration or {}).get((name, profile), 1.0))
        if calibration and (name, profile) in calibration:
            line["calibrated_gb"] = round(weights + factor * (best - weights), 1)
        line[f"fits_{gpu_gb:.0f}gb"] = line.get("calibrated_gb", best) <= gpu_gb
        lines.append(line)
    return lines


def depth_check(lines: list[dict]) -> list[dict]:
    """For each (model, profile) measured at two depths: the measured growth per layer against the
    estimate's, and both extended to the model's full depth at the measured size (float32); their
    ratio calibrates the full-depth projection (``projection``)."""
    from acdc_engine.architecture.native import tl_architecture
    from acdc_engine.patching.memory import MemoryProfile, method_bytes

    checks = []
    for name in MODELS:
        for profile in PROFILES:
            found = {line["layers"]: line for line in lines
                     if line.get("model") == name and line.get("profile") == profile and "method_mb" in line}
            if len(found) < 2:
                continue
            low, high = sorted(found)[:2]
            first = found[low]
            per_layer = (found[high]["method_mb"] - first["method_mb"]) / (high - low)
            full_layers = MODELS[name]["n_layers"]
            cfg, _ = tl_architecture(dict(MODELS[name], dtype="float32"), name)
            estimate = method_bytes(MemoryProfile(profile), cfg, n_prompts=first["prompts"], n_tokens=first["tokens"],
                                    n_positions=1, split_input=False) / 2**20
            measured = first["method_mb"] + (full_layers - low) * per_layer
            checks.append({"depth_check": name, "profile": profile, "layers": [low, high],
                           "measured_mb_per_layer": round(per_layer),
                           "estimate_mb_per_layer": round((found[high]["estimate_mb"] - first["estimate_mb"]) / (high - low)),
                           "full_depth_measured_mb": round(measured), "full_depth_estimate_mb": round(estimate),
                           "calibration": round(measured / estimate, 2)})
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--profiles", nargs="+", choices=PROFILES, default=list(PROFILES))
    parser.add_argument("--layers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--mib-tokens", type=int, default=32, help="tokens per prompt in the projection")
    parser.add_argument("--project-only", action="store_true")
    parser.add_argument("--measured", type=Path, help="take the slices' measurements from this earlier output")
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(json.dumps({"machine": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}),
          flush=True)
    measured = [] if args.measured is None else [json.loads(line) for line in args.measured.read_text().splitlines()
                                                   if '"method_mb"' in line]
    if not args.project_only and args.measured is None:
        for name in args.models:
            for layers in args.layers:
                for profile in args.profiles:
                    measured.append(measure(name, layers, profile, args.prompts, args.tokens))
                    print(json.dumps(measured[-1]), flush=True)
    checks = depth_check(measured)
    for line in checks:
        print(json.dumps(line), flush=True)
    calibration = {(c["depth_check"], c["profile"]): c["calibration"] for c in checks}
    for name in args.models:
        for line in projection(name, 20, args.mib_tokens, calibration):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
