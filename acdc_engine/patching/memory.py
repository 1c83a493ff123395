"""The memory model: what the patched pass and each kind of method hold for a task, in bytes.

Every term is tensor elements per prompt token (times the dtype's size and the task's prompts x
tokens for bytes), from the model's widths: layers L, heads H, d_model d, d_head, d_mlp, vocabulary
V, senders S, receivers R, the metric's positions P, and the tokens per prompt n_tokens (attention
scores). The weights are not counted (they are loaded before any check).

- ``baseline_elements_per_token``: the patcher's tables (clean, ablated and all-removed runs), which
  every method holds (``Baseline``).
- one ``MemoryProfile`` term per kind of method on top: one circuit's working set in a patched pass
  (``circuit_elements_per_token``), one forward and backward pass whose receiver gradients are
  contracted as they come (``gradient_pass_elements_per_token``), every receiver's gradient held,
  or the autograd state of a float-mask pass per mask sample (``float_pass_elements_per_token``).
- ``method_bytes`` adds them up; ``patched_pass_bytes`` is exact ACDC's. ``available_memory`` is
  what the device can still allocate. ``experiments/mib_memory.py`` checks the model against
  measured peaks at real widths and projects MIB's models to full depth (README's table).
"""

from __future__ import annotations

import os
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch


class MemoryProfile(Enum):
    """What a method holds on top of the patcher's tables.

    PATCHED_PASS: circuits evaluated in patched passes (exact ACDC and its relatives): one circuit's
        working set; the batch of circuits adapts to the memory left.
    GRADIENT_SCORES: edge attribution (EAP, EAP-IG, clean-corrupted): one forward and backward
        pass at a time, each receiver group's gradient contracted into the [S, R] scores as it comes.
    GRADIENTS_HELD: node and neuron attribution: every receiver's gradient [tokens, R, d_model] held,
        with a float32 sum over the integration points, on top of a gradient pass.
    LEARNED_MASKS: edge pruning, UGS, subnetwork probing: a float-mask pass with its autograd state
        per mask sample of a step.
    """

    PATCHED_PASS = "patched pass"
    GRADIENT_SCORES = "gradient scores"
    GRADIENTS_HELD = "gradients held"
    LEARNED_MASKS = "learned masks"


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


def n_senders_of(cfg: Any, split_input: bool) -> int:
    """Senders: the input sender(s), then each layer's heads and MLP."""
    return (2 if split_input else 1) + cfg.n_layers * (cfg.n_heads + (0 if cfg.attn_only else 1))


def n_receivers_of(cfg: Any) -> int:
    """Receivers: each layer's 3 * n_heads q/k/v inputs and MLP input, and the logits."""
    return cfg.n_layers * (3 * cfg.n_heads + (0 if cfg.attn_only else 1)) + 1


def _d_mlp(cfg: Any) -> int:
    return 0 if cfg.attn_only else (cfg.d_mlp or 0)


def _norm_copies(cfg: Any) -> int:
    """Tensors of its input's size a pre-norm keeps for the backward pass: LayerNorm's fused kernel
    its input and output, RMSNorm's chain of operations also its normalised input."""
    return 3 if (getattr(cfg, "normalization_type", None) or "").startswith("RMS") else 2


def _mlp_activations(cfg: Any) -> int:
    """The MLP's activations autograd keeps, in units of d_mlp: 4 gated, 2 otherwise."""
    return (4 if getattr(cfg, "gated_mlp", False) else 2) * _d_mlp(cfg)


def baseline_elements_per_token(cfg: Any, *, n_tokens: int, n_positions: int, split_input: bool) -> float:
    """The patcher's tables, elements per prompt token: every sender's output (clean, ablated,
    their difference, and the ablated ones sender-major), q/k/v of the clean, ablated and
    all-removed runs, the residual reads of those runs, the MLP outputs of the all-removed inputs,
    one layer's q/k/v inputs while they are built, and the full model's logits at the metric's
    positions (twice: the model's and the metric's reference), and the self-check's logits of the
    model's own forward at every position (``patching.self_check``)."""
    layers, heads, d_model, d_head = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head
    has_mlp = 0 if cfg.attn_only else 1
    reads = 2 * layers + 1  # before each layer's heads, before its MLP, and the logits
    return (
        4 * n_senders_of(cfg, split_input) * d_model
        + 3 * layers * 3 * heads * d_head
        + 3 * reads * d_model
        + has_mlp * layers * d_model
        + 3 * heads * d_model
        + heads * n_tokens
        + 2 * n_positions * cfg.d_vocab / n_tokens
        + 2 * cfg.d_vocab  # the self-check: the model's own logits at every position, clean and corrupted
    )


def gradient_pass_elements_per_token(cfg: Any, *, n_tokens: int, n_positions: int) -> float:
    """One forward and backward pass of ``EdgePatcher.gradient_pass``, elements per prompt token:
    per layer what autograd keeps for the backward pass (the pre-norm's input and statistics, once
    for the layer's receivers; their q/k/v, the attention scores and pattern, the MLP's
    activations, ``_mlp_activations``, a few residual-width tensors, and the norm's standardized input
    that the edge scores' corrections hold), then, while one layer's q/k/v receivers are handled,
    their gradients' [3H, d_model] factor (``acdc_engine.patching.qkv_gradients``, one tensor for
    the pass) and two temporaries of that size where the gradients are formed densely (node and
    neuron methods), and the logits at the metric's positions."""
    heads, d_model, d_head = cfg.n_heads, cfg.d_model, cfg.d_head
    per_layer = 2 * 3 * heads * d_head + 2 * heads * n_tokens + _mlp_activations(cfg) + 10 * d_model
    one_layer = 3 * 3 * heads * d_model
    return cfg.n_layers * per_layer + one_layer + 2 * n_positions * cfg.d_vocab / n_tokens


def float_pass_elements_per_token(cfg: Any, *, n_tokens: int, split_input: bool) -> float:
    """One float-mask pass with its autograd state (``patching.float_pass``), elements per prompt
    token: every sender's output, and per layer the receivers' q/k/v inputs through their pre-norm
    (``_norm_copies``), their q/k/v and gradients, the attention scores and the MLP's input and
    activations."""
    has_mlp = 0 if cfg.attn_only else 1
    heads, d_model, d_head = cfg.n_heads, cfg.d_model, cfg.d_head
    receivers = _norm_copies(cfg) * 3 * heads * d_model
    per_layer = receivers + 6 * heads * d_head + heads * n_tokens + has_mlp * d_model + _mlp_activations(cfg) / 2
    return n_senders_of(cfg, split_input) * d_model + cfg.n_layers * per_layer


def method_bytes(
    profile: MemoryProfile, cfg: Any, *, n_prompts: int, n_tokens: int, n_positions: int, split_input: bool,
    mask_samples: int = 1, prompts_per_pass: int | None = None,
) -> int:
    """An estimate, in bytes, of what a method of ``profile`` holds for a task of ``n_prompts``
    prompts of ``n_tokens`` tokens whose metric reads ``n_positions`` positions, on a model with
    TransformerLens-style config ``cfg`` (in its dtype): the patcher's tables plus the profile's
    term (``MemoryProfile``), the weights not counted. ``mask_samples``: a learned-mask step's
    mask samples (UGS's ``samples``; 1 for the others). ``prompts_per_pass``: the prompts of one
    gradient pass (``acdc_engine.patching.gradients.prompt_chunks``; None: all of them)."""
    element = torch.empty((), dtype=cfg.dtype).element_size()
    tokens = n_prompts * n_tokens
    per_token = baseline_elements_per_token(cfg, n_tokens=n_tokens, n_positions=n_positions, split_input=split_input)
    if profile is MemoryProfile.PATCHED_PASS:
        n_senders = n_senders_of(cfg, split_input)
        per_token += circuit_elements_per_token(cfg, n_senders=n_senders, n_tokens=n_tokens, n_positions=n_positions)
    elif profile is MemoryProfile.LEARNED_MASKS:
        per_token += mask_samples * float_pass_elements_per_token(cfg, n_tokens=n_tokens, split_input=split_input)
    if profile is MemoryProfile.GRADIENTS_HELD:  # the gradients, and their float32 sum over points
        per_token += n_receivers_of(cfg) * cfg.d_model * (1 + 4 / element)
    total = per_token * tokens + weight_copy_elements(profile, cfg)
    if profile in (MemoryProfile.GRADIENT_SCORES, MemoryProfile.GRADIENTS_HELD):
        pass_tokens = min(n_prompts, prompts_per_pass or n_prompts) * n_tokens
        total += gradient_pass_elements_per_token(cfg, n_tokens=n_tokens, n_positions=n_positions) * pass_tokens
    return int(total * element)


def weight_copy_elements(profile: MemoryProfile, cfg: Any) -> int:
    """Copies of the q/k/v weights a method makes, in elements, whatever the task: every layer's
    W_Q, W_K, W_V stacked once (``Attention.stacked_weights``), and each receiver's own projection
    [3 n_heads, d_model, d_head] gathered per layer (``Attention.receiver_weights``), one layer's at a
    time in a patched pass, every layer's kept for the backward pass of a gradient or float-mask pass."""
    heads, kv = cfg.n_heads, cfg.n_key_value_heads or cfg.n_heads
    stacked = cfg.n_layers * (heads + 2 * kv) * cfg.d_model * cfg.d_head
    gathered = 3 * heads * cfg.d_model * cfg.d_head
    return stacked + gathered * (1 if profile is MemoryProfile.PATCHED_PASS else cfg.n_layers)


def patched_pass_bytes(cfg: Any, *, n_prompts: int, n_tokens: int, n_positions: int, split_input: bool) -> int:
    """``method_bytes`` of exact ACDC (``MemoryProfile.PATCHED_PASS``): the patcher's tables and
    one circuit's working set."""
    return method_bytes(MemoryProfile.PATCHED_PASS, cfg, n_prompts=n_prompts, n_tokens=n_tokens,
                        n_positions=n_positions, split_input=split_input)


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
        text = proc_cgroup.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    allowed: list[int] = []
    for here, limit_name, usage_name, cache_key in _cgroup_levels(text, root):
        limit = _read_bytes(here / limit_name)
        usage = None if limit is None or limit >= _UNLIMITED else _read_bytes(here / usage_name)
        if usage is None:
            continue
        allowed.append(max(0, limit - max(0, usage - _stat_bytes(here / "memory.stat", cache_key))))
    return min(allowed) if allowed else None


@lru_cache(maxsize=16)
def _cgroup_levels(proc_text: str, root: Path) -> tuple[tuple[Path, str, str, str], ...]:
    """The memory cgroup folders ``cgroup_available`` reads for the cgroups named by ``proc_text``
    (``/proc/self/cgroup``'s content) under ``root``, each with its limit and usage file names and
    the memory.stat key of its reclaimable page cache; the folders are looked up once per content."""
    levels = []
    for line in proc_text.splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        version = 2 if controllers == "" else 1 if "memory" in controllers.split(",") else None
        if version is None:
            continue
        mount_name, limit_name, usage_name, cache_key = _CGROUP_FILES[version]
        mount = root / mount_name if mount_name else root
        folder = mount / path.strip("/")
        found = [folder, *(p for p in folder.parents if p.is_relative_to(mount))] if folder.is_dir() else [mount]
        levels += [(here, limit_name, usage_name, cache_key) for here in found]
    return tuple(levels)


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


