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
    assert graph["vaelab.config"] == {"vaelab.errors"}  # no torch, no data for BINARIZE
    source = (SRC / "vaelab" / "config.py").read_text()
    assert "import torch" not in source


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
        (["model.prior=3"], r"\[model.prior\] must be a table"),
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
        with pytest.raises(ConfigError, match="model.prior.spikes must be int"):
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
