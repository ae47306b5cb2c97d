"""Command-line options derived from the training configs: spellings, names, help, ``--set``, and the
configs that ``visloc train`` builds from a command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from visloc.errors import ConfigError
from visloc.models.backbones import BackboneConfig
from visloc.models.posenet import PoseNetConfig
from visloc.models.relpose import RelPoseConfig
from visloc.training import cli
from visloc.training.config_cli import ConfigOptions, attribute_docs, format_value, parse_value, replace_paths
from visloc.training.data import TransformConfig
from visloc.training.loop import LoopConfig
from visloc.training.pairs import PairSamplingConfig
from visloc.training.posenet import POSENET_OPTIONS, TrainPoseNetConfig, tiny_posenet_config
from visloc.training.relpose import RELPOSE_OPTIONS, TrainRelPoseConfig, tiny_relpose_config
from visloc.training.semantic import LOSS_PRESETS, SEMANTIC_OPTIONS, TrainSemanticConfig

runner = CliRunner()

#: Fields of TrainSemanticConfig that `visloc train semantic` spells with hand-written options, and the one
#: it leaves to Python (the synthetic pair settings follow the model's transform and size unless given).
SEMANTIC_BY_HAND = {"model": ("--transform", "--backbone", "--weights", "--allow-random-init", "--train-fe",
                              "--image-size", "--kernels", "--channels", "--reg-factor"),
                    "loss": ("--loss",), "synthetic": ()}


# --- spellings ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("annotation", "text", "value"),
    [
        (int, "7", 7),
        (float, "1e-3", 1e-3),
        (str, "cuda:1", "cuda:1"),
        (bool, "yes", True),
        (bool, "0", False),
        (tuple[int, ...], "20, 30", (20, 30)),
        (tuple[int, ...], "", ()),
        (tuple[int, int], "2x3", (2, 3)),
        (tuple[str, ...], "kitchen,office", ("kitchen", "office")),
        (str | None, "none", None),
        (str | None, "holdout", "holdout"),
        (float | None, "0.25", 0.25),
        (float | None, "", None),
    ],
)
def test_parse_value(annotation, text: str, value) -> None:
    assert parse_value(annotation, text) == value
    assert parse_value(annotation, format_value(annotation, value)) == value


@pytest.mark.parametrize(
    ("annotation", "text", "message"),
    [
        (int, "1.5", "an integer"),
        (bool, "maybe", "true or false"),
        (tuple[int, ...], "20,x", "comma-separated integers"),
        (tuple[int, int], "3", "ROWSxCOLS"),
        (float | None, "half", "a number"),
    ],
)
def test_parse_value_rejects_bad_text(annotation, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_value(annotation, text)


def test_fields_without_a_spelling_are_refused() -> None:
    @dataclass(frozen=True)
    class Bad:
        """Attributes:
        table: a mapping.
        """

        table: dict[str, int] = dataclasses.field(default_factory=dict)

    with pytest.raises(TypeError, match="no command-line spelling"):
        ConfigOptions(Bad())


# --- names and help -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Inner:
    """Inner settings.

    Attributes:
        seed: the inner seed.
        size: ``(rows, cols)`` of the grid, see :class:`~some.module.Grid`.
    """

    seed: int = 1
    size: tuple[int, int] = (2, 2)


@dataclass(frozen=True)
class Outer:
    """Attributes:
    seed: the outer seed.
    inner: the inner settings.
    flag: a switch that continues
        on the next line.
    """

    seed: int = 0
    inner: Inner = Inner()
    flag: bool = True


def test_attribute_docs_as_plain_text() -> None:
    assert attribute_docs(Inner) == {"seed": "the inner seed.", "size": "(rows, cols) of the grid, see Grid."}
    assert attribute_docs(Outer)["flag"] == "a switch that continues on the next line."


def test_shared_leaf_names_are_prefixed_with_their_parent_unless_renamed() -> None:
    options = ConfigOptions(Outer())
    assert [(o.path, o.name) for o in options.options] == [
        ("seed", "seed"), ("inner.seed", "inner_seed"), ("inner.size", "size"), ("flag", "flag")]
    renamed = ConfigOptions(Outer(), names={"inner.seed": "start", "flag": "flag/plain"})
    assert [o.name for o in renamed.options] == ["seed", "start", "size", "flag"]
    assert renamed.option("flag").off_name == "plain"
    with pytest.raises(ValueError, match="also fields of Outer"):  # replace(seed=...) would be ambiguous
        ConfigOptions(Outer(), names={"inner.seed": "seed", "seed": "outer_seed"})
    with pytest.raises(ValueError, match="rename"):
        ConfigOptions(Outer(), names={"inner.size": "seed"})
    with pytest.raises(ValueError, match="not options"):
        ConfigOptions(Outer(), names={"inner": "x"})
    with pytest.raises(ValueError, match="off switch"):
        ConfigOptions(Outer(), names={"seed": "seed/none"})


def test_a_field_without_documentation_is_refused() -> None:
    @dataclass(frozen=True)
    class Undocumented:
        """Attributes:
        a: documented.
        """

        a: int = 0
        b: int = 0

    with pytest.raises(ValueError, match=r"Undocumented\.b has no entry"):
        ConfigOptions(Undocumented())


def test_replace_by_option_name_by_whole_field_and_by_path() -> None:
    options = ConfigOptions(Outer())
    assert options.replace(Outer(), inner_seed=5, size=(1, 3), flag=False) == Outer(0, Inner(5, (1, 3)), False)
    # a nested config given whole, and an option inside it on top
    assert options.replace(Outer(), inner=Inner(7, (4, 4)), size=(1, 1)) == Outer(0, Inner(7, (1, 1)))
    assert replace_paths(Outer(), {"inner.size": (3, 3), "seed": 2}) == Outer(2, Inner(1, (3, 3)))
    with pytest.raises(ConfigError, match="unknown option"):
        options.replace(Outer(), epochs=3)


def test_help_comes_from_the_config_docstrings() -> None:
    assert RELPOSE_OPTIONS.option("seed").help == attribute_docs(LoopConfig)["seed"]
    assert RELPOSE_OPTIONS.option("pairs_seed").help == attribute_docs(PairSamplingConfig)["seed"]
    assert RELPOSE_OPTIONS.option("backbone").help == attribute_docs(BackboneConfig)["name"]
    assert "correlation" in RELPOSE_OPTIONS.option("head").help


# --- the training commands ------------------------------------------------------------------------------
def _leaf_paths(config, prefix: str = "") -> list[str]:
    """Dotted paths of the leaf fields of a config (written independently of visloc.training.config_cli)."""
    out = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out += (_leaf_paths(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value)
                else [prefix + f.name])
    return out


def _flags(command_name: str) -> set[str]:
    command = typer.main.get_command(cli.train_app).commands[command_name]  # type: ignore[attr-defined]
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


@pytest.mark.parametrize(
    ("command", "options", "config"),
    [("relpose", RELPOSE_OPTIONS, TrainRelPoseConfig()), ("posenet", POSENET_OPTIONS, TrainPoseNetConfig()),
     ("semantic", SEMANTIC_OPTIONS, TrainSemanticConfig())],
)
def test_every_leaf_field_of_a_training_config_has_an_option(command: str, options: ConfigOptions, config) -> None:
    flags = _flags(command)
    by_hand = SEMANTIC_BY_HAND if command == "semantic" else {}
    names = {o.path: o.name for o in options.options}
    for path in _leaf_paths(config):
        if path.split(".")[0] in by_hand:
            assert set(by_hand[path.split(".")[0]]) <= flags
            continue
        assert path in names, f"{command}: no option for {path}"
        assert "--" + names[path].replace("_", "-") in flags, path
    assert {"--set", "--out"} <= flags


def test_option_names_of_today_are_kept() -> None:
    assert {"--backbone", "--weights", "--allow-random-init", "--pool-grid", "--exclude-scene", "--pairs-per-scene",
            "--pairs-seed", "--train-pairs", "--val-pairs", "--random-crop", "--centre-crop", "--batch-size",
            "--epochs", "--milestones", "--seed", "--num-workers", "--no-progress", "--cache-images", "--resume",
            "--data", "--out"} <= _flags("relpose")
    assert {"--scene", "--hidden", "--dropout", "--beta", "--val-split"} <= _flags("posenet")
    assert {"--stage", "--init", "--data", "--pairs", "--class", "--flips", "--no-flips", "--synthetic-image",
            "--synthetic-length", "--val-fraction", "--random-crop", "--no-random-crop"} <= _flags("semantic")


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Replaces the training entry points: the configs the commands build land here."""
    seen: dict = {}

    def capture(name: str):
        def train(*args, **kwargs):
            seen[name] = {"args": args, **kwargs}
            return {}
        return train

    monkeypatch.setattr("visloc.training.relpose.train_relpose", capture("relpose"))
    monkeypatch.setattr("visloc.training.posenet.train_posenet", capture("posenet"))
    monkeypatch.setattr("visloc.training.semantic.train_semantic", capture("semantic"))
    monkeypatch.setattr(cli, "_report", lambda metrics: None)
    return seen


def invoke(*args: str):
    result = runner.invoke(cli.train_app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_relpose_command_line_gives_the_config_written_in_python(captured: dict) -> None:
    invoke("relpose", "--data", "d", "--out", "o")
    assert captured["relpose"]["args"] == (Path("d"), Path("o"), TrainRelPoseConfig())
    invoke("relpose", "--data", "d", "--out", "o", "--backbone", "tiny", "--weights", "none", "--allow-random-init",
           "--head", "correlation", "--hidden", "256", "--dropout", "0.1", "--pool-grid", "2x2",
           "--correlation-grid", "7x7", "--val-split", "none", "--exclude-scene", "kitchen", "--exclude-scene",
           "office", "--min-overlap", "0.5", "--pairs-per-scene", "12", "--pairs-seed", "3", "--train-pairs",
           "p.txt", "--resize", "128", "--crop", "112", "--centre-crop", "--epochs", "5", "--milestones", "2,4",
           "--seed", "7", "--no-progress", "--cache-images", "--resume", "--set", "loop.lr=0.01", "--set",
           "pairs.grid_step=4")
    expected = TrainRelPoseConfig(
        model=RelPoseConfig(BackboneConfig("tiny", "none", allow_random_init=True), head="correlation", hidden=256,
                            dropout=0.1, pool_grid=(2, 2), correlation_grid=(7, 7)),
        val_split=None, exclude_scenes=("kitchen", "office"),
        pairs=PairSamplingConfig(min_overlap=0.5, max_pairs_per_scene=12, seed=3, grid_step=4),
        train_pairs_file="p.txt", transform=TransformConfig(resize=128, crop=112, random_crop=False),
        cache_images=True,
        loop=LoopConfig(epochs=5, batch_size=64, lr=0.01, milestones=(2, 4), seed=7, num_workers=2, progress=False),
    )
    assert captured["relpose"] == {"args": (Path("d"), Path("o"), expected), "resume": True}


def test_posenet_command_line_gives_the_config_written_in_python(captured: dict) -> None:
    invoke("posenet", "--data", "d", "--out", "o", "--scene", "office", "--backbone", "tiny", "--hidden", "32",
           "--dropout", "0", "--val-split", "test", "--jitter", "0", "--batch-size", "8", "--milestones", "",
           "--device", "cpu", "--set", "val_every=4", "--set", "loop.amp=true")
    expected = TrainPoseNetConfig(
        model=PoseNetConfig(BackboneConfig("tiny"), hidden=32, dropout=0.0), val_split="test", val_every=4,
        transform=TransformConfig(jitter=0.0),
        loop=LoopConfig(epochs=30, batch_size=8, milestones=(), device="cpu", num_workers=2, amp=True),
    )
    assert captured["posenet"] == {"args": (Path("d"), Path("o"), "office", expected), "resume": False}


def test_semantic_command_line_gives_the_config_written_in_python(captured: dict) -> None:
    invoke("semantic", "--out", "o", "--stage", "weak", "--init", "pre/model.pt", "--data", "willow", "--class",
           "cup(B)", "--class", "bird(A)", "--no-flips", "--loss", "pub1", "--epochs", "3", "--lr", "2e-4",
           "--milestones", "2", "--val-fraction", "0.2", "--cache-images")
    expected = TrainSemanticConfig(
        stage="weak", init_from="pre/model.pt", data_root="willow", classes=("cup(B)", "bird(A)"),
        include_flips=False, loss=LOSS_PRESETS["pub1"], val_fraction=0.2, cache_images=True,
        loop=LoopConfig(epochs=3, batch_size=16, lr=2e-4, milestones=(2,), seed=1),
    )
    assert captured["semantic"] == {"args": (Path("o"), expected), "resume": False}


def test_set_with_an_unknown_key_is_a_usage_error_listing_the_valid_keys(captured: dict) -> None:
    result = runner.invoke(cli.train_app, ["relpose", "--data", "d", "--out", "o", "--set", "loop.epoch=3"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "unknown key 'loop.epoch'" in result.output
    text = " ".join(result.output.replace("│", " ").split())
    for key in RELPOSE_OPTIONS.paths:
        assert key in text, key
    assert "relpose" not in captured
    result = runner.invoke(cli.train_app, ["relpose", "--data", "d", "--out", "o", "--set", "epochs"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [(("--milestones", "2,x"), "comma-separated integers"), (("--pool-grid", "3"), "ROWSxCOLS"),
     (("--set", "loop.lr=fast"), "loop.lr: expected a number")],
)
def test_bad_values_are_usage_errors(captured: dict, args: tuple[str, ...], message: str) -> None:
    result = runner.invoke(cli.train_app, ["relpose", "--data", "d", "--out", "o", *args])
    assert result.exit_code == 2 and message in result.output
    assert "relpose" not in captured


def test_tiny_configs_take_options_by_name() -> None:
    config = tiny_relpose_config(epochs=4, crop=64, resize=72, pairs_seed=2, random_crop=False)
    assert config.transform == TransformConfig(resize=72, crop=64, random_crop=False)
    assert config.loop == dataclasses.replace(TrainRelPoseConfig().loop, epochs=4, batch_size=32)
    assert config.pairs == PairSamplingConfig(seed=2) and config.model.backbone.name == "tiny"
    assert tiny_posenet_config(seed=3).loop.seed == 3
    with pytest.raises(ConfigError, match="unknown option"):
        tiny_relpose_config(epoch=4)


def test_the_config_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, visloc.training.config_cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

