"""The README's MIB guide, end to end on a local model and a local MIB-schema dataset: task ``mib``
reads the dataset, ``acdc-mib`` writes the submission folder, ``acdc-evaluate submission=`` prints
its CPR and CMD."""

import re

import pytest
from console_scripts import run_script
from offline_tokenizers import family_tokenizer
from test_mib_datasets import CORPUS, IOI_TRAIN, IOI_VALIDATION, save_splits

pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A tiny random GPT-2 with a byte-level BPE tokenizer over the rows' words (save_pretrained)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("gpt2")
    tokenizer = family_tokenizer("gpt2", CORPUS)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, initializer_range=0.3)
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ioi_data(tmp_path_factory):
    return save_splits(tmp_path_factory.mktemp("data") / "ioi", train=IOI_TRAIN, validation=IOI_VALIDATION)


def test_the_mib_guide_runs_from_data_to_cpr_and_cmd(gpt2_folder, ioi_data, tmp_path):
    submitted = run_script(
        "acdc-mib", "--model", "local", "--model-path", str(gpt2_folder), "--model-key", "gpt2",
        "--task", "mib", "--task-param", "dataset=ioi", "--task-param", f"path={ioi_data}",
        "--method", "eap-ig", "--out", "mib", "--no-progress", cwd=tmp_path,
    )
    assert submitted.returncode == 0, submitted.stderr
    folder = tmp_path / "mib" / "ioi_gpt2"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"circuit_{k}.json" for k in ("0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5")
    )
    assert (tmp_path / "mib" / "ioi_gpt2.md").is_file()

    scored = run_script(
        "acdc-evaluate", f"submission={folder}", "model=local", f"model.path={gpt2_folder}", "task=mib",
        "task.dataset=ioi", f"task.path={ioi_data}", "task.split=validation", "task.num_examples=null",
        "progress=false", cwd=tmp_path,
    )
    assert scored.returncode == 0, scored.stderr
    row = re.search(r"\| (\S+) \| (-?[\d.]+) \(circuits\) \| (-?[\d.]+) \(circuits\) \|", scored.stdout)
    assert row is not None, scored.stdout
    assert 0 <= float(row.group(3))
