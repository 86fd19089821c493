"""The package's structure: no import cycles, models answer by capability, the config
grammar of [model.*] sub-tables, per-term metrics, and stages fitted after training."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from vaelab import cli
from vaelab.config import ModelConfig, PriorConfig, dumps, load_config, register_part
from vaelab.errors import ConfigError
from vaelab.models.registry import build_model, check_unused

SRC = Path(__file__).parents[1] / "src"


def _module_imports() -> dict[str, set[str]]:
    """vaelab module -> the vaelab modules it imports at its top level (an import of
    ``pkg.name`` where that is a sub-module counts as that sub-module)."""
    modules = {".".join(f.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): f
               for f in (SRC / "vaelab").rglob("*.py")}  # fmt: skip
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.parse(path.read_text()).body:  # top level only: lazy imports are fine
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("vaelab")
            ):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("vaelab")}
        graph[name] = deps & set(modules)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep] if dep in path else [*path, dep]
            if dep not in state and (found := visit(dep, [*path, dep])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def test_no_import_cycles():
    graph = _module_imports()
    assert len(graph) > 30 and "vaelab.models.registry" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_leaf_modules_import_no_other_vaelab_module():
    graph = _module_imports()
    assert graph["vaelab.errors"] == set()
    assert graph["vaelab.files"] == {"vaelab.errors"}
    assert graph["vaelab.parts"] == set()
    assert graph["vaelab.config_checks"] == {"vaelab.errors"}
    assert graph["vaelab.config"] == {"vaelab.errors", "vaelab.parts", "vaelab.config_checks"}
    assert graph["vaelab.data.idx"] == {"vaelab.errors", "vaelab.files"}  # no torch
    for module in ("config.py", "config_checks.py", "data/idx.py"):  # no torch, no data
        assert "import torch" not in (SRC / "vaelab" / module).read_text()


# ------------------------------------------------------------------------ capabilities


def test_models_say_what_they_can_do():
    shape = dict(image_shape=[1, 6, 6], widths=[8], bottleneck=2)
    ae = build_model(ModelConfig(kind="ae", **shape), "mse")
    vae = build_model(ModelConfig(kind="vae", **shape), "mse")
    clf = build_model(ModelConfig(kind="classifier", arch="conv", channels=[2], widths=[4],
                                  classes=["a", "b"], image_shape=[1, 8, 8]), "mse")  # fmt: skip
    can = {name: {v for v in ("encode", "decode", "sample", "log_weights", "read") if m.can(v)}
           for name, m in (("ae", ae), ("vae", vae), ("classifier", clf))}  # fmt: skip
    assert can == {"ae": {"encode", "decode"}, "vae": {"encode", "decode", "sample", "log_weights"},
                   "classifier": {"read"}}  # fmt: skip
    ae.fit_prior(torch.rand(20, 1, 6, 6))
    assert ae.can("sample")  # once its ex-post Gaussian exists
    with pytest.raises(ValueError, match="unknown verb"):
        vae.can("fly")


def test_vae_terms_are_the_parts_of_its_objective():
    cfg = ModelConfig(kind="vae", image_shape=[1, 6, 6], widths=[8], bottleneck=2, beta=3.0)
    model = build_model(cfg, "mse")
    x = (torch.rand(5, 1, 6, 6) < 0.5).float()
    torch.manual_seed(0)
    terms = model.terms(x)
    torch.manual_seed(0)
    loss = model.objective(x)
    assert torch.equal(terms["loss"], loss)
    torch.testing.assert_close(terms["reconstruction"] + 3.0 * terms["kl"], loss, rtol=0, atol=0)
    mu, logvar = model.posterior(x)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    reference = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(terms["kl"], reference.sum(1))
    iwae = build_model(ModelConfig(kind="vae", image_shape=[1, 6, 6], widths=[8], k=4), "mse")
    assert set(iwae.terms(x)) == {"loss"}


# ------------------------------------------------------------------------ config grammar


def test_model_sub_tables_load_set_and_round_trip(tmp_path):
    cfg = load_config(None, ["model.kind=vae", "model.prior.kind=normal",
                             "model.posterior.kind=gaussian"])  # fmt: skip
    assert cfg.model.prior == PriorConfig("normal")
    text = dumps(cfg)
    assert '[model.prior]\nkind = "normal"' in text and text.index("[model.prior]") > text.index(
        "k = 1"
    )
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert load_config(path) == cfg
    old = tmp_path / "old.toml"  # a config of before the sub-tables
    old.write_text('[model]\nkind = "vae"\nbottleneck = 3\n')
    assert load_config(old).model.prior.kind == "normal"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.prior.kind=vampire"], r"unknown model.prior.kind 'vampire' \(known: normal"),
        (
            ["model.prior.components=5"],
            "unknown config key model.prior.components for kind 'normal'",
        ),
        (["model.prior=3"], "model.prior is a table: set its keys"),
        (["model.bottleneck.kind=x"], "model.bottleneck is not a table"),
    ],
)
def test_bad_sub_tables_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["model.kind=vae", *overrides])


def test_a_registered_part_kind_is_typed_and_refused_where_unused():
    from dataclasses import dataclass

    @dataclass
    class Spiky:
        kind: str = "spiky_test"
        spikes: int = 3

    register_part("prior", "spiky_test", Spiky)
    try:
        cfg = load_config(None, ["model.kind=vae", "model.prior.kind=spiky_test",
                                 "model.prior.spikes=7"])  # fmt: skip
        assert cfg.model.prior == Spiky("spiky_test", 7)
        with pytest.raises(ConfigError, match="model.prior.spikes must be an integer, got 1.5"):
            load_config(None, ["model.prior.kind=spiky_test", "model.prior.spikes=1.5"])
        with pytest.raises(ConfigError, match="model.prior needs model.kind = 'vae' .it is 'ae'"):
            check_unused(load_config(None, ["model.prior.kind=spiky_test"]).model)
    finally:
        from vaelab.config import PARTS

        PARTS["prior"].pop("spiky_test")


# ------------------------------------------------------------------------ stages


@pytest.fixture(scope="module")
def ae_run(mnist_cache, tmp_path_factory):
    run = tmp_path_factory.mktemp("stages") / "ae"
    args = ["train", "--set", "model.widths=[16]", "--set", "data.limit=300", "--set",
            "data.test_limit=50", "--set", "train.epochs=1", "--out", str(run), "--no-progress"]  # fmt: skip
    config = run.parent / "ae.toml"
    config.write_text('[model]\nkind = "ae"\n')
    assert cli.main([args[0], str(config), *args[1:], "--cache", str(mnist_cache)]) == 0
    return run


def test_training_ends_with_the_stages_and_a_tampered_stage_is_refused(ae_run, mnist_cache, capsys):
    stage = ae_run / "stage-expost_gaussian.safetensors"
    state = json.loads((ae_run / "state.json").read_text())
    import hashlib

    assert state["stages"]["expost_gaussian"] == hashlib.sha256(stage.read_bytes()).hexdigest()
    raw = bytearray(stage.read_bytes())
    raw[-1] ^= 1
    stage.write_bytes(bytes(raw))
    assert cli.main(["sample", str(ae_run), "--cache", str(mnist_cache)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match the sha256" in err and "--redo" in err
    assert cli.main(["stage", str(ae_run), "--redo", "--cache", str(mnist_cache)]) == 0
    assert cli.main(["sample", str(ae_run), "--cache", str(mnist_cache)]) == 0
    with pytest.raises(ConfigError, match="has no stage 'nope' .its stages: expost_gaussian"):
        cli.main(["--debug", "stage", str(ae_run), "nope", "--cache", str(mnist_cache)])


def test_training_on_drops_the_stages_and_fits_them_again(ae_run, mnist_cache):
    before = (ae_run / "stage-expost_gaussian.safetensors").read_bytes()
    args = ["train", "--resume", str(ae_run), "--set", "train.epochs=2", "--no-progress"]
    assert cli.main([*args, "--cache", str(mnist_cache)]) == 0
    state = json.loads((ae_run / "state.json").read_text())
    assert state["epoch"] == 2 and set(state["stages"]) == {"expost_gaussian"}
    assert (ae_run / "stage-expost_gaussian.safetensors").read_bytes() != before  # new weights


def test_the_readme_python_example_runs(mnist_cache, tmp_path, monkeypatch):
    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text()
    code = readme.split("## Python API")[1].split("```python\n")[1].split("```")[0]
    assert '"train.epochs=5"' in code
    code = code.replace(
        '"train.epochs=5"', '"train.epochs=1", "data.limit=500", "data.test_limit=100"'
    )
    monkeypatch.setenv("VAELAB_CACHE", str(mnist_cache))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mnist_ae.toml").write_text(
        (root / "configs" / "mnist_ae.toml").read_text()
    )
    names: dict = {}
    exec(compile(code, "README.md", "exec"), names)
    assert names["z"].shape == (8, 2) and names["x_hat"].shape == (8, 1, 28, 28)


def test_a_vae_logs_its_reconstruction_and_kl_per_epoch(mnist_cache, tmp_path):
    cfg = load_config(None, ["model.kind=vae", "model.widths=[32]", "data.limit=300",
                             "data.test_limit=60", "train.epochs=2", "data.binarize=dynamic"])  # fmt: skip
    from vaelab.train import train

    run = train(cfg, tmp_path / "vae", cache=mnist_cache, progress=False, log=lambda s: None)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        t = r["test_terms"]
        assert set(t) == {"reconstruction", "kl"} and t["kl"] > 0
        assert t["reconstruction"] + t["kl"] == pytest.approx(r["test_loss"], rel=1e-6)


def test_no_source_file_is_git_ignored():
    """A .gitignore line once hid src/vaelab/runs/ (it matched every folder named runs):
    the checkout passed, a fresh clone had no vaelab.runs."""
    import shutil
    import subprocess

    root = Path(__file__).parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    files = [str(p.relative_to(root)) for p in (root / "src").rglob("*.py")]
    files += [str(p.relative_to(root)) for p in (root / "tests").rglob("*.py")]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *files], cwd=root,
                             capture_output=True, text=True).stdout.split()  # fmt: skip
    assert ignored == []


def test_a_model_defines_objective_or_terms_and_gets_the_other():
    from vaelab.models import Model

    class OnlyObjective(Model):
        def objective(self, x, y=None):
            return x.flatten(1).sum(1)

    class Neither(Model):
        pass

    x = torch.rand(3, 1, 2, 2)
    torch.testing.assert_close(OnlyObjective().terms(x)["loss"], x.flatten(1).sum(1))
    with pytest.raises(NotImplementedError, match="neither objective nor terms"):
        Neither().objective(x)
    assert not Neither().can("encode") and not Neither().can("sample")


def test_a_family_that_cannot_fuse_trains_one_by_one():
    from vaelab.models import FAMILIES, register_family
    from vaelab.models.ae import build
    from vaelab.train.groups import unfusable

    register_family("unfused_test", build, fusable=False)
    try:
        cfgs = [
            load_config(None, ["model.kind=unfused_test", f"train.lr={lr}"]) for lr in (1e-3, 1e-4)
        ]
        assert unfusable(cfgs) == "model.kind = 'unfused_test' cannot train fused"
        assert unfusable([load_config(None, [f"train.lr={lr}"]) for lr in (1e-3, 1e-4)]) is None
    finally:
        FAMILIES.pop("unfused_test")


def test_a_sub_table_set_as_a_value_says_how_to_set_it():
    with pytest.raises(
        ConfigError, match="model.prior is a table: .* --set model.prior.kind=normal"
    ):
        load_config(None, ["model.kind=vae", "model.prior=normal"])


def test_a_stage_write_cut_off_leaves_no_stale_hash(ae_run, mnist_cache, monkeypatch, capsys):
    import vaelab.runs.folder as runs_folder

    def full_disk(*args, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs_folder, "write_tensors", full_disk)
    assert cli.main(["stage", str(ae_run), "--redo", "--cache", str(mnist_cache)]) == 1
    monkeypatch.undo()
    assert "expost_gaussian" not in json.loads((ae_run / "state.json").read_text())["stages"]
    assert cli.main(["sample", str(ae_run), "--cache", str(mnist_cache)]) == 0  # fitted in memory
    assert cli.main(["stage", str(ae_run), "--cache", str(mnist_cache)]) == 0
    (ae_run / "stage-expost_gaussian.safetensors").unlink()
    capsys.readouterr()
    assert cli.main(["sample", str(ae_run), "--cache", str(mnist_cache)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is missing" in err and "vaelab stage" in err
    assert cli.main(["stage", str(ae_run), "--redo", "--cache", str(mnist_cache)]) == 0


def test_stage_on_a_model_without_stages_says_so(mnist_cache, tmp_path, capsys):
    cfg = load_config(None, ["model.kind=vae", "model.widths=[16]", "data.limit=100",
                             "data.test_limit=20", "train.epochs=1"])  # fmt: skip
    from vaelab.train import train

    run = train(cfg, tmp_path / "vae", cache=mnist_cache, progress=False, log=lambda s: None)
    assert "stages" not in json.loads((run / "state.json").read_text())
    assert cli.main(["stage", str(run), "--cache", str(mnist_cache)]) == 0
    assert "a vae fits nothing after training" in capsys.readouterr().out


def test_a_sub_table_written_as_a_value_in_a_file_is_named(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nkind = "vae"\nprior = 3\n')
    with pytest.raises(ConfigError, match=r"\[model.prior\] must be a table"):
        load_config(path)


def test_a_prior_without_a_closed_form_kl_gets_the_one_sample_estimate():
    """Its mean over many draws is the closed form (here N(0, I) again, as a factorised
    prior that does not know its KL)."""
    from vaelab.models.priors import FactorizedPrior
    from vaelab.thesis.losses import kl_normal_std

    model = build_model(
        ModelConfig(kind="vae", image_shape=[1, 4, 4], widths=[8], bottleneck=3), ""
    )
    model.prior = FactorizedPrior(
        torch.distributions.Normal, loc=torch.zeros(3), scale=torch.ones(3)
    )
    x = (torch.rand(2, 1, 4, 4) < 0.5).float().repeat(20000, 1, 1, 1)  # 2 images, many draws
    torch.manual_seed(0)
    with torch.no_grad():
        _, kl = model.elbo_terms(x)
        exact = kl_normal_std(*model.posterior(x[:2]))
    torch.testing.assert_close(kl.reshape(20000, 2).mean(0), exact, atol=0.03, rtol=0)


def test_the_cli_starts_without_torch_and_the_public_names_resolve():
    """`import vaelab` is light (its names load on first use), so `vaelab --help` is quick
    and a Ctrl-C during a command's heavy imports reaches the CLI's handler."""
    import subprocess
    import sys

    code = ("import sys, vaelab.cli; assert 'torch' not in sys.modules, 'torch imported'; "
            "import vaelab; [getattr(vaelab, n) for n in vaelab.__all__]; "
            "assert 'torch' in sys.modules; print('ok')")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
    import vaelab

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        vaelab.nope  # noqa: B018
