"""train.precision = "auto": bf16 only where the device multiplies it natively."""

import pytest
import torch

import vaelab.device as device_mod
from helpers import TINY_MNIST
from vaelab import cli
from vaelab.config import load_config
from vaelab.device import resolve_precision

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _by_capability(monkeypatch):
    """conftest.py makes "auto" mean fp32 for the rest of the suite; here it decides."""
    monkeypatch.delenv("VAELAB_AUTO_PRECISION", raising=False)


def test_the_environment_can_force_what_auto_chooses(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setenv("VAELAB_AUTO_PRECISION", "fp32")
    assert resolve_precision("auto", CPU) == "fp32"
    monkeypatch.setattr(device_mod, "cpu_flags", lambda: set())
    monkeypatch.setenv("VAELAB_AUTO_PRECISION", "bf16")
    assert resolve_precision("auto", CPU) == "bf16"


@pytest.mark.parametrize(("flags", "chosen"), [({"avx512f", "avx2"}, "fp32"),
                                               ({"avx512f", "avx512_bf16"}, "bf16"),
                                               ({"amx_bf16", "amx_tile"}, "bf16"), (set(), "fp32")])  # fmt: skip
def test_auto_follows_the_cpu_flags(monkeypatch, flags, chosen):
    monkeypatch.setattr(device_mod, "cpu_flags", lambda: flags)
    said = []
    assert resolve_precision("auto", CPU, said.append) == chosen
    assert resolve_precision("fp32", CPU, said.append) == "fp32"
    assert resolve_precision("bf16", CPU, said.append) == "bf16"  # explicit: kept
    assert (said == []) == (chosen == "bf16")  # …with one warning where it is emulated
    assert all("bf16 is emulated on this CPU" in s for s in said) and len(said) <= 1


def test_cuda_decides_by_compute_capability(monkeypatch):
    for major, chosen in ((7, "fp32"), (8, "bf16"), (9, "bf16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d, m=major: (m, 0))
        assert resolve_precision("auto", torch.device("cuda", 0)) == chosen


def test_cpu_flags_reads_this_machine():
    flags = device_mod.cpu_flags()
    assert isinstance(flags, set) and (
        not flags or any(f.startswith(("sse", "fp", "neon", "avx")) for f in flags)
    )


@pytest.mark.parametrize("flags", [set(), {"avx512_bf16"}])
def test_a_new_run_records_the_resolved_precision(
    monkeypatch, mnist_cache, tmp_path, flags, capsys
):
    monkeypatch.setattr(device_mod, "cpu_flags", lambda: flags)
    assert load_config(None, []).train.precision == "auto"  # the default
    run = tmp_path / "r"
    sets = [a for s in [*TINY_MNIST, "train.epochs=1"] for a in ("--set", s)]
    assert cli.main(["train", "configs/mnist_vae.toml", "--out", str(run), "--cache",
                     str(mnist_cache), "--no-progress", *sets]) == 0  # fmt: skip
    recorded = "bf16" if flags else "fp32"
    assert f'precision = "{recorded}"' in (run / "config.toml").read_text()
    assert cli.main(["train", "--resume", str(run), "--set", "train.epochs=2", "--cache",
                     str(mnist_cache), "--no-progress"]) == 0  # fmt: skip
    assert f'precision = "{recorded}"' in (run / "config.toml").read_text()
    assert "emulated" not in capsys.readouterr().err
