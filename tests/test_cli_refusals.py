"""Inputs that were silently accepted or ended in a traceback, now one clear line each."""

from __future__ import annotations

import json

import pytest

from vaelab import cli
from vaelab.config import load_config
from vaelab.errors import DataError
from vaelab.train import train


@pytest.fixture(scope="module")
def ae_run(mnist_cache, tmp_path_factory):
    cfg = load_config(None, ["model.widths=[16]", "data.limit=200", "data.test_limit=40",
                             "train.epochs=1"])  # fmt: skip
    out = tmp_path_factory.mktemp("refusals") / "ae"
    return train(cfg, out, cache=mnist_cache, progress=False, log=lambda s: None)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("vaelab 0.")


def test_state_records_what_wrote_it(ae_run):
    import torch

    written = json.loads((ae_run / "state.json").read_text())["written_by"]
    assert written == {"vaelab": __import__("vaelab").__version__, "torch": torch.__version__,
                       "device": "cpu"}  # fmt: skip


@pytest.mark.parametrize("digits", [0, 7, 99])
def test_compose_digits_out_of_range_before_any_allocation(digits):
    from vaelab.data.compose import default_holdout

    with pytest.raises(DataError, match=f"--digits must be between 1 and 6, got {digits}"):
        default_holdout(digits, seed=0)


def test_compose_cli_digits_99_is_one_line(capsys, tmp_path):
    args = ["data", "compose", "--digits", "99", "--name", "x", "--cache", str(tmp_path)]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--digits must be between 1 and 6, got 99" in err


@pytest.mark.parametrize(("flag", "name", "suffix"), [("--out", "x.npz", ".png"),
                                                      ("--out", "x.jpg", ".png"),
                                                      ("--npz", "x.png", ".npz")])  # fmt: skip
def test_sample_outputs_follow_their_extension(
    ae_run, mnist_cache, tmp_path, capsys, flag, name, suffix
):
    path = tmp_path / name
    assert cli.main(["sample", str(ae_run), flag, str(path), "--cache", str(mnist_cache)]) == 1
    assert f"must end in {suffix}" in capsys.readouterr().err and not path.exists()


def test_eval_of_a_model_without_likelihood_refuses_k(ae_run, mnist_cache, capsys):
    assert cli.main(["eval", str(ae_run), "--k", "50", "--cache", str(mnist_cache)]) == 1
    assert (
        "--k sets the importance sampling of a likelihood; model.kind = 'ae' has none"
        in capsys.readouterr().err
    )
    assert cli.main(["eval", str(ae_run), "--cache", str(mnist_cache), "--no-progress"]) == 0


def _copy(run, tmp_path):
    import shutil

    return shutil.copytree(run, tmp_path / "copy")


@pytest.mark.parametrize(("edit", "named"), [("lr = 0.0003", "train.lr: 0.0003 -> 0.5"),
                                             ("widths = [16]", "model.widths: [16] -> [8]")])  # fmt: skip
def test_an_edited_config_toml_is_refused_on_resume(
    ae_run, mnist_cache, tmp_path, capsys, edit, named
):
    run = _copy(ae_run, tmp_path)
    text = (run / "config.toml").read_text()
    new = {"lr = 0.0003": "lr = 0.5", "widths = [16]": "widths = [8]"}[edit]
    assert edit in text
    (run / "config.toml").write_text(text.replace(edit, new))
    before = {f.name: f.read_bytes() for f in run.iterdir() if f.name != ".lock"}
    args = ["train", "--resume", str(run), "--set", "train.epochs=2", "--cache", str(mnist_cache)]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differs from the one its checkpoint was written with" in err
    assert named in err and "Unexpected key" not in err
    assert {f.name: f.read_bytes() for f in run.iterdir() if f.name != ".lock"} == before


def test_repeating_the_runs_own_setting_on_resume_is_fine(ae_run, mnist_cache, tmp_path, capsys):
    run = _copy(ae_run, tmp_path)
    args = ["train", "--resume", str(run), "--set", "data.limit=200", "--set", "train.epochs=2",
            "--cache", str(mnist_cache), "--no-progress"]  # fmt: skip
    assert cli.main(args) == 0
    assert json.loads((run / "state.json").read_text())["epoch"] == 2
    changed = [
        "train",
        "--resume",
        str(run),
        "--set",
        "data.limit=300",
        "--cache",
        str(mnist_cache),
    ]
    assert cli.main(changed) == 1
    assert "--set data.limit cannot change on --resume" in capsys.readouterr().err


def test_a_checkpoint_records_its_config(ae_run):
    state = json.loads((ae_run / "state.json").read_text())
    assert state["config"]["train"]["lr"] == 0.0003 and state["config"]["model"]["widths"] == [16]


def test_an_empty_config_file_is_refused(tmp_path):
    from vaelab.errors import ConfigError

    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="sets nothing: a config names at least its"):
        load_config(empty)
    with pytest.raises(ConfigError, match="sets nothing"):
        load_config("/dev/null")


def test_sample_refuses_more_images_than_memory_holds(ae_run, mnist_cache, capsys, monkeypatch):
    import vaelab.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda: 10 * 2**20)  # 10 MiB
    assert cli.main(["sample", str(ae_run), "-n", "100000", "--cache", str(mnist_cache)]) == 1
    err = capsys.readouterr().err
    assert "100,000 images of 784 bytes need about 0.1 GiB in memory, 0.0 GiB are available" in err
    monkeypatch.undo()
    assert memory.available_memory() > 0 and memory.check_memory(10, 784) is None


def test_every_count_a_user_gives_is_bounded_before_allocation(
    ae_run, mnist_cache, tmp_path, capsys
):
    """The real memory of this machine: counts far beyond it are refused at once."""
    huge = str(10**12)
    cache = ["--cache", str(mnist_cache)]
    assert cli.main(["generate", str(ae_run), "--per-label", huge, "--out", str(tmp_path / "g"),
                     *cache]) == 1  # fmt: skip
    assert f"{10**12:,} images of 784 bytes need about" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()
    assert cli.main(["data", "compose", "--n", huge, "--name", "c3", *cache]) == 1
    assert f"{10**12:,} composites of" in capsys.readouterr().err
    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    from PIL import Image

    Image.new("L", (4, 4)).save(folder / "x.png")
    args = ["data", "import-folder", str(tmp_path / "imgs"), "--name", "big", *cache]
    assert cli.main([*args, "--size", "1000000x1000000"]) == 1
    assert "1 images of 1,000,000,000,000 bytes need about" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["a b", "new\nline", "naïve", "-dash", "x.y"])
def test_data_set_names_follow_the_rule_the_message_gives(tmp_path, name):
    import torch

    from vaelab.data import ImageDataset, save_dataset

    data = ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(DataError, match="use letters, digits, '-' and '_'"):
        save_dataset(name, {"train": data}, cache=tmp_path)
    assert not (tmp_path / "datasets").exists() or not list((tmp_path / "datasets").iterdir())


def test_figures_of_two_channel_images(tmp_path, capsys):
    """import-npz accepts (N, H, W, 2); recon and samples figures were a traceback."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = (rng.random((60, 8, 8, 2)) * 255).astype(np.uint8)
    for split, rows in (("train", slice(0, 48)), ("test", slice(48, 60))):
        np.savez(tmp_path / f"{split}.npz", images=images[rows])
        args = ["data", "import-npz", str(tmp_path / f"{split}.npz"), "--name", "two",
                "--split", split, "--cache", str(tmp_path / "c")]  # fmt: skip
        assert cli.main(args) == 0
    cfg = load_config(None, ["data.name=two", "model.widths=[8]", "train.epochs=1"])
    run = train(cfg, tmp_path / "run", cache=tmp_path / "c", progress=False, log=lambda s: None)
    for figure in ("recon", "samples"):
        assert cli.main(["plot", str(run), figure, "--cache", str(tmp_path / "c")]) == 0
        assert (run / f"{figure}.png").stat().st_size > 0


def test_cache_pointing_at_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert cli.main(["data", "list", "--cache", str(tmp_path / "f")]) == 1
    assert "--cache " + str(tmp_path / "f") + " is a file, not a folder" in capsys.readouterr().err


def test_a_text_file_named_npz_gets_no_pickle_advice(tmp_path, capsys):
    (tmp_path / "t.npz").write_text("not an archive")
    args = ["data", "import-npz", str(tmp_path / "t.npz"), "--name", "t", "--cache", str(tmp_path)]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "not an .npz archive" in err and "pickle" not in err


def test_output_paths_that_are_folders_or_cannot_be_written(
    ae_run, mnist_cache, tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "d"
    folder.mkdir()
    assert cli.main(["sample", str(ae_run), "--npz", str(folder), "--cache", str(mnist_cache)]) == 1
    err = capsys.readouterr().err
    assert f"is a folder: give a file name: '{folder}'" in err and ".tmp" not in err
    import os

    import vaelab.files as files

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", lambda fd: full(fd, b""))
    assert (
        cli.main(
            ["sample", str(ae_run), "--out", str(tmp_path / "s.png"), "--cache", str(mnist_cache)]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "No space left on device (writing " + str(tmp_path / "s.png") + ")" in err
    assert not list(tmp_path.glob(".*.tmp")) and os.path.exists(folder)


def test_resume_messages(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert cli.main(["train", "--resume", str(tmp_path / "file")]) == 1
    assert "is a file, not a run folder" in capsys.readouterr().err
    run = tmp_path / "cut"
    run.mkdir()
    (run / "config.toml").write_text('[model]\nkind = "ae"\n')
    assert cli.main(["train", "--resume", str(run)]) == 1
    assert "the command that started it starts it again" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [('kind = "ae"\n', r"unknown config section \[kind\].*; kind belongs in \[model\]"),
     ("[model]\nwidths = 3\n", "model.widths must be a list, got 3")],
)  # fmt: skip
def test_config_messages(tmp_path, text, message):
    from vaelab.errors import ConfigError

    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "c.toml")


def test_a_list_without_brackets_gets_the_hint():
    from vaelab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"a list is written in brackets: \[512,256\]"):
        load_config(None, ["model.widths=512,256"])


def test_plot_latent_of_a_16_d_model(mnist_cache, tmp_path, capsys):
    cfg = load_config(None, ["model.widths=[32]", "model.bottleneck=16", "data.limit=100",
                             "data.test_limit=20", "train.epochs=1"])  # fmt: skip
    run = train(cfg, tmp_path / "r", cache=mnist_cache, progress=False, log=lambda s: None)
    assert cli.main(["plot", str(run), "latent", "--cache", str(mnist_cache)]) == 1
    assert "codes of 2 or 3 dimensions" in capsys.readouterr().err


def test_a_short_label_on_a_digitwise_model_suggests_the_padded_one():
    import torch

    from vaelab.config import ModelConfig
    from vaelab.errors import ConfigError
    from vaelab.models import build_model

    classes = [f"{i:03d}" for i in range(0, 1000, 100)]
    model = build_model(ModelConfig(kind="vae", conditional=True, classes=classes, widths=[40],
                                    image_shape=[1, 8, 12]), "")  # fmt: skip
    with pytest.raises(ConfigError, match="did you mean '042'"):
        model.sample(1, ["42"], torch.Generator())


def test_generate_idx_folder_imports_as_a_folder(tmp_path):
    """`generate --format idx` writes a folder of one pair; `import-idx FOLDER` took only the
    two-file form. Now the folder round-trips, and --split chooses its split."""
    import numpy as np
    import torch

    from vaelab.data.cache import load_dataset
    from vaelab.data.idx import write_idx

    out = tmp_path / "gen"
    out.mkdir()
    write_idx(out / "images-idx3-ubyte.gz", np.full((4, 5, 5), 7, dtype=np.uint8))
    write_idx(out / "labels-idx1-ubyte.gz", np.array([0, 1, 1, 0], dtype=np.uint8))
    (out / "classes.txt").write_text("cat\ndog\n")
    cache = str(tmp_path / "c")
    assert cli.main(["data", "import-idx", str(out), "--name", "gen", "--cache", cache]) == 0
    assert cli.main(["data", "import-idx", str(out), "--name", "gen", "--split", "test",
                     "--cache", cache]) == 0  # fmt: skip
    back = load_dataset("gen", "test", cache)
    assert back.classes == ["cat", "dog"] and torch.equal(back.labels, torch.tensor([0, 1, 1, 0]))


def test_generate_cut_off_leaves_no_folder_of_images(
    ae_run, mnist_cache, tmp_path, monkeypatch, capsys
):
    import vaelab.generate as generate

    real, calls = generate.save_png, []

    def full_disk(path, picture):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(path, picture)

    monkeypatch.setattr(generate, "save_png", full_disk)
    out = tmp_path / "gen"
    args = [
        "generate",
        str(ae_run),
        "--per-label",
        "5",
        "--out",
        str(out),
        "--cache",
        str(mnist_cache),
    ]
    assert cli.main(args) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no partial folder either
    monkeypatch.undo()
    assert cli.main(args) == 0
    assert len(list((out / "unlabelled").iterdir())) == 5 and (out.stat().st_mode & 0o777) != 0o700


def test_images_in_nested_class_sub_folders_are_refused(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    for path in ("photos/cat/a.png", "photos/dog/2024/b.png", "photos/dog/2025/c.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / path)
    args = ["data", "import-folder", str(tmp_path / "photos"), "--name", "p", "--size", "4x4",
            "--cache", str(tmp_path / "c")]  # fmt: skip
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "dog: images in sub-folders (2024)" in err and "move them up" in err


def test_empty_files_as_data_are_one_line(tmp_path, capsys):
    """Found by tests/test_fuzz.py: numpy's EOFError for an empty .npz escaped as a traceback."""
    assert (
        cli.main(["data", "import-npz", "/dev/null", "--name", "x", "--cache", str(tmp_path)]) == 1
    )
    assert "/dev/null: empty, not an .npz archive" in capsys.readouterr().err
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "cut.npz").write_bytes(b"")
    assert cli.main(["data", "info", "cut", "--cache", str(tmp_path)]) == 1
    assert "cannot read the cached data set (No data left in file)" in capsys.readouterr().err


def test_a_failed_launch_on_several_processes_is_one_line(tmp_path):
    """Found by tests/test_fuzz.py: torchrun's agent added its ChildFailedError traceback
    (and every rank its own copy of the error) to the workers' one-line error."""
    import subprocess
    import sys
    from pathlib import Path

    config = Path(__file__).parents[1] / "configs" / "mnist_ae.toml"
    done = subprocess.run([sys.executable, "-m", "vaelab", "train", str(config), "--nproc", "2",
                           "--cache", str(tmp_path), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "vaelab: error: data set 'mnist' is not in the cache yet: run `vaelab data fetch mnist`"
    ]


def test_eval_on_a_chosen_split(ae_run, mnist_cache, capsys):
    """#17: choose on 'valid', report on 'test'. The record names its split; the numbers are
    those of that split's images (checked against the evaluation of the split loaded
    directly); a split the run trained on gets a warning."""
    import torch

    from vaelab.data.batches import heldout_batches, load_split
    from vaelab.eval.common import mean_objective
    from vaelab.runs.load import load_run

    cache = ["--cache", str(mnist_cache)]
    base = ["eval", str(ae_run), "--limit", "300", *cache]
    assert cli.main([*base, "--split", "valid"]) == 0
    err = capsys.readouterr().err
    assert "on the first 300 valid images" in err
    assert "warning" not in err  # trained on rows 0-200 of train; valid is rows 50,000+
    assert cli.main([*base, "--split", "test"]) == 0
    assert "warning" not in capsys.readouterr().err
    records = json.loads((ae_run / "eval.json").read_text())[-2:]
    assert cli.main([*base, "--split", "train50k"]) == 0  # rows 0-50,000 hold the 200
    assert "the run trained on images of split 'train50k'" in capsys.readouterr().err
    assert [r["split"] for r in records] == ["valid", "test"]
    cfg, model = load_run(ae_run)
    valid = heldout_batches(load_split("mnist", "valid", mnist_cache, 300), cfg.data.binarize, 100)
    with torch.no_grad():
        direct = mean_objective(model, valid)
    assert records[0]["recon_mse_per_image"] == pytest.approx(direct, rel=1e-5)
    assert records[0] != records[1]
    assert cli.main([*base, "--split", "nope"]) == 1
    assert "nope" in capsys.readouterr().err


def test_nproc_is_bounded_and_a_bad_command_line_starts_no_process(tmp_path, capsys, monkeypatch):
    """Found by tests/test_fuzz.py: `--nproc 99999999999999999999 --resume 'a b'` started
    torchrun's agent, which tried to spawn that many workers (15 GB in a minute)."""
    import subprocess

    def no_launch(*a, **k):
        raise AssertionError("a process was started")

    monkeypatch.setattr(subprocess, "Popen", no_launch)
    config = "configs/mnist_ae.toml"
    for argv, says in ((["--nproc", "99999999999999999999", "--resume", str(tmp_path / "a b")], "does not exist"),
                       (["--nproc", "99999", config, "--out", str(tmp_path / "r")], "at most"),
                       (["--nproc", "2", config, "--sweep", "train.lr=1,2"], "without --nproc")):  # fmt: skip
        assert cli.main(["train", *argv]) == 1
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err


def test_interleaved_error_lines_of_two_ranks_are_relayed_as_one(capsys):
    import io

    from vaelab.cli.train import _relay

    msg = "data set 'mnist' is not in the cache yet"
    _relay(io.StringIO(f"vaelab: error: {msg}vaelab: error (rank 1): {msg}\n"))
    assert capsys.readouterr().err.splitlines() == [f"vaelab: error: {msg}"]
