"""A tiny GPT-2-architecture Hugging Face model with a word-level tokenizer, built offline with
``transformers`` and ``tokenizers``: what a user's ``save_pretrained`` folder looks like."""

from pathlib import Path

import torch

BOS = "<|endoftext|>"
UNK = "[UNK]"
WORDS = "When Mary John Alice Bob and went to the store , gave a drink book".split()
N_POSITIONS = 16


def word_tokenizer():
    """A ``PreTrainedTokenizerFast`` that splits on whitespace: BOS is id 0, the unknown token id 1,
    then ``WORDS`` in order."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate([BOS, UNK, *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=BOS, unk_token=UNK)


def gpt2_model(seed: int = 0):
    """A random 2-layer, 4-head GPT-2 (d_model 32) over the tokenizer's vocabulary, in eval mode;
    weights drawn wider than GPT-2's default (std 0.02) so that its logits are far from uniform."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=2 + len(WORDS), n_positions=N_POSITIONS, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=0, eos_token_id=0, initializer_range=0.3,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


def save_gpt2_folder(folder: Path, seed: int = 0, tokenizer: bool = True):
    """Write the model (and, by default, the tokenizer) with ``save_pretrained``; returns the model."""
    model = gpt2_model(seed)
    model.save_pretrained(folder)
    if tokenizer:
        word_tokenizer().save_pretrained(folder)
    return model
