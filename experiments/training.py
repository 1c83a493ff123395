"""Shared pieces of the scripts that train the shipped testbed models (``experiments/train_*.py``).

Each script defines its model config, its data and its evaluation; this module holds what they
share: the deterministic set-up, the training loop (AdamW with linear warm-up, a fresh seeded batch
every step) and writing the weights into the package, followed by a strict reload check.

Runs are deterministic given the seed: bitwise, on the same machine, torch build and thread count.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "acdc_engine" / "models" / "weights"
LOG_EVERY = 500

# batch_loss(model, generator) -> scalar loss on one fresh batch drawn from ``generator``
BatchLoss = Callable[[HookedTransformer, torch.Generator], torch.Tensor]


def deterministic_model(config: dict[str, Any], seed: int, threads: int) -> HookedTransformer:
    """A freshly initialised model in train mode, after making torch deterministic.

    ``threads`` is part of the run's identity: a different intra-op thread count can change the
    floating-point summation order, hence the weights.
    """
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)  # multi-threaded CPU backward is otherwise not bitwise reproducible
    torch.manual_seed(seed)
    model = HookedTransformer(HookedTransformerConfig(**config))
    model.train()
    return model


def train(
    model: HookedTransformer,
    batch_loss: BatchLoss,
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    seed: int,
) -> float:
    """Train ``model`` for ``steps`` AdamW steps (learning rate warmed up linearly over ``warmup``
    steps); batches come from a ``torch.Generator`` seeded with ``seed``. Prints progress every
    ``LOG_EVERY`` steps and returns the mean training loss over the last 100 steps."""
    t0 = time.time()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    recent: list[float] = []  # losses of the last 100 steps
    for step in range(steps):
        loss = batch_loss(model, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        recent = (recent + [loss.item()])[-100:]
        if step % LOG_EVERY == 0 or step == steps - 1:
            mean = sum(recent) / len(recent)
            print(f"step {step:5d}  loss {loss.item():.4f}  (mean of last 100: {mean:.4f})  {time.time() - t0:.1f}s")
    model.eval()
    return sum(recent) / len(recent)


def save_shipped(
    model: HookedTransformer, name: str, config: dict[str, Any], training: dict[str, Any], check_tokens: torch.Tensor
) -> None:
    """Write ``<name>.safetensors`` (the state dict) and ``<name>.json`` (``{"config", "training"}``)
    into the package's weights folder, overwriting; then rebuild a model from those two files with
    strict loading and check that it gives the same logits on ``check_tokens`` [batch, pos]."""
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    weights_path = WEIGHTS_DIR / f"{name}.safetensors"
    json_path = WEIGHTS_DIR / f"{name}.json"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights_path))
    json_path.write_text(json.dumps(dict(config=config, training=training), indent=2) + "\n")
    print(f"\nwrote {weights_path} ({weights_path.stat().st_size} bytes)")
    print(f"wrote {json_path} ({json_path.stat().st_size} bytes)")

    reloaded = HookedTransformer(HookedTransformerConfig(**json.loads(json_path.read_text())["config"]))
    reloaded.load_state_dict(load_file(str(weights_path)), strict=True)
    reloaded.eval()
    with torch.no_grad():
        diff = (reloaded(check_tokens) - model(check_tokens)).abs().max().item()
    print(f"reload check: strict load ok, max |logit diff| = {diff:.2e}")
    assert diff < 1e-5, diff
