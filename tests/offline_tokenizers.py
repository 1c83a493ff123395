"""Tokenizers of the model families the text tasks meet, built offline: each family's own
``transformers`` tokenizer class (or, where the hub ships a plain ``tokenizer.json``, the pipeline
that file holds) over a BPE vocabulary trained here on the words a test needs.

    family   word start  the tokenizer adds   bos_token            numbers
    gpt2     "ĠMary"     nothing              <|endoftext|>        merged freely by BPE
    pythia   "ĠMary"     nothing              <|endoftext|>        merged freely by BPE
    olmo2    "ĠMary"     nothing              <|endoftext|>        runs of up to three digits
    qwen2    "ĠMary"     nothing              none                 one digit at a time
    llama3   "ĠMary"     <|begin_of_text|>    <|begin_of_text|>    runs of up to three digits
    llama    "▁Mary"     <s>                  <s>                  one digit at a time (Llama 2, Mistral)
    gemma    "▁Mary"     <bos>                <bos>                one digit at a time

"▁" families prepend "▁" to the text's first word (Llama) or not (Gemma). ``digits`` overrides a
family's rule for numbers with a regex whose matches are kept apart, e.g. r"\\d\\d" to write 1732 as
17 | 32 (in every family but Qwen's, whose own pre-tokenizer then parts the digits again). The
vocabulary grows until each word of the corpus is one token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GemmaTokenizer, GPT2Tokenizer, GPTNeoXTokenizer, LlamaTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast, Qwen2Tokenizer,
)

# the pre-tokenizer regex of byte-level tokenizers that cut numbers into runs of up to three digits
RUNS_OF_THREE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
BYTES = [f"<0x{b:02X}>" for b in range(256)]  # SentencePiece byte fallback: no character is ever dropped


@dataclass(frozen=True)
class Family:
    build: Callable[[dict, list], PreTrainedTokenizerBase]  # (vocab, merges) -> tokenizer
    specials: tuple[str, ...]  # in vocabulary order, before the trained tokens
    sentencepiece: Optional[str] = None  # "first" / "never": where "▁" is prepended; None: byte-level
    train_digits: Optional[str] = None  # a digit rule the vocabulary obeys without a pre-tokenizer for it
    adds_bos: bool = False


def _byte_level_fast(bos: Optional[str], eos: str, pad: Optional[str], adds_bos: bool) -> Callable[[dict, list], PreTrainedTokenizerBase]:
    """A ``tokenizer.json``-style byte-level tokenizer that cuts numbers into runs of up to three."""

    def build(vocab: dict, merges: list) -> PreTrainedTokenizerBase:
        backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(RUNS_OF_THREE), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        backend.decoder = decoders.ByteLevel()
        if adds_bos:
            backend.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
        return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad)

    return build


FAMILIES: dict[str, Family] = {
    "gpt2": Family(lambda v, m: GPT2Tokenizer(vocab=v, merges=m), ("<|endoftext|>",)),
    "pythia": Family(lambda v, m: GPTNeoXTokenizer(vocab=v, merges=m), ("<|endoftext|>", "<|padding|>")),
    "olmo2": Family(_byte_level_fast("<|endoftext|>", "<|endoftext|>", "<|pad|>", False), ("<|endoftext|>", "<|pad|>")),
    "qwen2": Family(lambda v, m: Qwen2Tokenizer(vocab=v, merges=m), ("<|endoftext|>",)),
    "llama3": Family(
        _byte_level_fast("<|begin_of_text|>", "<|end_of_text|>", None, True), ("<|begin_of_text|>", "<|end_of_text|>"), adds_bos=True
    ),
    "llama": Family(
        lambda v, m: LlamaTokenizer(vocab=v, merges=m, add_bos_token=True),
        ("<unk>", "<s>", "</s>", *BYTES), sentencepiece="first", train_digits=r"\d", adds_bos=True,
    ),
    "gemma": Family(
        lambda v, m: GemmaTokenizer(vocab=v, merges=m, add_bos_token=True),
        ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", *BYTES), sentencepiece="never", train_digits=r"\d", adds_bos=True,
    ),
}


def _pipeline(family: Family) -> Tokenizer:
    """The family's tokenizer pipeline (normalizer, pre-tokenizer) over its special tokens alone."""
    return family.build({s: i for i, s in enumerate(family.specials)}, []).backend_tokenizer


def _training_pre_tokenizer(family: Family, digits: Optional[str]) -> pre_tokenizers.PreTokenizer:
    """Pieces no merge may cross: the family's own for byte-level BPE; for SentencePiece-style BPE,
    words that start at a "▁", with punctuation, newlines and numbers apart (SentencePiece never
    merges "▁" with a digit: Llama 2 writes " 1732" as "▁" 1 7 3 2)."""
    rule = digits or family.train_digits
    steps = [pre_tokenizers.Split(Regex(rule), "isolated")] if rule else []
    if family.sentencepiece is None:
        return pre_tokenizers.Sequence([*steps, _pipeline(family).pre_tokenizer])
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=family.sentencepiece, split=True)
    return pre_tokenizers.Sequence([*steps, metaspace, pre_tokenizers.Split(Regex(r"[^\w▁]|\d+"), "isolated")])


def family_tokenizer(family: str, corpus: Iterable[str], digits: Optional[str] = None) -> PreTrainedTokenizerBase:
    """The ``family``'s tokenizer (see the module docstring) over a vocabulary trained on ``corpus``."""
    spec = FAMILIES[family]
    trainable = Tokenizer(models.BPE())
    if spec.sentencepiece is None:
        trainable.normalizer = _pipeline(spec).normalizer
    trainable.pre_tokenizer = _training_pre_tokenizer(spec, digits)
    alphabet = pre_tokenizers.ByteLevel.alphabet() if spec.sentencepiece is None else []
    trainer = trainers.BpeTrainer(
        vocab_size=20000, special_tokens=list(spec.specials), initial_alphabet=alphabet, show_progress=False
    )
    trainable.train_from_iterator(list(corpus), trainer)
    model = json.loads(trainable.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = spec.build(model["vocab"], merges)
    if digits:
        backend = tokenizer.backend_tokenizer
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(digits), "isolated"), *([backend.pre_tokenizer] if backend.pre_tokenizer else [])]
        )
    return tokenizer


def word_start(family: str, word: str) -> str:
    """How ``family`` spells the token of ``word`` after a space."""
    return ("Ġ" if FAMILIES[family].sentencepiece is None else "▁") + word


def word_level_tokenizer(words: Iterable[str], bos: str = "<|endoftext|>") -> PreTrainedTokenizerFast:
    """A word-level tokenizer knowing exactly ``words`` (and punctuation); anything else is [UNK]."""
    vocab = {word: i for i, word in enumerate(dict.fromkeys([bos, "[UNK]", *words, *",.:()"]))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, unk_token="[UNK]")



class ModelConfig:
    """The fields of ``model.cfg`` a task may read."""

    __slots__ = ("d_vocab", "n_ctx", "model_name")

    def __init__(self, d_vocab: int, n_ctx: int, model_name: str) -> None:
        self.d_vocab, self.n_ctx, self.model_name = d_vocab, n_ctx, model_name


class TaskModel:
    """All a task may use of a model: ``cfg`` (``ModelConfig``) and ``tokenizer``; reading anything
    else raises AttributeError, so a task that needs more fails on this stand-in."""

    __slots__ = ("cfg", "tokenizer")

    def __init__(
        self, tokenizer: Optional[PreTrainedTokenizerBase], d_vocab: Optional[int] = None, n_ctx: int = 1024,
        model_name: str = "stand-in",
    ) -> None:
        self.tokenizer = tokenizer
        self.cfg = ModelConfig(len(tokenizer) if d_vocab is None else d_vocab, n_ctx, model_name)


# --- the words of the text tasks' tests, and corpora that make each of them one token ------------

NAMES = ["Mary", "John", "Alice", "Bob", "Carol", "Dave", "Erin", "Frank"]
PLACES = ["store", "garden"]
OBJECTS = ["drink", "ring"]
NOUNS = ["war", "siege", "reign"]
VARIABLES = "data name file value test user key path output node item url model text size state root".split()
DESCRIPTION = "price control action cost issue process type age".split()


def ioi_corpus(names: Iterable[str] = NAMES) -> list[str]:
    return [f"Then, {n} and {n} went to the {p}. {n} gave a {o} to {n}" for n in names for p in PLACES for o in OBJECTS]


def greater_than_corpus(nouns: Iterable[str] = NOUNS) -> list[str]:
    years = " ".join(f"{c}{yy:02d}" for c in range(11, 18) for yy in range(100))
    return [f"The {noun} lasted from the year 1732 to 17" for noun in nouns] + [years]


def docstring_corpus() -> list[str]:
    words = " ".join(VARIABLES + DESCRIPTION)
    lines = "\n".join(VARIABLES + DESCRIPTION)  # each word also without a space before it
    return [f'\ndef {words}(self, {words}):\n    """{words}\n\n    :param {words}: {words}\n    :param', lines]
