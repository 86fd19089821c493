"""Run folders written before the restructuring (tests/fixtures/, made by commit 292d1d1; its
README says how) still load, resume bit for bit and evaluate to the same numbers."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from vaelab import cli
from vaelab.files import read_tensors

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_fixture_is_unchanged():
    for name, digest in EXPECTED["fixture_files_sha256"].items():
        assert _sha(FIXTURES / name) == digest, name


@pytest.fixture
def old(tmp_path):
    """(cache, runs folder) with copies of the fixture's data set and run folders."""
    cache = tmp_path / "cache"
    (cache / "datasets").mkdir(parents=True)
    shutil.copy(FIXTURES / "tiny8.npz", cache / "datasets" / "tiny8.npz")
    shutil.copytree(FIXTURES / "runs", tmp_path / "runs")
    return cache, tmp_path / "runs"


def _tensor_digests(path: Path) -> dict:
    tensors = read_tensors(path)[0]
    return {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape),
                "sha256": hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()}
            for k, v in tensors.items()}  # fmt: skip


@pytest.mark.parametrize("name", ["vae_tiny", "ae_tiny"])
def test_an_old_run_resumes_bit_for_bit(old, name, capsys):
    cache, runs = old
    run = runs / name
    expected = EXPECTED["runs"][name]["resume_to_epoch_3"]
    args = ["train", "--resume", str(run), "--set", "train.epochs=3", "--cache", str(cache)]
    assert cli.main([*args, "--no-progress"]) == 0
    assert "written before checkpoints recorded their config" in capsys.readouterr().out
    assert json.loads((run / "state.json").read_text())["config"]["data"]["name"] == "tiny8"
    assert _tensor_digests(run / "model.safetensors") == expected["model"]
    assert _tensor_digests(run / "optimizer.safetensors") == expected["optimizer"]
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    for key, value in expected["metrics_epoch_3"].items():
        assert last[key] == value, key


@pytest.mark.parametrize("name", ["vae_tiny", "ae_tiny"])
def test_an_old_run_evaluates_to_the_same_numbers(old, name):
    cache, runs = old
    expected = EXPECTED["runs"][name]["eval"]["result"]
    sampling = ["--k", "50", "--seed", "0"] if name == "vae_tiny" else []  # an AE has no k
    args = ["eval", str(runs / name), *sampling, "--cache", str(cache)]
    assert cli.main([*args, "--no-progress"]) == 0
    record = json.loads((runs / name / "eval.json").read_text())[-1]
    record.pop("seconds")
    # to float rounding: the likelihood's arithmetic may be reordered for speed (the binary
    # Bernoulli term as one log-sigmoid pass moved the NLL by 1e-10 relative); a model loaded
    # wrongly moves it by far more
    numbers = {k for k, v in expected.items() if isinstance(v, float)}
    assert {k: v for k, v in record.items() if k not in numbers} == {
        k: v for k, v in expected.items() if k not in numbers}  # fmt: skip
    for k in numbers:
        assert record[k] == pytest.approx(expected[k], rel=1e-7, abs=1e-9), k


@pytest.mark.parametrize("name", ["vae_tiny", "ae_tiny"])
def test_an_old_run_generates_the_same_images(old, name):
    """The autoencoder's folder has no stage file: its Gaussian is fitted as before."""
    from vaelab.generate import generate, load_generator

    cache, runs = old
    _, model = load_generator(runs / name, cache)
    expected = EXPECTED["runs"][name]
    if "ae_prior_fit" in expected:
        torch.testing.assert_close(model.prior.mean, torch.tensor(expected["ae_prior_fit"]["mean"]),
                                   rtol=0, atol=0)  # fmt: skip
        torch.testing.assert_close(model.prior.scale_tril,
                                   torch.tensor(expected["ae_prior_fit"]["cholesky"]), rtol=0, atol=0)  # fmt: skip
    images = generate(model, 4, None, seed=0)
    assert images.tolist() == expected["generate"]["images"]
    assert not list((runs / name).glob("stage-*"))  # loading fitted in memory, wrote nothing


def test_a_finished_old_autoencoder_gets_its_stage_on_resume(old, capsys):
    cache, runs = old
    run = runs / "ae_tiny"
    assert cli.main(["train", "--resume", str(run), "--cache", str(cache), "--no-progress"]) == 0
    assert "already trained" in capsys.readouterr().out
    state = json.loads((run / "state.json").read_text())
    assert state["stages"] == {"expost_gaussian": _sha(run / "stage-expost_gaussian.safetensors")}
    stage = read_tensors(run / "stage-expost_gaussian.safetensors")[0]
    ae = EXPECTED["runs"]["ae_tiny"]["ae_prior_fit"]
    assert stage["mean"].tolist() == ae["mean"] and stage["scale_tril"].tolist() == ae["cholesky"]
