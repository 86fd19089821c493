import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.config import Config, dumps, load_config, parse_override
from vaelab.errors import ConfigError


def test_defaults_are_the_thesis_setting():
    cfg = Config()
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.loss) == (3e-4, 512, "mse")


def test_overrides_are_parsed_as_toml():
    cfg = load_config(None, ["model.widths=[64,32]", "train.optimizer=amsgrad", "train.lr=1e-3"])
    assert cfg.model.widths == [64, 32] and cfg.train.optimizer == "amsgrad"
    assert cfg.train.lr == 1e-3
    assert parse_override("train.epochs=3") == ("train", "epochs", 3)


def test_a_bare_word_for_a_text_key_is_the_text():
    """data.name=2024 names the data set "2024" (it was "must be str, got 2024")."""
    assert load_config(None, ["data.name=2024"]).data.name == "2024"
    assert load_config(None, ["data.name=inf", "train.device=cuda"]).data.name == "inf"
    assert load_config(None, ['data.name="a b"']).data.name == "a b"


def test_int_is_accepted_for_float():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown config key train.epoch"),
        ("trian.epochs=3", r"unknown config section \[trian\]"),
        ("train.epochs=three", "train.epochs = 'three' is not an integer"),
        ("train.lr=.001", r"train.lr = '.001' is not a number \(TOML writes 0.001"),
        ("train.lr=abc", r"train.lr = 'abc' is not a number$"),
        ("train.epochs=true", "train.epochs must be an integer, got true"),
        ("model.widths=[1, 'a']", r"model.widths\[1\] must be an integer"),
        ("epochs=3", "section.key=value"),
    ],
)
def test_bad_keys_and_types_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=0", "train.epochs must be >= 1, got 0"),
        ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
        ("data.limit=-1", "data.limit must be >= 0, got -1"),
        ("data.test_limit=-5", "data.test_limit must be >= 0, got -5"),
        ("train.lr=-0.1", "train.lr must be a finite number >= 0, got -0.1"),
        ("train.lr=nan", "train.lr must be a finite number >= 0, got nan"),
        ("train.lr_decay=0", "train.lr_decay must be a finite number > 0, got 0.0"),
        ("train.threads=-1", "train.threads must be >= 0, got -1"),
        ("train.checkpoint_every=0", "train.checkpoint_every must be >= 1, got 0"),
        ("train.early_stopping=-1", "train.early_stopping must be >= 0, got -1"),
        ("train.test_every=0", "train.test_every must be >= 1, got 0"),
        ("train.seed=-1", r"train.seed must be an integer 0 <= seed < 2\*\*63, got -1"),
        (f"train.seed={2**63}", r"train.seed must be an integer 0 <= seed < 2\*\*63"),
        ("model.bottleneck=0", "model.bottleneck must be >= 1, got 0"),
        ('train.precision="fp16"', "train.precision must be one of auto, fp32, bf16, got 'fp16'"),
        ("model.k=0", "model.k must be >= 1, got 0"),
        ("model.sigma=0", "model.sigma must be a finite number > 0, got 0.0"),
        ("model.beta=-1", "model.beta must be a finite number >= 0, got -1.0"),
        (
            "data.binarize=sometimes",
            "data.binarize must be one of none, dynamic, static, got 'sometimes'",
        ),
        ("model.widths=[64,0]", r"model.widths must be a list of positive integers, got \[64, 0\]"),
        ("model.channels=[-4]", r"model.channels must be a list of positive integers, got \[-4\]"),
        ('data.test_split="train"', "data.split and data.test_split are both 'train'"),
    ],
)
def test_out_of_range_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_range_checks_apply_to_files(tmp_path):
    (tmp_path / "c.toml").write_text("[train]\nepochs = -3\n")
    with pytest.raises(ConfigError, match="train.epochs must be >= 1, got -3"):
        load_config(tmp_path / "c.toml")


def test_file_round_trip(tmp_path):
    cfg = load_config(None, ["model.widths=[10,5]", 'data.name="x"', "train.seed=7"])
    (tmp_path / "c.toml").write_text(dumps(cfg))
    assert load_config(tmp_path / "c.toml") == cfg


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=["Cs"])), st.lists(st.text(max_size=4)))
def test_any_string_survives_the_toml_round_trip(name, classes):
    """Class names come from data sets (folder names, an .npz's classes): a newline, tab,
    quote, backslash or DEL in one must not make the run's config.toml unreadable."""
    import tomllib

    cfg = Config()
    cfg.data.name, cfg.model.classes = name, classes
    back = tomllib.loads(dumps(cfg))
    assert back["data"]["name"] == name and back["model"]["classes"] == classes


def test_unknown_key_in_file(tmp_path):
    (tmp_path / "c.toml").write_text("[model]\nbotleneck = 2\n")
    with pytest.raises(ConfigError, match="model.botleneck"):
        load_config(tmp_path / "c.toml")
    (tmp_path / "bad.toml").write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_shipped_configs_load():
    from pathlib import Path

    for path in sorted((Path(__file__).parents[1] / "configs").glob("*.toml")):
        load_config(path)


def test_shipped_configs_build_their_models():
    """No shipped config (configs/*.toml, the classifier's) sets a key its model would
    ignore (build.check_unused) or is otherwise refused when its model is built."""
    from pathlib import Path

    from vaelab.models.registry import build_model

    root = Path(__file__).parents[1]
    paths = [
        *sorted((root / "configs").glob("*.toml")),
        root / "src" / "vaelab" / "classifier.toml",
    ]
    for path in paths:
        cfg = load_config(path)
        digits = 3 if cfg.data.name == "mnist3" else 1  # composites are 28 x 28·digits
        cfg.model.image_shape = [1, 28, 28 * digits]
        cfg.model.classes = [f"{i:0{digits}d}" for i in range(10**digits)]
        build_model(cfg.model, cfg.train.loss)
