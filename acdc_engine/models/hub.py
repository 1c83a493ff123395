"""Pretrained names (Hugging Face repository ids such as ``EleutherAI/pythia-70m``, and
TransformerLens's aliases such as ``gpt2`` or ``pythia-70m``), fetched from the Hugging Face hub or
read from its local cache, booted as a TransformerLens ``TransformerBridge`` and returned as the
engine's ``ModelSpec``.

Without a hub a load fails at once: with ``HF_HUB_OFFLINE=1`` the Hugging Face libraries read only
their cache, and otherwise one short request checks that the hub answers before any download is
tried (the libraries' own retries take about 25 s to give up). Every failure suggests
``model=local model.path=DIR``.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import torch

from acdc_engine.core.errors import AcdcError

if TYPE_CHECKING:
    from acdc_engine.architecture import ModelSpec

PROBE_TIMEOUT_S = 3.0
MESSAGE_WORDS = 80  # a library's error is quoted up to this many words, never cut inside one (a URL)
NO_HUB_HINT = (
    "Without a model hub: on a machine that has one, save the model with save_pretrained(DIR) (model "
    "and tokenizer), then run with model=local model.path=DIR."
)


def one_line(text: str, max_words: int = MESSAGE_WORDS) -> str:
    """``text`` on one line (whitespace runs made single spaces), its first ``max_words`` words, whole."""
    words = text.split()
    return " ".join(words[:max_words]) + (" ..." if len(words) > max_words else "")


def hub_reachable(endpoint: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True when an HTTP request to ``endpoint`` gets any answer (even an error status) within
    ``timeout_s`` seconds; honours the usual proxy environment variables."""
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # URLError, timeouts, refused connections, malformed endpoints
        return False
    return True


def official_name(name: str) -> str:
    """TransformerLens's official (Hugging Face) name of ``name``; AcdcError if it knows none."""
    try:
        from transformer_lens.supported_models import get_official_model_name
    except ImportError:  # TransformerLens 3.9
        from transformer_lens.loading_from_pretrained import get_official_model_name
    try:
        return get_official_model_name(name)
    except ValueError:
        raise AcdcError(
            f"unknown model '{name}': neither a built-in model (see conf/model/) nor a pretrained name "
            "TransformerLens knows (e.g. gpt2, EleutherAI/pythia-70m, meta-llama/Llama-3.2-1B)"
        ) from None


def _download(official: str, device: str, dtype: torch.dtype) -> ModelSpec:
    from transformer_lens.model_bridge import TransformerBridge

    from acdc_engine.architecture import from_bridge

    return from_bridge(TransformerBridge.boot_transformers(official, device=device, dtype=dtype))


def load_pretrained(name: str, device: str, dtype: torch.dtype) -> ModelSpec:
    """The pretrained model ``name`` in eval mode (module docstring).

    AcdcError at once when ``name`` is not a known pretrained name, when the hub cannot be
    reached, or when the download or conversion fails.
    """
    from huggingface_hub import constants

    official = official_name(name)
    if not constants.HF_HUB_OFFLINE and not hub_reachable(constants.ENDPOINT):
        raise AcdcError(
            f"pretrained model '{name}' ({official}) needs the model hub, and {constants.ENDPOINT} cannot "
            f"be reached (a model already in the Hugging Face cache loads with HF_HUB_OFFLINE=1). {NO_HUB_HINT}"
        )
    try:
        model = _download(official, device, dtype)
    except AcdcError:
        raise
    except OSError as error:  # what the Hugging Face libraries raise for files neither cached nor fetched
        if constants.HF_HUB_OFFLINE:
            where = "is not in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it"
        else:
            where = "could not be downloaded"
        raise AcdcError(f"pretrained model '{name}' ({official}) {where} ({one_line(str(error))}). {NO_HUB_HINT}") from None
    except Exception as error:  # the converters raise many types; all mean "could not load"
        raise AcdcError(
            f"could not load pretrained model '{name}' ({type(error).__name__}: {one_line(str(error))}). {NO_HUB_HINT}"
        ) from None
    return model.eval()
