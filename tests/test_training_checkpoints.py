"""Checkpoints as training frameworks write them (mm_checkpoints.py), read as data and installed.

The official PAL4VST `.pth` files come from mmcv 1.x's save-best hook (numpy scalars under numpy 1's
names, AdamW state); users' own fine-tunes from mmengine (message hub objects, schedulers).
`torch.load(weights_only=True)` refuses both; `torch_pickle` reads them, and nothing else.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from mm_checkpoints import _renaming_pickle_module, pickle_globals, save_mmcv1_checkpoint, save_mmengine_checkpoint
from model_host import ModelHost, Served
from pal_core.cli import main
from pal_core.hub import catalogue, loading, model_store
from pal_core.hub.checkpoint import CheckpointError
from pal_core.hub.download import download_model
from pal_core.hub.loading import load_detector, read_checkpoint
from pal_core.hub.torch_pickle import Bookkeeping, PickleReadError, read_torch_checkpoint
from test_mmseg_fidelity import FIXTURES, TOLERANCE, load_fixture

NAME = "pal4vst-unified"
TINY_W12 = {"embed_dim": 16, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8], "window_size": 12,
            "head_channels": 32}
MMCV1_GLOBALS = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage",
                 "torch.LongStorage", "_codecs.encode", "numpy.core.multiarray.scalar", "numpy.dtype"}


@pytest.fixture(scope="module")
def fixture_weights():
    checkpoint, _, _ = load_fixture("swin_w12")
    return checkpoint["state_dict"]


@pytest.fixture(scope="module")
def mmcv1_file(tmp_path_factory, fixture_weights):
    return save_mmcv1_checkpoint(fixture_weights, tmp_path_factory.mktemp("mmcv1") / "best_mIoU_iter_7200.pth")


@pytest.fixture(scope="module")
def mmengine_file(tmp_path_factory, fixture_weights):
    return save_mmengine_checkpoint(fixture_weights, tmp_path_factory.mktemp("mmengine") / "iter_4800.pth")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(model_store.HOME_ENV, str(tmp_path / "home"))
    monkeypatch.setattr(loading, "_said", set())
    path = tmp_path / "catalogue.json"  # the tiny fixture network stands in for PAL4VST's shape
    path.write_text(json.dumps({NAME: {"architecture": TINY_W12}}))
    monkeypatch.setenv(catalogue.CATALOGUE_ENV, str(path))
    return tmp_path / "home" / "models"


def test_the_mmcv1_fixture_has_the_structure_of_the_official_files(mmcv1_file, fixture_weights):
    assert pickle_globals(mmcv1_file) == MMCV1_GLOBALS
    with pytest.raises(Exception, match="numpy.core.multiarray.scalar"):
        torch.load(mmcv1_file, weights_only=True)  # what failed before: torch's allow-list
    loaded = read_torch_checkpoint(mmcv1_file)
    assert list(loaded) == ["meta", "state_dict", "optimizer"]
    assert set(loaded["meta"]) == {"env_info", "seed", "exp_name", "mmseg_version", "config", "CLASSES", "PALETTE",
                                   "hook_msgs", "epoch", "iter", "mmcv_version", "time"}
    best = loaded["meta"]["hook_msgs"]["best_score"]
    assert type(best) is np.float64 and best == np.float64(0.6184)
    assert loaded["meta"]["CLASSES"] == ("background", "artifact") and loaded["meta"]["iter"] == 7200
    assert isinstance(loaded["state_dict"], OrderedDict) and list(loaded["state_dict"]) == list(fixture_weights)
    assert all(torch.equal(loaded["state_dict"][k], v) for k, v in fixture_weights.items())
    moments = loaded["optimizer"]["state"][0]
    assert set(moments) == {"step", "exp_avg", "exp_avg_sq"} and moments["step"].item() == 7200.0
    assert os.path.getsize(mmcv1_file) > 2.2 * sum(v.nbytes for v in fixture_weights.values())


def test_the_mmengine_fixture_reads_with_inert_stand_ins(mmengine_file, fixture_weights):
    names = pickle_globals(mmengine_file)
    assert {"mmengine.logging.history_buffer.HistoryBuffer", "numpy._core.multiarray._reconstruct",
            "numpy._core.multiarray.scalar"} <= names
    loaded = read_torch_checkpoint(mmengine_file)
    assert set(loaded) == {"meta", "state_dict", "message_hub", "optimizer", "param_schedulers"}
    loss = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(loss, Bookkeeping) and loss.qualified_name == "mmengine.logging.history_buffer.HistoryBuffer"
    assert set(loss.state) == {"max_length", "_log_history", "_count_history", "_statistics_methods"}
    assert loaded["message_hub"]["best_score"] == np.float64(0.5912)
    assert all(torch.equal(loaded["state_dict"][k], v) for k, v in fixture_weights.items())


@pytest.mark.parametrize("config", ["swin_w12", "swin_w7"])
@pytest.mark.parametrize("maker", [save_mmcv1_checkpoint, save_mmengine_checkpoint])
def test_training_checkpoints_give_mmsegs_probabilities(maker, config, tmp_path):
    """The converted network of either container computes mmseg's probabilities (fidelity fixture cases)."""
    checkpoint, cases, tensors = load_fixture(config)
    path = maker(checkpoint["state_dict"], tmp_path / "checkpoint.pth", config_text=checkpoint["meta"]["cfg"])
    detector = load_detector(path, device="cpu", dtype="fp32", input_size=None)
    assert detector.info.format == "mmseg"
    compared = 0
    for case in cases:
        if f"{case}.logits" in tensors:
            image = tensors[f"{case}.image"].float() / 255.0
            expected = torch.softmax(tensors[f"{case}.logits"], dim=1)[0, 1]
            assert (detector.predict(image[None])[0] - expected).abs().max() <= TOLERANCE
            compared += 1
    assert compared >= 1


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_models_add_installs_an_mmcv1_save_best_file_as_the_default(home, mmcv1_file, capsys):
    code, out, err = run_cli(capsys, "models", "add", mmcv1_file, "--name", NAME)
    assert code == 0, err
    assert "installed pal4vst-unified" in out and "now the default model" in out
    detector = load_detector(device="cpu", dtype="fp32")
    assert detector.name == NAME and detector.info.source == str(home / "pal4vst-unified.safetensors")
    reference = load_detector(FIXTURES / "swin_w12.pth", device="cpu", dtype="fp32")
    images = torch.rand(1, 40, 56, 3)
    assert (detector.predict(images) - reference.predict(images)).abs().max() <= 1e-6


def test_download_installs_an_mmengine_file(home, mmengine_file):
    host = ModelHost()
    try:
        host.files["/u.pth"] = Served(mmengine_file.read_bytes())
        overrides = json.loads(Path(os.environ[catalogue.CATALOGUE_ENV]).read_text())
        overrides[NAME]["url"] = host.url("/u.pth")
        Path(os.environ[catalogue.CATALOGUE_ENV]).write_text(json.dumps(overrides))
        path = download_model(NAME, show_progress=False)
    finally:
        host.close()
    assert model_store.verify(path).ok and load_detector(device="cpu").name == NAME


class _RunsCode:
    def __reduce__(self):
        return os.system, ("touch /tmp/pal-test-should-not-exist",)


def _hostile_copy(tmp_path: Path, fixture_weights, payload, renames=None) -> Path:
    path = tmp_path / "hostile.pth"
    checkpoint = {"meta": {"note": payload}, "state_dict": OrderedDict(fixture_weights)}
    torch.save(checkpoint, path, pickle_module=_renaming_pickle_module(renames or {}), pickle_protocol=2)
    return path


def test_a_global_that_runs_code_is_refused_by_name(tmp_path, fixture_weights):
    marker = Path("/tmp/pal-test-should-not-exist")
    marker.unlink(missing_ok=True)
    path = _hostile_copy(tmp_path, fixture_weights, _RunsCode())
    qualified = f"{os.system.__module__}.system"
    with pytest.raises(CheckpointError, match=f"holds '{qualified}', which is not data.*nothing was run"):
        read_checkpoint(path)
    assert not marker.exists()
    # A name in an mm* package is a stand-in, whatever it claims to be: its code is never imported.
    spoofed = _hostile_copy(tmp_path, fixture_weights, _RunsCode(),
                            {f"{os.system.__module__}\nsystem\n".encode(): b"mmengine.utils\nsystem\n"})
    assert isinstance(read_torch_checkpoint(spoofed)["meta"]["note"], Bookkeeping) and not marker.exists()


def test_other_builtins_are_not_data(tmp_path, fixture_weights):
    with pytest.raises(PickleReadError, match="holds '__builtin__.bytearray', which is not data"):
        read_torch_checkpoint(_hostile_copy(tmp_path, fixture_weights, bytearray(b"abc")))


def test_numpy_arrays_are_held_as_stand_ins_never_built(tmp_path, fixture_weights):
    payload = [np.array([{"a": 1}], dtype=object), np.arange(3.0)]  # object arrays could hold anything
    loaded = read_torch_checkpoint(_hostile_copy(tmp_path, fixture_weights, payload))
    assert all(isinstance(a, Bookkeeping) and a.qualified_name == "numpy.ndarray" for a in loaded["meta"]["note"])


def test_an_object_dtype_scalar_is_refused(tmp_path, fixture_weights):
    """numpy's scalar(dtype('O'), x) would hand back any object: only plain numeric and text kinds are built."""
    class ObjectScalar:
        def __reduce__(self):
            return np._core.multiarray.scalar, (np.dtype("O"), b"\0" * 8)

    with pytest.raises(PickleReadError, match="dtype 'O8', which is not plain data"):
        read_torch_checkpoint(_hostile_copy(tmp_path, fixture_weights, ObjectScalar()))


def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path, fixture_weights):
    import zipfile

    path = _hostile_copy(tmp_path, fixture_weights, torch.arange(4.0))  # meta comes first: its shape (4,) too
    damaged = tmp_path / "damaged.pth"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(damaged, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            body = source.read(info)
            if info.filename.endswith("data.pkl"):  # shape (4,) -> (400,): BININT1 4, TUPLE1 -> BININT2 400
                assert b"K\x04\x85" in body
                body = body.replace(b"K\x04\x85", b"M\x90\x01\x85", 1)
            target.writestr(info, body)
    with pytest.raises(PickleReadError, match="reaches past its storage"):
        read_torch_checkpoint(damaged)
