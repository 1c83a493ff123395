"""The patched pass's memory model: what it holds for a task, and what one more circuit in a batch adds.

Both are estimates in bytes, from the model's widths and the task's shape (prompts, tokens, the
metric's positions): ``patched_pass_bytes`` (what ``discover`` checks before a run),
``circuit_elements_per_token`` (one circuit's working set, per prompt token: what sizes a batch),
``available_memory`` (what the device can still allocate).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def circuit_elements_per_token(cfg: Any, *, n_senders: int, n_tokens: int, n_positions: int) -> float:
    """One circuit's working set in a patched pass, in tensor elements per prompt token (times the
    dtype's size for bytes): every sender's output
    of this pass, q/k/v receiver inputs with their corrections, norms and projections, the attention
    scores and pattern, the MLP's activations, and the logits at the metric's ``n_positions``."""
    d_mlp = 0 if cfg.attn_only else (cfg.d_mlp or 0)
    return (
        n_senders * cfg.d_model
        + 4 * 3 * cfg.n_heads * (cfg.d_model + cfg.d_head)  # receiver inputs, corrections, LayerNorm, q/k/v
        + 2 * cfg.n_heads * n_tokens  # scores, pattern
        + 3 * d_mlp
        + n_positions * cfg.d_vocab / n_tokens  # logits
    )


def patched_pass_bytes(cfg: Any, *, n_prompts: int, n_tokens: int, n_positions: int, split_input: bool) -> int:
    """An estimate, in bytes, of the memory ``acdc_engine.patching.EdgePatcher`` holds for a task of
    ``n_prompts`` prompts of ``n_tokens`` tokens whose metric reads ``n_positions`` positions, on a
    model with TransformerLens config ``cfg``, while it evaluates one circuit: every sender's output,
    q/k/v and residual reads of the clean, the ablated and the all-edges-removed runs, one circuit's
    working set, and the logits at the metric's positions. Measured on CPU (the default toy model,
    and a 4-layer model with MLPs), the peak while evaluating one circuit is about 0.75 of this."""
    layers, heads, d_model, d_head, d_vocab = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_vocab
    has_mlp = 0 if cfg.attn_only else 1
    senders = (2 if split_input else 1) + layers * (heads + has_mlp)
    reads = 2 * layers + 1  # before each layer's heads, before its MLP, and the logits
    logits_per_token = n_positions * d_vocab / n_tokens
    held = (
        3 * senders * d_model  # sender outputs: clean, ablated, their difference
        + 3 * layers * 3 * heads * d_head  # q/k/v: clean, ablated, from the all-removed inputs
        + 3 * reads * d_model  # residual reads: clean, ablated, all-removed
        + has_mlp * layers * d_model  # MLP outputs of the all-removed inputs
        + 3 * heads * d_model  # one layer's q/k/v inputs while they are built
        + heads * n_tokens  # an attention pattern
    )
    circuit = circuit_elements_per_token(cfg, n_senders=senders, n_tokens=n_tokens, n_positions=n_positions)
    per_token = held + circuit + 2 * logits_per_token  # the full model's logits, and the metric's
    element = torch.empty((), dtype=cfg.dtype).element_size()
    return int(per_token * n_prompts * n_tokens * element)


def available_memory(device: str | torch.device) -> int | None:
    """Bytes that can still be allocated on ``device``: free GPU memory; on a CPU the smaller of
    the kernel's MemAvailable and what the process's memory cgroup still allows
    (``cgroup_available``: the job's limit under slurm ``--mem``, docker ``--memory``); None where
    none can be read."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    limits = [_machine_available(), cgroup_available()]
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


def _machine_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
_UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a huge number (9223372036854771712)
# (mount below CGROUP_ROOT, limit file, usage file, memory.stat key of reclaimable page cache)
_CGROUP_FILES = {
    2: ("", "memory.max", "memory.current", "inactive_file"),
    1: ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
}


def cgroup_available(proc_cgroup: Path | None = None, root: Path | None = None) -> int | None:
    """Bytes the memory cgroups of this process still allow: for its cgroup and each one above it
    that sets a limit, the limit less the usage (page cache the kernel can drop not counted), the
    smallest of them; cgroup v2 (``memory.max``) and v1 (``memory.limit_in_bytes``). ``proc_cgroup``
    names the process's cgroups (None: ``PROC_CGROUP``), ``root`` is where they are mounted (None:
    ``CGROUP_ROOT``). A
    cgroup namespace whose path is not found under the mount reads the mount's own files. None:
    no limit set, or nothing readable."""
    proc_cgroup, root = proc_cgroup or PROC_CGROUP, root or CGROUP_ROOT
    try:
        lines = proc_cgroup.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    allowed: list[int] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        version = 2 if controllers == "" else 1 if "memory" in controllers.split(",") else None
        if version is None:
            continue
        mount_name, limit_name, usage_name, cache_key = _CGROUP_FILES[version]
        mount = root / mount_name if mount_name else root
        folder = mount / path.strip("/")
        levels = [folder, *(p for p in folder.parents if p.is_relative_to(mount))] if folder.is_dir() else [mount]
        for here in levels:
            limit, usage = _read_bytes(here / limit_name), _read_bytes(here / usage_name)
            if limit is None or usage is None or limit >= _UNLIMITED:
                continue
            allowed.append(max(0, limit - max(0, usage - _stat_bytes(here / "memory.stat", cache_key))))
    return min(allowed) if allowed else None


def _read_bytes(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _stat_bytes(path: Path, key: str) -> int:
    try:
        for line in path.read_text(encoding="ascii").splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except (OSError, UnicodeDecodeError):
        pass
    return 0


