"""Task ``jsonl``: your own prompts, from a JSON-lines file (``task.path``) or inline (``task.records``).

One record per prompt pair, one JSON object per line (blank lines are skipped)::

    {"clean": "When Mary and John went to the store, John gave a drink to",
     "corrupted": "When Alice and Bob went to the store, Carol gave a drink to",
     "answer": " Mary", "wrong_answer": " John"}
    {"clean": [0, 17, 4, 9, 17], "corrupted": [0, 22, 8, 31, 40], "answer": 4, "wrong_answer": 8}

Fields:
  clean, corrupted (required): a prompt, as text or as a list of token ids (used as given). Text is
      tokenized with the model's tokenizer without its special tokens, and ``tokenizer.bos_token_id``
      is put first when ``task.prepend_bos`` (the default): GPT-2, Pythia and OLMo-2 get
      ``<|endoftext|>``, and tokenizers that add a BOS themselves (Llama, Mistral, Gemma) get exactly
      their own encoding, BOS included. A tokenizer without a BOS token (Qwen's) is refused while
      ``task.prepend_bos`` is true: set ``task.prepend_bos=false``.
  answer, wrong_answer (optional): the token a correct model predicts after the clean prompt, and
      the competing one; text that tokenizes on its own (no special tokens) to exactly one token, or
      a token id. Write a word with its leading space, " Mary": byte-level BPE (GPT-2, Pythia, Qwen,
      Llama 3, OLMo-2) writes it "ĠMary" and SentencePiece-style BPE (Llama 2, Mistral, Gemma)
      "▁Mary", the token that follows "... to" in both. Either every record gives a field or none does.

Prompts may have any number of tokens, and the two prompts of a record may differ. They are
right-padded to the longest prompt of the dataset (with ``tasks.tokens.padding_token``: the
tokenizer's pad token, else its EOS token, else 0) and aligned by index, as EAP-IG and MIB batch
them: each position of a clean prompt is patched from the same position of its corrupted prompt
(where that prompt is shorter, from its padding, run as tokens). The metric reads each clean
prompt's last real token; mean ablation averages real tokens only (``TaskData``).
The default metric is ``logit_diff`` when every record gives both answers, else ``kl``.

Each line is read as strict JSON, as the circuit files are (``acdc_engine.formats.strict_json``: no key
twice in one record, no NaN or Infinity). Validation is all or nothing: every bad record (not
strict JSON, missing or unknown field, text without a tokenizer, a token outside the vocabulary or
unknown to the tokenizer, a multi-token answer) is
collected, and one AcdcError lists them all by line (file) or by index (``task.records[i]``); no
record is ever dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from acdc_engine.core.errors import AcdcError
from acdc_engine.formats.strict_json import JsonProblem, strict_loads
from acdc_engine.core.task_data import TaskData, TaskSpec
from acdc_engine.tasks.tokens import bos_prefix, pad_pair, padding_token, unknown_token_id

FIELDS = ("clean", "corrupted", "answer", "wrong_answer")
PROMPTS = ("clean", "corrupted")
ANSWERS = ("answer", "wrong_answer")


@dataclass
class JsonlTaskConfig:
    name: str = "jsonl"
    path: Optional[str] = None  # a JSON-lines file, one record per line ...
    records: Optional[list[Any]] = None  # ... or the records themselves, inline
    prepend_bos: bool = True  # text prompts only: put the tokenizer's BOS token first


@dataclass
class _Record:
    """One record's tokens; ``answer``/``wrong_answer`` None when the record does not give them."""

    where: str
    clean: list[int]
    corrupted: list[int]
    answer: int | None
    wrong_answer: int | None


def make_jsonl_task(
    model: Any, path: str | None = None, records: list[Any] | None = None, prepend_bos: bool = True
) -> TaskData:
    """The task held in the JSON-lines file ``path`` or in ``records`` (a list of dicts), tokenized
    for ``model``: its ``cfg.d_vocab`` bounds token ids and its ``tokenizer`` (a Hugging Face
    tokenizer, or None) reads text; nothing else of the model is used. AcdcError listing every bad
    record when any is bad (see the module docstring)."""
    if (path is None) == (records is None):
        raise AcdcError(
            "task jsonl needs exactly one of task.path=FILE (a JSON-lines file) and task.records "
            "(a list of records written in the task's YAML)"
        )
    if path is not None:
        source, raw = str(path), _read_lines(path)
    else:
        if not isinstance(records, list):
            raise AcdcError(f"task.records must be a list of records, got {type(records).__name__}")
        source, raw = "task.records", [(f"task.records[{i}]", record, None) for i, record in enumerate(records)]
    if not raw:
        raise AcdcError(f"{source}: no records")

    tokenizer = _Tokenizer(model, prepend_bos)
    good: list[_Record] = []
    problems: dict[str, list[str]] = {}  # where -> what is wrong, in record order
    for where, record, parse_error in raw:
        errors = [parse_error] if parse_error else []
        parsed = None if errors else _parse(where, record, tokenizer, errors)
        if errors:
            problems[where] = errors
        else:
            good.append(parsed)
    problems.update(_consistency_problems(good))
    if problems:
        order = {where: i for i, (where, _, _) in enumerate(raw)}
        listed = "\n  ".join(f"{where}: {'; '.join(problems[where])}" for where in sorted(problems, key=order.get))
        raise AcdcError(
            f"{source}: {len(problems)} of {len(raw)} records are invalid (the task was not built; fix or "
            f"remove them):\n  {listed}"
        )

    given = {key: all(getattr(r, key) is not None for r in good) for key in ANSWERS}
    pair = pad_pair([r.clean for r in good], [r.corrupted for r in good], padding_token(tokenizer.tokenizer))
    return TaskData(
        name="jsonl",
        **pair.fields,
        answers=torch.tensor([[r.answer] for r in good]) if given["answer"] else None,
        wrong_answers=torch.tensor([[r.wrong_answer] for r in good]) if given["wrong_answer"] else None,
        params={"path": str(path) if path is not None else None, "n_records": len(good), "prepend_bos": prepend_bos},
        default_metric="logit_diff" if all(given.values()) else "kl",
    )


def _read_lines(path: str) -> list[tuple[str, Any, str | None]]:
    """(``line N``, parsed record or None, parse error or None) for each non-blank line."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise AcdcError(f"task.path '{path}' is not a file (expected JSON lines: one record per line)")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AcdcError(f"task.path '{path}' cannot be read as UTF-8 text: {error}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"line {number}", strict_loads(line), None))
        except JsonProblem as error:
            where = "" if error.column is None else f", column {error.column}"
            rows.append((f"line {number}", None, f"{error.problem}{where}"))
    return rows


class _Tokenizer:
    """Turns record fields into token ids for one model; appends to ``errors`` instead of raising."""

    def __init__(self, model: Any, prepend_bos: bool) -> None:
        self.d_vocab = model.cfg.d_vocab
        self.prepend_bos = prepend_bos
        self.tokenizer = getattr(model, "tokenizer", None)
        self.unk_id = unknown_token_id(self.tokenizer)

    def prompt(self, value: Any, field: str, errors: list[str]) -> list[int] | None:
        if isinstance(value, str):
            ids = self._text(value, field, self.prepend_bos, errors)
        elif isinstance(value, list):
            ids = self._ids(value, field, errors)
        else:
            errors.append(f"{field} must be text or a list of token ids, got {type(value).__name__}")
            return None
        if ids is not None and not ids:
            errors.append(f"{field} has no tokens")
            return None
        return ids

    def answer(self, value: Any, field: str, errors: list[str]) -> int | None:
        if isinstance(value, str):
            ids = self._text(value, field, False, errors)
            if ids is not None and len(ids) != 1:
                errors.append(f"{field} {value!r} is {len(ids)} tokens {ids}; it must be exactly one token")
                return None
        elif isinstance(value, int) and not isinstance(value, bool):
            ids = self._ids([value], field, errors)
        else:
            errors.append(f"{field} must be one token: text or a token id, got {type(value).__name__}")
            return None
        return ids[0] if ids else None

    def _text(self, text: str, field: str, prepend_bos: bool, errors: list[str]) -> list[int] | None:
        if self.tokenizer is None:
            errors.append(f"{field} is text but the model has no tokenizer; give token ids (a list of integers)")
            return None
        ids = [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]
        if self.unk_id is not None and self.unk_id in ids:
            errors.append(f"{field} {text!r} holds words the tokenizer does not know (they became its unknown token)")
            return None
        return bos_prefix(self.tokenizer, prepend_bos, "jsonl") + ids

    def _ids(self, values: list[Any], field: str, errors: list[str]) -> list[int] | None:
        bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < self.d_vocab]
        if bad:
            errors.append(f"{field} holds {bad[:5]}, not token ids of this model (integers in [0, {self.d_vocab}))")
            return None
        return list(values)


def _parse(where: str, record: Any, tokenizer: _Tokenizer, errors: list[str]) -> _Record | None:
    if not isinstance(record, dict):
        errors.append(f"a record must be an object with fields {', '.join(FIELDS)}; got {type(record).__name__}")
        return None
    unknown = sorted(set(map(str, record)) - set(FIELDS))
    if unknown:
        errors.append(f"unknown field(s) {', '.join(unknown)} (fields: {', '.join(FIELDS)})")
    missing = [key for key in PROMPTS if key not in record]
    if missing:
        errors.append(f"missing field(s) {', '.join(missing)}")
    prompts = {key: tokenizer.prompt(record[key], key, errors) for key in PROMPTS if key in record}
    answers = {key: tokenizer.answer(record[key], key, errors) if key in record else None for key in ANSWERS}
    if errors:
        return None
    return _Record(where, prompts["clean"], prompts["corrupted"], answers["answer"], answers["wrong_answer"])


def _consistency_problems(records: list[_Record]) -> dict[str, list[str]]:
    """Problems between records, by record: an answer field that other records give and this one
    does not."""
    problems: dict[str, list[str]] = {}
    n_given = {key: sum(getattr(r, key) is not None for r in records) for key in ANSWERS}
    for record in records:
        errors = []
        for key in ANSWERS:
            if getattr(record, key) is None and n_given[key]:
                errors.append(f"missing field {key} ({n_given[key]} other records give one; give it in all or none)")
        if errors:
            problems[record.where] = errors
    return problems


def build(model: Any, **params: Any) -> TaskData:
    return make_jsonl_task(model, **params)


SPEC = TaskSpec(name="jsonl", config=JsonlTaskConfig, build=build)
