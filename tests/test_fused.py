"""Fused training of same-shaped models: equal to training them one by one."""

from pathlib import Path

import pytest
import torch

import vaelab.files as files
import vaelab.runs.folder as runs_folder
import vaelab.train.groups as train_groups
import vaelab.train.loop as train_loop
import vaelab.train.setup as train_setup
import vaelab.train.state as train_state
import vaelab.train.step as train_step
from vaelab import cli, reproduce
from vaelab.config import load_config
from vaelab.errors import ConfigError
from vaelab.models.registry import build_model
from vaelab.sweep import parse_sweep, sweep_overrides
from vaelab.train.fused import Fused

CONFIG = str(Path(__file__).parents[1] / "configs" / "mnist_ae.toml")
TINY = ["data.limit=1000", "data.test_limit=200", "model.widths=[64,32]", "train.batch_size=100"]


def cfg(*extra):
    return load_config(None, TINY + list(extra))


def quiet(**kw):
    return dict(progress=False, log=lambda s: None, **kw)


def assert_close_runs(a, b, **tol):
    wa, wb = (files.read_tensors(d / "model.safetensors")[0] for d in (a, b))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], **tol)
    ma, mb = runs_folder.RunFolder(a).read_metrics(), runs_folder.RunFolder(b).read_metrics()
    for ra, rb in zip(ma, mb, strict=True):
        assert ra["step"] == rb["step"]
        torch.testing.assert_close(ra["train_loss"], rb["train_loss"], rtol=1e-5, atol=0)
        torch.testing.assert_close(ra["test_loss"], rb["test_loss"], rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "extra, decays",
    [([], None), (["model.bottleneck=3", "train.lr_decay=0.1"], None),
     (["model.bottleneck=3"], [0.1, 1.0, 0.5])],  # each member its own schedule
)  # fmt: skip
def test_fused_equals_one_by_one(mnist_cache, tmp_path, extra, decays):
    opts = [["train.optimizer=adam", "train.lr=1e-3"], ["train.optimizer=amsgrad", "train.lr=3e-4"],
            ["train.optimizer=sgd", "train.lr=0.01"]]  # fmt: skip
    if decays:
        opts = [[*o, f"train.lr_decay={d}"] for o, d in zip(opts, decays, strict=True)]
    common = ["train.epochs=3", *extra]
    outs = [tmp_path / f"fused{i}" for i in range(3)]
    train_groups.train_many([cfg(*common, *o) for o in opts], outs, cache=mnist_cache, **quiet())
    for i, o in enumerate(opts):
        alone = train_loop.train(
            cfg(*common, *o), tmp_path / f"alone{i}", cache=mnist_cache, **quiet()
        )
        # Adam divides by √v, so gradient rounding (batched vs single matmuls) shows ~1e-6
        assert_close_runs(outs[i], alone, rtol=1e-4, atol=1e-5)
        assert runs_folder.RunFolder(outs[i]).read_config().train.optimizer == o[0].split("=")[1]


def test_fused_resume_is_bitwise(mnist_cache, tmp_path):
    opts = ["train.optimizer=adam", "train.optimizer=amsgrad"]
    straight = [tmp_path / "s0", tmp_path / "s1"]
    train_groups.train_many(
        [cfg("train.epochs=2", o) for o in opts], straight, cache=mnist_cache, **quiet()
    )
    broken = [tmp_path / "b0", tmp_path / "b1"]
    train_groups.train_many(
        [cfg("train.epochs=1", o) for o in opts], broken, cache=mnist_cache, **quiet()
    )
    train_groups.train_many([cfg("train.epochs=2", o) for o in opts], broken, resume=True,
                     cache=mnist_cache, **quiet())  # fmt: skip
    for a, b in zip(straight, broken, strict=True):
        assert_close_runs(a, b, rtol=0, atol=0)


def test_fused_vaes_draw_their_own_noise(mnist_cache, tmp_path):
    vae = ["model.kind=vae", "data.binarize=dynamic", "model.activation=tanh", "train.epochs=1"]
    outs = [tmp_path / "v0", tmp_path / "v1"]
    train_groups.train_many([cfg(*vae, f"train.lr={lr}") for lr in (1e-3, 1e-3)], outs,
                     cache=mnist_cache, **quiet())  # fmt: skip
    first, second = (runs_folder.RunFolder(o).read_metrics()[0]["train_loss"] for o in outs)
    assert first != second  # same model, data and lr: only the noise ε differs
    assert abs(first - second) < 0.02 * first


@pytest.mark.parametrize(
    ("other", "match"),
    [(["model.bottleneck=3"], r"same \[data\] and \[model\]"),
     (["train.batch_size=50"], "batch_size"),
     (["data.limit=500"], r"same \[data\]")],
)  # fmt: skip
def test_unfusable_configs_are_refused(tmp_path, other, match):
    with pytest.raises(ConfigError, match=match):
        train_groups.train_many([cfg(), cfg(*other)], [tmp_path / "a", tmp_path / "b"])


def test_early_stopping_is_not_fusable(tmp_path):
    with pytest.raises(ConfigError, match="early_stopping"):
        train_groups.train_many(
            [cfg("train.early_stopping=2")] * 2, [tmp_path / "a", tmp_path / "b"]
        )


def test_fused_needs_same_shapes():
    c2, c3 = (
        cfg("model.image_shape=[1,28,28]"),
        cfg("model.image_shape=[1,28,28]", "model.bottleneck=3"),
    )
    a, b = build_model(c2.model, "mse"), build_model(c3.model, "mse")
    with pytest.raises(ValueError, match="same parameter names and shapes"):
        Fused([a, b])
    with pytest.raises(ValueError, match="at least 2"):
        Fused([a])


@pytest.mark.parametrize(
    "arch",
    [[], ["model.arch=conv", "model.channels=[4,8]"], ["model.kind=vae"],
     ["model.kind=vae", "model.prior.kind=mog"],
     ["model.kind=vae", "model.prior.kind=vamp", "model.prior.components=5"],
     ["model.kind=wae"], ["model.kind=vae", "model.posterior.kind=iaf", "model.posterior.hidden=8"]],
)  # fmt: skip
def test_fused_objective_matches_each_model(arch, monkeypatch):
    c = cfg("model.image_shape=[1,28,28]", *arch)
    torch.manual_seed(0)
    models = [build_model(c.model, "mse") for _ in range(3)]  # different initialisations
    x = torch.rand(7, 1, 28, 28)
    if c.model.kind in ("vae", "wae"):  # ε, prior draws: one fixed draw for every model, call
        eps, real_randn_like = torch.randn(7, c.model.bottleneck), torch.randn_like
        monkeypatch.setattr(
            torch,
            "randn_like",
            lambda t, **kw: eps.clone() if t.shape == eps.shape else real_randn_like(t, **kw),
        )
    expected = torch.stack([m.objective(x) for m in models])  # before fusing: (3, 7)
    fused = Fused(models)
    losses = fused.objective(x)
    torch.testing.assert_close(losses, expected)
    fused.backward(losses)
    for m in models:
        ref = torch.autograd.grad(m.objective(x).mean(), list(m.parameters()))
        for p, g in zip(m.parameters(), ref, strict=True):
            torch.testing.assert_close(p.grad, g)


def test_reproduce_fuses_pairs_and_resumes(mnist_cache, tmp_path, monkeypatch, capsys):
    real = reproduce.thesis_config

    def small(optimizer, bottleneck, epochs, device="cpu"):
        c = real(optimizer, bottleneck, epochs, device)
        c.data.limit, c.data.test_limit, c.model.widths = 1024, 256, [32, 16]
        return c

    monkeypatch.setattr(reproduce, "thesis_config", small)
    calls = []
    real_many = train_groups.train_many
    monkeypatch.setattr(
        train_groups, "train_many", lambda *a, **kw: calls.append("fused") or real_many(*a, **kw)
    )
    report = reproduce.reproduce_thesis(
        tmp_path / "t", epochs=2, cache=mnist_cache, progress=False, fuse="on"
    )
    assert calls == ["fused", "fused"]
    text = report.read_text()
    assert text.count("| 2 |") >= 2 and "AMSGrad" in text
    rows = [line for line in text.splitlines() if line.startswith(("| Adam |", "| AMSGrad |"))]
    assert len(rows) == 4 and all(row.endswith("(fused) |") for row in rows)
    assert "A wall time marked fused is its pair's" in text
    # one model of a pair is gone: the other is kept, the missing one trains alone
    alone = tmp_path / "t" / "amsgrad-nb2"
    before = files.read_tensors(alone / "model.safetensors")[0]
    for f in alone.iterdir():
        f.unlink()
    capsys.readouterr()
    reproduce.reproduce_thesis(
        tmp_path / "t", epochs=2, cache=mnist_cache, progress=False, fuse="on"
    )
    assert calls == ["fused", "fused"]
    assert "for the 2 epochs left" in capsys.readouterr().out  # the projection: 1 run of 2
    # the report tells the run that trained alone from its kept, fused partner
    text = (tmp_path / "t" / "reproduction.md").read_text()
    rows = {
        tuple(line.split(" | ")[:2]): line for line in text.splitlines() if line.startswith("| A")
    }
    assert rows["| Adam", "2"].endswith("(fused) |") and "fused" not in rows["| AMSGrad", "2"]
    assert rows["| AMSGrad", "3"].endswith("(fused) |")
    after = files.read_tensors(alone / "model.safetensors")[0]
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=1e-4, atol=1e-5)
    # all trained: no timing steps, just the figures and the report
    monkeypatch.setattr(reproduce, "projected_seconds", lambda *a, **kw: calls.append("timed"))
    reproduce.reproduce_thesis(tmp_path / "t", epochs=2, cache=mnist_cache, progress=False)
    assert "all four runs are trained" in capsys.readouterr().out and "timed" not in calls


def test_reproduce_trains_on_the_device_asked_for(mnist_cache, tmp_path, monkeypatch, capsys):
    """--device reaches every run's config, and --fuse auto fuses off the CPU ("meta"
    stands in for an accelerator; the training itself is stubbed)."""
    seen = []

    class Stop(Exception):
        pass

    def group(cfgs, outs, *args, **kwargs):
        seen.extend(cfgs)
        raise Stop

    def projected(*args, device, **kwargs):
        seen.append(device)
        return 0.0

    fetched = []
    real_fetch = reproduce.fetch
    monkeypatch.setattr(
        reproduce, "fetch", lambda *a, **kw: fetched.append(1) or real_fetch(*a, **kw)
    )
    monkeypatch.setattr(reproduce, "projected_seconds", projected)
    monkeypatch.setattr(reproduce, "train_group", group)
    argv = ["reproduce", "thesis", "--out", str(tmp_path / "t"), "--cache", str(mnist_cache)]
    with pytest.raises(Stop):
        cli.main([*argv, "--device", "meta", "--no-progress"])
    assert seen[0] == "meta" and [c.train.device for c in seen[1:]] == ["meta", "meta"]
    assert "fused in pairs" in capsys.readouterr().out
    # an unknown device: one line naming the option, before MNIST is fetched
    fetched.clear()
    assert cli.main([*argv, "--device", "nosuch"]) == 1
    assert "--device = 'nosuch' is not available" in capsys.readouterr().err
    assert fetched == []


def test_parse_sweep():
    assert parse_sweep("train.lr=1e-3,3e-4") == ("train.lr", [1e-3, 3e-4])
    assert parse_sweep("train.optimizer=adam, amsgrad") == ("train.optimizer", ["adam", "amsgrad"])
    assert parse_sweep("model.widths=[64],[128,64]") == ("model.widths", [[64], [128, 64]])
    assert parse_sweep("data.name=2024,2025") == ("data.name", ["2024", "2025"])
    # the value that is not a number is named, not the first one of the list
    with pytest.raises(ConfigError, match="sweep train.lr = 'abc' is not a number"):
        parse_sweep("train.lr=1e-3,abc")
    for bad in ("train.lr", "lr=1,2", "train.optimizer=adam,,sgd"):
        with pytest.raises(ConfigError):
            parse_sweep(bad)
    runs_ = sweep_overrides(["train.optimizer=adam,sgd", "train.lr=0.1,0.01"])
    assert [n for n, _ in runs_] == ["optimizer=adam,lr=0.1", "optimizer=adam,lr=0.01",
                                     "optimizer=sgd,lr=0.1", "optimizer=sgd,lr=0.01"]  # fmt: skip
    assert runs_[0][1] == ['train.optimizer="adam"', "train.lr=0.1"]


def test_cli_sweep_fuses_and_continues(mnist_cache, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["train", CONFIG, "--out", str(out), "--cache", str(mnist_cache), "--no-progress",
            "--sweep", "train.optimizer=adam,amsgrad", "--sweep", "train.lr=1e-3,3e-4", "--fuse", "on"]  # fmt: skip
    args += [a for s in TINY + ["train.epochs=1"] for a in ("--set", s)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "4 models fused" in printed
    names = sorted(p.name for p in out.iterdir())
    assert names == ["optimizer=adam,lr=0.0003", "optimizer=adam,lr=0.001",
                     "optimizer=amsgrad,lr=0.0003", "optimizer=amsgrad,lr=0.001"]  # fmt: skip
    cfg = runs_folder.RunFolder(out / "optimizer=amsgrad,lr=0.0003").read_config()
    assert (cfg.train.optimizer, cfg.train.lr) == ("amsgrad", 3e-4)
    assert cli.main(args) == 0  # again: all finished, nothing retrained
    assert capsys.readouterr().out.count("already trained, kept") == 4


def test_cli_sweep_over_the_model_trains_one_by_one(mnist_cache, tmp_path, capsys):
    args = ["train", CONFIG, "--out", str(tmp_path / "s"), "--cache", str(mnist_cache), "--no-progress",
            "--sweep", "model.bottleneck=2,3", "--fuse", "on"]  # fmt: skip
    args += [a for s in TINY + ["train.epochs=1"] for a in ("--set", s)]
    assert cli.main(args) == 0
    assert (
        "training one by one: fused runs need the same [data] and [model]"
        in capsys.readouterr().out
    )
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["bottleneck=2", "bottleneck=3"]


def test_parameters_the_objective_ignores_get_no_gradient():
    c = cfg("model.image_shape=[1,28,28]", "model.kind=vae", "model.likelihood='gaussian'",
            "model.learn_sigma=true")  # fmt: skip
    models = [build_model(c.model, "mse") for _ in range(2)]
    for m in models:
        m.likelihood = "bernoulli"  # log σ is now a parameter the objective never reads
    fused = Fused(models)
    fused.backward(fused.objective(torch.rand(4, 1, 28, 28)))
    for m in models:
        assert m.log_sigma.grad is None
        assert all(p.grad is not None for n, p in m.named_parameters() if n != "log_sigma")


def test_a_diverging_run_does_not_stop_the_others(mnist_cache, tmp_path):
    good, bad = ["train.optimizer=sgd", "train.lr=0.01"], ["train.optimizer=sgd", "train.lr=1e12"]
    outs = [tmp_path / "good", tmp_path / "bad", tmp_path / "good2"]
    cfgs = [cfg("train.epochs=2", *o) for o in (good, bad, good)]
    with pytest.raises(train_loop.TrainingDiverged, match=r"1 of 3 runs diverged.*bad: loss is"):
        train_groups.train_group(cfgs, outs, cache=mnist_cache, fuse="on", **quiet())
    for out in (outs[0], outs[2]):
        assert runs_folder.RunFolder(out).read_state()["epoch"] == 2
    assert not (outs[1] / "state.json").exists()  # diverged in epoch 1: nothing saved


def test_finished_includes_early_stopped():
    c = cfg("train.epochs=10", "train.early_stopping=2")
    assert train_state.finished(c, {"epoch": 4, "stale": 2})
    assert not train_state.finished(c, {"epoch": 4, "stale": 1})
    assert train_state.finished(cfg("train.epochs=4"), {"epoch": 4, "stale": 0})
    # with train.test_every > 1 the stale count passes the patience at untested epochs,
    # where training goes on: only a run that did stop is finished
    assert not train_state.finished(c, {"epoch": 4, "stale": 2, "stopped": False})
    assert train_state.finished(c, {"epoch": 4, "stale": 2, "stopped": True})
    # a stopped run resumed with more patience is not finished
    assert not train_state.finished(c, {"epoch": 4, "stale": 1, "stopped": True})


def test_a_sweep_refuses_folders_of_another_config(mnist_cache, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    opts = ["train.optimizer=adam", "train.optimizer=amsgrad"]
    train_groups.train_group(
        [cfg("train.epochs=1", o) for o in opts], outs, cache=mnist_cache, **quiet()
    )
    changed = [cfg("train.epochs=2", "train.batch_size=50", o) for o in opts]
    with pytest.raises(
        ConfigError, match=r"holds a run of another config \(train.batch_size: 100 -> 50\)"
    ):
        train_groups.train_group(changed, outs, cache=mnist_cache, **quiet())
    assert runs_folder.RunFolder(outs[0]).read_state()["epoch"] == 1  # untouched
    longer = [cfg("train.epochs=2", o) for o in opts]  # more epochs may be asked for
    train_groups.train_group(longer, outs, cache=mnist_cache, **quiet())
    assert runs_folder.RunFolder(outs[1]).read_state()["epoch"] == 2
    # under a decaying learning rate, continuing with more epochs says it stretches
    decaying = [tmp_path / "c"]
    train_groups.train_group(
        [cfg("train.epochs=1", "train.lr_decay=0.5")], decaying, cache=mnist_cache, **quiet()
    )
    said = []
    train_groups.train_group([cfg("train.epochs=2", "train.lr_decay=0.5")], decaying, cache=mnist_cache,
                      progress=False, log=said.append)  # fmt: skip
    assert any("train.epochs 1 -> 2 with train.lr_decay = 0.5 stretches" in s for s in said)


def test_sweep_refuses_repeated_values_and_stray_no_fuse(tmp_path):
    with pytest.raises(ConfigError, match="repeat: lr=0.001"):
        sweep_overrides(["train.lr=1e-3,0.001"])
    assert cli.main(["train", CONFIG, "--fuse", "on", "--out", str(tmp_path / "x")]) == 1


def test_fuse_auto_is_off_on_a_cpu(mnist_cache, tmp_path, monkeypatch):
    assert (
        not train_groups.fuses("auto", cfg())
        and train_groups.fuses("on", cfg())
        and not train_groups.fuses("off", cfg())
    )
    with pytest.raises(ConfigError, match="fuse must be one of"):
        train_groups.fuses("yes", cfg())
    monkeypatch.setattr(train_groups, "train_many", lambda *a, **kw: pytest.fail("fused on a CPU"))
    opts = ["train.optimizer=adam", "train.optimizer=amsgrad"]
    train_groups.train_group([cfg("train.epochs=1", o) for o in opts], [tmp_path / "a", tmp_path / "b"],
                      cache=mnist_cache, **quiet())  # fmt: skip


def test_fused_step_in_bf16_matches_one_by_one():
    """train.precision = bf16 reaches inside the vmapped step: fp32 losses that differ from
    the same fused step in fp32 (so bfloat16 ran) and equal each model's own bf16 step to
    bfloat16's rounding (under vmap a Linear's bias add promotes its output to fp32, so the
    two paths round apart)."""
    cfgs = [cfg("train.batch_size=16", f"train.optimizer={o}") for o in ("adam", "amsgrad")]
    for c in cfgs:
        c.model.image_shape = [1, 28, 28]
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))

    def fused_losses(precision):
        pairs = [train_setup.setup_model(c, torch.device("cpu")) for c in cfgs]
        models, opts = [m for m, _ in pairs], [o for _, o in pairs]
        return train_step.step_function(models, opts, precision=precision)(x, None)

    losses, fp32 = fused_losses("bf16"), fused_losses("fp32")
    alone = [train_setup.setup_model(c, torch.device("cpu")) for c in cfgs]
    each = torch.cat(
        [train_step.step_function([m], [o], precision="bf16")(x, None) for m, o in alone]
    )
    assert losses.dtype == torch.float32 and losses.shape == (2, 16)
    assert not torch.equal(losses, fp32)  # the fused fp32 step is the same deterministic path
    torch.testing.assert_close(losses, each, rtol=2e-3, atol=0)


def test_ctrl_c_in_a_sweep_without_out_names_the_folder(monkeypatch, capsys, tmp_path):
    def interrupted(*args, **kwargs):
        raise train_loop.TrainingInterrupted("interrupted at epoch 1, step 3; checkpoints saved: run "
                                        "the same command again to continue every run")  # fmt: skip

    monkeypatch.setattr(train_groups, "train_group", interrupted)
    monkeypatch.chdir(tmp_path)
    config = str(Path(__file__).parents[1] / "configs" / "mnist_ae.toml")
    assert cli.main(["train", config, "--sweep", "train.lr=0.1,0.01"]) == 1
    assert "adding --out runs/sweep-" in capsys.readouterr().err


def test_ctrl_c_in_a_group_advises_the_same_command(mnist_cache, tmp_path, monkeypatch):
    import os
    import signal

    from vaelab.train.optimizers import KernelAdam  # what train.optimizer = "adam" builds

    real_step, steps = KernelAdam.step, {"n": 0}

    def step_then_ctrl_c(self, *args, **kwargs):
        steps["n"] += 1
        if steps["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(KernelAdam, "step", step_then_ctrl_c)
    cfgs = [cfg("train.epochs=1", o) for o in ("train.lr=1e-3", "train.lr=3e-4")]
    with pytest.raises(train_loop.TrainingInterrupted, match="run the same command again") as e:
        train_groups.train_group(
            cfgs, [tmp_path / "a", tmp_path / "b"], cache=mnist_cache, fuse="off", **quiet()
        )
    assert "--resume" not in str(e.value)
    assert (
        runs_folder.RunFolder(tmp_path / "a").read_state()["step"] == 3
    )  # checkpointed where it stood


@pytest.mark.parametrize(
    "refused",
    [["model.k=5"], ["model.kind=vae", "model.beta=4.0", "model.k=5"]],
)
def test_a_group_refuses_a_config_before_any_run_trains(mnist_cache, tmp_path, refused):
    """A sweep over the model trains one by one: a combination that sets a key its model
    would ignore is refused before the earlier combinations train, not after them."""
    cfgs = [cfg("train.epochs=1"), cfg("train.epochs=1", *refused)]
    outs = [tmp_path / "ok", tmp_path / "refused"]
    with pytest.raises(ConfigError, match="model.k"):
        train_groups.train_group(cfgs, outs, cache=mnist_cache, fuse="off", **quiet())
    assert not outs[0].exists()


def test_a_group_needs_one_folder_per_config(tmp_path):
    for cfgs, outs in (([], []), ([cfg()], [])):
        with pytest.raises(ValueError, match="train_group needs one output folder per config"):
            train_groups.train_group(cfgs, outs)
        with pytest.raises(ValueError, match="train_many needs one output folder per config"):
            train_groups.train_many(cfgs, outs)
