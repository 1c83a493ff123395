"""Tiny random Hugging Face models of every family the engine supports, built offline.

``build_family(name, folder)`` writes a 2-layer float32 model of family ``name`` (one of
``FAMILIES``) with ``save_pretrained``, together with a small word-level tokenizer, and returns the
folder. Each model has the features its family is known for switched on and made to matter:
grouped-query attention (4 query heads, 2 key/value heads), partial rotary, a sliding window
shorter than ``PROMPT_LENGTH``, soft-caps small enough to bite; every weight (biases and norm
weights included) is drawn wide enough that the logits are far from uniform.
"""

from __future__ import annotations

from pathlib import Path

import torch

BOS, EOS, UNK = "<bos>", "<eos>", "<unk>"
WORDS = [f"w{i}" for i in range(77)]
VOCAB = [BOS, EOS, UNK, *WORDS]  # 80 ids
N_CTX = 32
PROMPT_LENGTH = 12  # longer than every sliding window below
WINDOW = 4


def tokenizer():
    """A ``PreTrainedTokenizerFast`` that splits on whitespace: ids 0, 1, 2 are BOS, EOS and the
    unknown token, then ``WORDS`` in order."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(VOCAB)}, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=EOS)


def _common(tie: bool = False, **extra):
    """Fields shared by the Llama-like configs: 2 layers, d_model 32, 4 heads of 8, 2 key/value heads;
    ``tie``: the unembedding is the embedding's transpose (as in Gemma)."""
    return dict(
        vocab_size=len(VOCAB), hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=N_CTX, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        tie_word_embeddings=tie, **extra,
    )


def _configs():
    import transformers as t

    layer_types = ["sliding_attention", "full_attention"]
    return {
        "gpt2": lambda: t.GPT2Config(
            vocab_size=len(VOCAB), n_positions=N_CTX, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=1,
        ),
        "gpt_neox": lambda: t.GPTNeoXConfig(
            vocab_size=len(VOCAB), hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=N_CTX, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                            "partial_rotary_factor": 0.5},
            use_parallel_residual=True, bos_token_id=0, eos_token_id=1,
        ),
        "gptj": lambda: t.GPTJConfig(
            vocab_size=len(VOCAB), n_positions=N_CTX, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_inner=48,
            bos_token_id=0, eos_token_id=1,
        ),
        "llama": lambda: t.LlamaConfig(**_common()),
        "mistral": lambda: t.MistralConfig(**_common(sliding_window=WINDOW, head_dim=8)),
        "qwen2": lambda: t.Qwen2Config(**_common()),
        "qwen3": lambda: t.Qwen3Config(**_common(head_dim=8)),
        "gemma": lambda: t.GemmaConfig(**_common(head_dim=8, hidden_activation="gelu_pytorch_tanh", tie=True)),
        "gemma2": lambda: t.Gemma2Config(**_common(
            head_dim=8, query_pre_attn_scalar=12, sliding_window=WINDOW, attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0, layer_types=layer_types, tie=True,
        )),
        "gemma3": lambda: t.Gemma3TextConfig(**_common(
            head_dim=8, query_pre_attn_scalar=12, sliding_window=WINDOW, layer_types=layer_types,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 2.0},
            },
            tie=True,
        )),
        "olmo2": lambda: t.Olmo2Config(**_common()),
        "phi3": lambda: t.Phi3Config(**_common(
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        )),
    }


FAMILIES = tuple(_configs())


def family_model(name: str, seed: int = 0):
    """The random float32 Hugging Face model of family ``name``, in eval mode (eager attention)."""
    from transformers import AutoModelForCausalLM

    config = _configs()[name]()
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.dim() == 1:  # biases and norm weights: off their 0 / 1 defaults
                param.add_(0.3 * noise)
            else:
                param.copy_(0.3 * noise)
    return model


def build_family(name: str, folder: str | Path, seed: int = 0) -> Path:
    """Write family ``name``'s tiny model and the tokenizer to ``folder`` (save_pretrained); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    family_model(name, seed).save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    return folder
