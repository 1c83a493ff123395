"""Weight files load without running code from them: safetensors, or torch.load(weights_only=True)."""

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from acdc_engine import AcdcError
from acdc_engine.formats.weights import load_weights


class MakesADirectory:
    """A pickled object that, when unpickled without restriction, creates ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_safetensors_file_loads_its_tensors(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2])}
    save_file(state, tmp_path / "m.safetensors")
    loaded = load_weights(tmp_path / "m.safetensors")
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_torch_state_dict_loads_through_the_weights_only_unpickler(tmp_path, suffix):
    state = {"w": torch.randn(3, 2), "step": torch.tensor(7)}
    torch.save(state, tmp_path / f"m{suffix}")
    loaded = load_weights(tmp_path / f"m{suffix}")
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_pickled_object_is_refused_by_name_and_never_runs(tmp_path):
    marker = tmp_path / "was-run"
    torch.save({"w": torch.zeros(2), "payload": MakesADirectory(marker)}, tmp_path / "evil.pt")
    with pytest.raises(AcdcError, match=r"refusing to unpickle the object (posix|nt)\.mkdir in weight file .*evil\.pt"):
        load_weights(tmp_path / "evil.pt")
    assert not marker.exists()


def test_plain_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "was-run"
    with open(tmp_path / "evil.bin", "wb") as handle:
        pickle.dump(MakesADirectory(marker), handle)
    with pytest.raises(AcdcError, match=r"refusing to unpickle .*evil\.bin"):
        load_weights(tmp_path / "evil.bin")
    assert not marker.exists()


def test_unknown_file_kind_is_rejected_naming_the_kinds_read(tmp_path):
    (tmp_path / "m.npz").write_bytes(b"")
    with pytest.raises(AcdcError, match=r"unknown kind '\.npz'.*\.safetensors"):
        load_weights(tmp_path / "m.npz")


def test_missing_file_is_rejected_by_name(tmp_path):
    with pytest.raises(AcdcError, match=r"m\.safetensors not found"):
        load_weights(tmp_path / "m.safetensors")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_corrupt_file_is_rejected_by_name(tmp_path, suffix):
    (tmp_path / f"m{suffix}").write_bytes(b"\x07not a weight file")
    with pytest.raises(AcdcError, match=f"m\\{suffix}"):
        load_weights(tmp_path / f"m{suffix}")


@pytest.mark.parametrize(
    "content, complaint",
    [([torch.zeros(1)], "holds a list"), ({"w": 3}, "entry 'w' is a int"), ({"w": {"nested": torch.zeros(1)}}, "is a dict")],
)
def test_file_that_is_not_names_mapped_to_tensors_is_rejected(tmp_path, content, complaint):
    torch.save(content, tmp_path / "m.pt")
    with pytest.raises(AcdcError, match=complaint):
        load_weights(tmp_path / "m.pt")


def test_shipped_model_reads_its_weights_through_load_weights(monkeypatch):
    import acdc_engine.formats.weights
    from acdc_engine.models import load_model

    read = []

    def recording_load_weights(path, device="cpu"):
        read.append(path)
        return load_weights(path, device)

    monkeypatch.setattr(acdc_engine.formats.weights, "load_weights", recording_load_weights)
    load_model("toy-induction-2l")
    assert [p.name for p in read] == ["toy-induction-2l.safetensors"]
