"""Task ``mib``: the task datasets of MIB's circuit track (Mueller et al. 2025), read from a local copy.

``task.dataset`` names one of MIB's tasks as its scripts do (``--tasks``); ``task.path`` is a local
copy of its Hugging Face dataset (``HUB_IDS``) in any layout the ``datasets`` library writes or
reads: a folder written by ``DatasetDict.save_to_disk`` or ``Dataset.save_to_disk``; a folder of
data files (parquet, jsonl/json, csv, arrow) read as ``datasets.load_dataset(folder)`` reads it, a
downloaded snapshot of the hub repository included (its README's configs are honoured; for
``mcqa`` the ``4_answer_choices`` config is read, as MIB does, where the copy has several); or one
data file, read as ``task.split``. Nested fields are read as stored (``metadata.indirect_object``) or
from flat columns of that name (``Dataset.flatten()``, as a CSV export holds them).

What each dataset reads (MIB: ``MIB_circuit_track/dataset.py``, ``HFEAPDataset``). Every row gives
``prompt`` (the clean prompt) and a counterfactual column (``task.counterfactual``, default below)
holding the corrupted ``prompt``:

    dataset                  counterfactual             answer / wrong answer (text, first token)
    ioi                      s2_io_flip_counterfactual  " " + metadata.indirect_object / " " + metadata.subject
    mcqa, arc_easy,          symbol_counterfactual      choices.label[answerKey] /
      arc_challenge                                       <cf>.choices.label[<cf>.answerKey]
    arithmetic_addition,     random_counterfactual      label / <cf>.label
      arithmetic_subtraction

MIB's filters, applied to the whole split before the first ``task.num_examples`` rows are taken
(each answer text tokenized alone, without special tokens):

    ioi          " " + indirect_object, " " + subject and " " + metadata.random_c are equally many tokens
    mcqa, arc    the answer label and the counterfactual's answer label are equally many tokens
    arithmetic   operator is "+" (addition) / "-" (subtraction), the counterfactual and its prompt
                 exist, and label and the counterfactual's label are one token each

How many rows the filter dropped is printed (stderr) and recorded in the task's params.

Tokens: each prompt is the tokenizer's ids without special tokens after one BOS token, as MIB's
EAP-IG tokenizes (TransformerLens ``to_tokens(prepend_bos=True, padding_side="right")``): the
tokenizer's BOS, or its EOS where it has none (TransformerLens sets such a tokenizer's BOS to its
EOS; Qwen's). Prompts of any length are right-padded with ``tokens.padding_token`` and given their
lengths; the metric reads each clean prompt's last real token (``TaskData``). ``answers`` and
``wrong_answers`` are [n_prompts, 1]; the default metric is ``logit_diff``, MIB's for these tasks.

``task.control``: MIB's control answers: each distinct answer token is replaced by a token drawn
from [1000, vocab_size - 1000] (``tokenizer.vocab_size``) with Python's ``random`` seeded by the
example's index plus a running offset, distinct answers getting distinct tokens, as ``HFEAPDataset``
draws them when its examples are read once in order (as its data loader reads them).
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.task_data import TaskData, TaskSpec
from acdc_engine.core.values import bounds
from acdc_engine.tasks.tokens import pad_pair, padding_token, require_tokenizer

INSTALL_HINT = "pip install 'acdc-engine[mib]'"


class MibDataset(Enum):
    """MIB's circuit-track tasks, named as its ``run_attribution.py --tasks`` names them."""

    ioi = "ioi"
    mcqa = "mcqa"
    arithmetic_addition = "arithmetic_addition"
    arithmetic_subtraction = "arithmetic_subtraction"
    arc_easy = "arc_easy"
    arc_challenge = "arc_challenge"


HUB_IDS = {
    MibDataset.ioi: "mib-bench/ioi",
    MibDataset.mcqa: "mib-bench/copycolors_mcqa",
    MibDataset.arithmetic_addition: "mib-bench/arithmetic_addition",
    MibDataset.arithmetic_subtraction: "mib-bench/arithmetic_subtraction",
    MibDataset.arc_easy: "mib-bench/arc_easy",
    MibDataset.arc_challenge: "mib-bench/arc_challenge",
}
"""Where MIB reads each dataset from (``load_dataset`` of the hub id)."""

MCQA_CONFIG = "4_answer_choices"
"""The config (hub subset) of ``mib-bench/copycolors_mcqa`` that MIB reads."""

FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".arrow": "arrow"}
"""The ``datasets`` builder that reads a single data file, by suffix."""


@dataclass
class MibTaskConfig:
    name: str = "mib"
    dataset: MibDataset = MibDataset.ioi  # MIB's task: ioi, mcqa, arithmetic_addition, arithmetic_subtraction, arc_easy, arc_challenge
    path: Optional[str] = None  # the local copy of the dataset (a save_to_disk folder, a folder of data files, or one file)
    split: str = "train"  # MIB attributes on train, evaluates on validation (and the public test)
    counterfactual: Optional[str] = None  # the corrupted prompts' column; None: MIB's default for the dataset
    num_examples: Optional[int] = field(default=100, metadata=bounds(ge=1))  # the first n rows left by the filter; None: all
    control: bool = False  # MIB's control: answers replaced by random tokens


@dataclass(frozen=True)
class Example:
    """One row as MIB reads it: the prompts, the answer texts (the first token of each is the answer),
    and what MIB's filter asks of it: ``equal_length`` texts must tokenize to one length,
    ``one_token`` texts to one token each, and the row must be ``eligible``."""

    clean: str
    corrupted: str
    answer: str
    wrong_answer: str
    equal_length: tuple[str, ...] = ()
    one_token: tuple[str, ...] = ()
    eligible: bool = True


@dataclass(frozen=True)
class Kind:
    """How MIB reads one dataset: its default counterfactual column, the fields it reads (dotted
    paths; ``{cf}`` is the counterfactual column), ``example(row, cf, where) -> Example`` (``where``
    names the row in errors) and what its filter checks, in words."""

    counterfactual: str
    fields: tuple[str, ...]
    example: Callable[[dict, str, str], Example]
    filter: str


def _value(row: dict, path: str) -> Any:
    """The value at the dotted ``path`` of ``row``: its flat column of that name, else its nested
    fields; None where a field on the way is null."""
    if path in row:
        return row[path]
    head, _, rest = path.partition(".")
    value = row.get(head)
    if not rest:
        return value
    return _value(value, rest) if isinstance(value, dict) else None


def _text(row: dict, path: str, where: str) -> str:
    value = _value(row, path)
    if not isinstance(value, str):
        raise AcdcError(f"{where}: {path} must be text, got {value!r:.60} ({type(value).__name__})")
    return value


def _label(value: Any, path: str, where: str) -> str:
    """A label as MIB writes it for the tokenizer, ``str(value)``; AcdcError unless text or an integer
    (a CSV column with empty cells reads integers as floats: 3.0 would become the text "3.0")."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise AcdcError(f"{where}: {path} must be text or an integer, got {value!r:.60} ({type(value).__name__})")
    return str(value)


def _choice(row: dict, prefix: str, where: str) -> str:
    """The label of the correct choice: ``{prefix}choices.label[{prefix}answerKey]``."""
    labels, key = _value(row, f"{prefix}choices.label"), _value(row, f"{prefix}answerKey")
    if not isinstance(labels, list):
        raise AcdcError(
            f"{where}: {prefix}choices.label must be a list of labels, got {labels!r:.60} ({type(labels).__name__}); "
            "a CSV file cannot hold lists: use the parquet, jsonl or save_to_disk copy"
        )
    if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < len(labels):
        raise AcdcError(f"{where}: {prefix}answerKey must be an index into {prefix}choices.label ({len(labels)} labels), got {key!r:.60}")
    return _label(labels[key], f"{prefix}choices.label[{key}]", where)


def _ioi(row: dict, cf: str, where: str) -> Example:
    io, s, c = (" " + _text(row, f"metadata.{key}", where) for key in ("indirect_object", "subject", "random_c"))
    return Example(_text(row, "prompt", where), _text(row, f"{cf}.prompt", where), io, s, equal_length=(io, s, c))


def _multiple_choice(row: dict, cf: str, where: str) -> Example:
    answer, wrong = _choice(row, "", where), _choice(row, f"{cf}.", where)
    return Example(_text(row, "prompt", where), _text(row, f"{cf}.prompt", where), answer, wrong, equal_length=(answer, wrong))


def _arithmetic(operator: str) -> Callable[[dict, str, str], Example]:
    def example(row: dict, cf: str, where: str) -> Example:
        if _value(row, f"{cf}.prompt") is None or _value(row, "operator") != operator:
            return Example("", "", "", "", eligible=False)
        answer, wrong = _label(_value(row, "label"), "label", where), _label(_value(row, f"{cf}.label"), f"{cf}.label", where)
        return Example(_text(row, "prompt", where), _text(row, f"{cf}.prompt", where), answer, wrong, one_token=(answer, wrong))

    return example


_CHOICE_FIELDS = ("prompt", "choices.label", "answerKey", "{cf}.prompt", "{cf}.choices.label", "{cf}.answerKey")
_CHOICE_FILTER = "the answer label and the counterfactual's answer label tokenize to one length"
_ARITHMETIC_FIELDS = ("prompt", "label", "operator", "{cf}.prompt", "{cf}.label")
_ARITHMETIC_FILTER = "operator '{}', a counterfactual prompt, label and counterfactual label one token each"

KINDS: dict[MibDataset, Kind] = {
    MibDataset.ioi: Kind(
        "s2_io_flip_counterfactual",
        ("prompt", "metadata.indirect_object", "metadata.subject", "metadata.random_c", "{cf}.prompt"),
        _ioi, "' ' + indirect_object, ' ' + subject and ' ' + random_c tokenize to one length",
    ),
    MibDataset.mcqa: Kind("symbol_counterfactual", _CHOICE_FIELDS, _multiple_choice, _CHOICE_FILTER),
    MibDataset.arc_easy: Kind("symbol_counterfactual", _CHOICE_FIELDS, _multiple_choice, _CHOICE_FILTER),
    MibDataset.arc_challenge: Kind("symbol_counterfactual", _CHOICE_FIELDS, _multiple_choice, _CHOICE_FILTER),
    MibDataset.arithmetic_addition: Kind("random_counterfactual", _ARITHMETIC_FIELDS, _arithmetic("+"), _ARITHMETIC_FILTER.format("+")),
    MibDataset.arithmetic_subtraction: Kind("random_counterfactual", _ARITHMETIC_FIELDS, _arithmetic("-"), _ARITHMETIC_FILTER.format("-")),
}
"""What MIB's ``HFEAPDataset`` reads of each dataset."""


# --- reading the local copy ---------------------------------------------------------------------


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise AcdcError(
            f"task mib reads MIB's datasets with the Hugging Face 'datasets' library, which is not installed: {INSTALL_HINT}"
        ) from None
    return datasets


def read_split(path: str, split: str, config: str | None = None) -> Any:
    """The rows of ``split`` in the local copy at ``path`` (see the module docstring), as a
    ``datasets.Dataset``; ``config``: the config to read where a folder of data files names several
    and this one among them. AcdcError when the path does not exist, cannot be read as a dataset, or
    lacks the split."""
    datasets = _import_datasets()
    where = Path(path).expanduser()
    if not where.exists():
        raise AcdcError(f"task.path '{path}' does not exist; give the local copy of the dataset (a folder or a data file)")
    if where.is_file() and where.suffix.lower() not in FILE_BUILDERS:
        raise AcdcError(f"task.path '{path}' is not a data file datasets reads ({', '.join(FILE_BUILDERS)}) nor a folder")
    try:
        if (where / "dataset_dict.json").is_file() or (where / "state.json").is_file():
            loaded = datasets.load_from_disk(str(where))
        elif where.is_dir():
            named = config is not None and config in datasets.get_dataset_config_names(str(where))
            loaded = datasets.load_dataset(str(where), config if named else None)
        else:
            loaded = datasets.load_dataset(FILE_BUILDERS[where.suffix.lower()], data_files={split: str(where)})
    except (ValueError, OSError, datasets.exceptions.DatasetsError) as error:
        raise AcdcError(f"task.path '{path}' cannot be read as a dataset: {' '.join(str(error).split())}") from None
    if not isinstance(loaded, dict):  # one Dataset (save_to_disk of a single split)
        if loaded.split is not None and str(loaded.split) != split:
            raise AcdcError(f"task.split '{split}' is not in task.path '{path}', which holds the split '{loaded.split}' alone")
        return loaded
    if split not in loaded:
        raise AcdcError(f"task.split '{split}' is not in task.path '{path}'; its splits: {', '.join(loaded)}")
    return loaded[split]


def _has_field(features: Any, path: str) -> bool:
    """Whether ``features`` (a dataset's, or a struct's) hold the dotted ``path``, flat or nested."""
    if path in features:
        return True
    head, _, rest = path.partition(".")
    inner = features.get(head)
    return bool(rest) and isinstance(inner, dict) and _has_field(inner, rest)


def _rows(table: Any, kind: Kind, cf: str, dataset: MibDataset, source: str) -> list[dict]:
    """The fields ``kind`` reads of each row of ``table``; AcdcError naming a missing counterfactual
    column or field."""
    features = table.features
    if not _has_field(features, f"{cf}.prompt"):
        offered = sorted({name.split(".")[0] for name in features if name.split(".")[0].endswith("_counterfactual")})
        raise AcdcError(
            f"{source} has no counterfactual column '{cf}' (with a prompt); its counterfactual columns: "
            f"{', '.join(offered) or 'none'} (task.counterfactual)"
        )
    paths = [p.format(cf=cf) for p in kind.fields]
    missing = [p for p in paths if not _has_field(features, p)]
    if missing:
        raise AcdcError(
            f"{source} has no field {', '.join(missing)}, which MIB's {dataset.value} reads; its columns: {', '.join(features)}"
        )
    columns = dict.fromkeys(p if p in features else p.split(".")[0] for p in paths)
    return table.select_columns(list(columns)).to_list()


# --- tokens -----------------------------------------------------------------------------------


def _encode(tokenizer: Any, texts: list[str]) -> dict[str, list[int]]:
    """Each distinct text's token ids, without special tokens (tokenized in one batch)."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return {}
    return {text: [int(i) for i in ids] for text, ids in zip(unique, tokenizer(unique, add_special_tokens=False)["input_ids"])}


def passes_filter(tokenizer: Any, examples: list[Example]) -> list[bool]:
    """Whether MIB's filter keeps each example (``Example``) under ``tokenizer``."""
    ids = _encode(tokenizer, [t for e in examples if e.eligible for t in (*e.equal_length, *e.one_token)])
    return [
        e.eligible and len({len(ids[t]) for t in e.equal_length}) <= 1 and all(len(ids[t]) == 1 for t in e.one_token)
        for e in examples
    ]


def answer_tokens(tokenizer: Any, examples: list[Example]) -> list[tuple[int, int]]:
    """(answer, wrong answer) per example: the first token of each answer text, as MIB takes it."""
    ids = _encode(tokenizer, [t for e in examples for t in (e.answer, e.wrong_answer)])
    empty = [text for text, tokens in ids.items() if not tokens]
    if empty:
        raise AcdcError(f"task mib: the answer text {empty[0]!r} tokenizes to no tokens")
    return [(ids[e.answer][0], ids[e.wrong_answer][0]) for e in examples]


def bos_token(tokenizer: Any) -> int:
    """The token MIB's prompts start with (TransformerLens ``to_tokens(prepend_bos=True)``): the
    tokenizer's BOS token, else its EOS token (TransformerLens makes a tokenizer's EOS its BOS where
    it has none)."""
    for name in ("bos_token_id", "eos_token_id"):
        token = getattr(tokenizer, name, None)
        if isinstance(token, int):
            return token
    raise AcdcError("task mib puts a BOS token before every prompt, as MIB does, and this tokenizer has neither a BOS nor an EOS token")


def control_answers(answers: list[tuple[int, int]], vocab_size: int) -> list[tuple[int, int]]:
    """MIB's control answers for ``answers`` (per example, in order): each distinct token mapped to a
    distinct random token in [1000, vocab_size - 1000], drawn as ``HFEAPDataset`` draws them when its
    examples are read once in order (see the module docstring)."""
    low, high = 1000, vocab_size - 1000
    if high - low + 1 < len({t for pair in answers for t in pair}):
        raise AcdcError(
            f"task.control draws answers from token ids [1000, vocab_size - 1000] as MIB does; a vocabulary of "
            f"{vocab_size} has too few for {len({t for pair in answers for t in pair})} distinct answers"
        )
    rng, mapping, offset, out = random.Random(), {}, 0, []
    for index, pair in enumerate(answers):
        mapped = []
        for token, step in zip(pair, (0, 1)):  # the wrong answer moves the seed offset on by one
            offset += step
            rng.seed(index + offset)
            if token not in mapping:
                drawn, taken = rng.randint(low, high), set(mapping.values())
                while drawn in taken:
                    offset += 1
                    rng.seed(index + offset)
                    drawn = rng.randint(low, high)
                mapping[token] = drawn
            mapped.append(mapping[token])
        out.append((mapped[0], mapped[1]))
    return out


# --- the task -------------------------------------------------------------------------------


def _dataset(value: Any) -> MibDataset:
    try:
        return MibDataset(value)
    except ValueError:
        raise AcdcError(f"task.dataset must be one of MIB's tasks {', '.join(d.value for d in MibDataset)}, got {value!r:.60}") from None


def _report(dataset: MibDataset, source: str, n_rows: int, n_kept: int, num_examples: int | None) -> None:
    """One line on stderr: the rows read, how many MIB's filter dropped, how many are used."""
    line = f"task mib ({dataset.value}): {source}: {n_rows} rows; MIB's filter ({KINDS[dataset].filter}) dropped {n_rows - n_kept}"
    if num_examples and num_examples > n_kept:
        line += f"; task.num_examples={num_examples} is more than the {n_kept} rows left: using all {n_kept}"
    else:
        line += f"; using the first {num_examples}" if num_examples else f"; using all {n_kept}"
    print(line, file=sys.stderr)


def make_mib_task(
    model: Any, dataset: Any = "ioi", path: str | None = None, split: str = "train", counterfactual: str | None = None,
    num_examples: int | None = 100, control: bool = False,
) -> TaskData:
    """MIB's ``dataset`` (a ``MibDataset`` or its name) read from the local copy at ``path``, its
    ``split`` filtered as MIB filters it for ``model.tokenizer``, its first ``num_examples`` rows
    (None: all), the corrupted prompts from the ``counterfactual`` column (None: MIB's default);
    see the module docstring. AcdcError naming the problem when the copy, split, column or a row
    cannot be read as MIB reads it, or the filter keeps no row."""
    dataset = _dataset(dataset)
    kind = KINDS[dataset]
    if path is None:
        raise AcdcError(
            f"task mib needs task.path: a local copy of MIB's {dataset.value} dataset ({HUB_IDS[dataset]} on the "
            "Hugging Face hub), a save_to_disk folder, a folder of data files or one data file"
        )
    tokenizer = require_tokenizer(model, "mib")
    cf = counterfactual or kind.counterfactual
    source = f"split '{split}' of {path}"
    table = read_split(path, split, MCQA_CONFIG if dataset is MibDataset.mcqa else None)
    examples = [kind.example(row, cf, f"{source}, row {i}") for i, row in enumerate(_rows(table, kind, cf, dataset, source))]
    kept = [e for e, keep in zip(examples, passes_filter(tokenizer, examples)) if keep]
    if not kept:
        raise AcdcError(f"task mib: MIB's filter ({kind.filter}) keeps none of the {len(examples)} rows of {source} with this tokenizer")
    used = kept[:num_examples] if num_examples else kept
    _report(dataset, source, len(examples), len(kept), num_examples)
    answers = answer_tokens(tokenizer, used)
    if control:
        answers = control_answers(answers, int(tokenizer.vocab_size))
    bos = [bos_token(tokenizer)]
    clean, corrupted = (tokenizer([getattr(e, key) for e in used], add_special_tokens=False)["input_ids"] for key in ("clean", "corrupted"))
    pair = pad_pair([bos + list(ids) for ids in clean], [bos + list(ids) for ids in corrupted], padding_token(tokenizer))
    return TaskData(
        name="mib",
        **pair.fields,
        answers=torch.tensor([[a] for a, _ in answers]),
        wrong_answers=torch.tensor([[w] for _, w in answers]),
        params={
            "dataset": dataset.value, "path": str(path), "split": split, "counterfactual": cf, "num_examples": num_examples,
            "control": control, "n_rows": len(examples), "n_filtered_out": len(examples) - len(kept), "n_examples": len(used),
        },
        default_metric="logit_diff",
    )


def build(model: Any, **params: Any) -> TaskData:
    return make_mib_task(model, **params)


SPEC = TaskSpec(name="mib", config=MibTaskConfig, build=build)
