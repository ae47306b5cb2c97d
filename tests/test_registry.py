"""The typed plug-in registry: name and option validation, non-mutating overrides, config types."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from visloc.errors import ConfigError
from visloc.features import extractors
from visloc.matching import matchers
from visloc.registry import Registry, config_to_dict
from visloc.retrieval import global_descriptors


@dataclass(frozen=True)
class ToyConfig:
    size: int = 3
    name: str = "toy"
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class OtherConfig:
    size: int = 3


class Toy:
    def __init__(self, config: ToyConfig) -> None:
        self.config = config


@pytest.fixture
def registry() -> Registry:
    reg: Registry = Registry("widget")
    reg.register("toy", ToyConfig)(Toy)
    reg.register("other", OtherConfig)(lambda c: ("other", c))
    return reg


def test_unknown_name_lists_known_names(registry: Registry) -> None:
    with pytest.raises(ConfigError) as err:
        registry.create("toi")
    msg = str(err.value)
    assert "widget" in msg and "'toi'" in msg and "other, toy" in msg
    with pytest.raises(ConfigError, match="aliked, sift"):
        extractors.create("superpoint")
    with pytest.raises(ConfigError, match="nn"):
        matchers.create("lightglue")
    with pytest.raises(ConfigError, match="vlad"):
        global_descriptors.create("netvlad")


def test_unknown_option_lists_known_options(registry: Registry) -> None:
    with pytest.raises(ConfigError) as err:
        registry.create("toy", sise=4)
    msg = str(err.value)
    assert "['sise']" in msg and "['name', 'size', 'tags']" in msg
    with pytest.raises(ConfigError, match="max_keypoints"):
        extractors.create("sift", max_keypoint=10)
    # also when a preset config is given
    with pytest.raises(ConfigError, match="sise"):
        registry.create("toy", ToyConfig(), sise=4)


def test_defaults_and_overrides(registry: Registry) -> None:
    assert registry.create("toy").config == ToyConfig()
    toy = registry.create("toy", size=7, tags=("a",))
    assert toy.config == ToyConfig(size=7, name="toy", tags=("a",))
    assert registry.config("toy", {"name": "x"}) == ToyConfig(name="x")
    assert registry.names() == ["other", "toy"]


def test_overrides_do_not_mutate_the_preset(registry: Registry) -> None:
    preset = ToyConfig(size=5, name="preset")
    toy = registry.create("toy", preset, size=9)
    assert toy.config == ToyConfig(size=9, name="preset")
    assert toy.config is not preset
    assert preset == ToyConfig(size=5, name="preset")
    assert ToyConfig() == ToyConfig(size=3, name="toy")
    # without overrides the preset itself is used
    assert registry.create("toy", preset).config is preset
    # the real plug-ins as well
    from visloc.features.sift import SIFTConfig

    default = SIFTConfig()
    sift = extractors.create("sift", default, max_keypoints=11)
    assert sift.config.max_keypoints == 11 and default.max_keypoints == SIFTConfig().max_keypoints


def test_config_of_the_wrong_type_is_rejected(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="ToyConfig"):
        registry.create("toy", OtherConfig())
    with pytest.raises(ConfigError, match="ToyConfig"):
        registry.create("toy", {"size": 3})
    with pytest.raises(ConfigError, match="SIFTConfig"):
        extractors.create("sift", ToyConfig())


def test_registration_errors(registry: Registry) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("toy", ToyConfig)(Toy)
    with pytest.raises(TypeError, match="dataclass"):
        registry.register("plain", dict)
    assert registry.entry("toy").config_cls is ToyConfig


def test_config_to_dict() -> None:
    @dataclass(frozen=True)
    class Outer:
        inner: ToyConfig = field(default_factory=ToyConfig)
        k: float = 0.5

    assert config_to_dict(Outer()) == {"inner": {"size": 3, "name": "toy", "tags": ()}, "k": 0.5}
    assert dataclasses.is_dataclass(Outer)


@pytest.mark.parametrize(
    ("reg", "name", "overrides"),
    [
        (global_descriptors, "vlad", {"num_clusters": "8"}),
        (extractors, "sift", {"max_keypoints": "many"}),
    ],
    ids=["vlad-str-int", "sift-str-int"],
)
def test_wrongly_typed_option_value_is_a_config_error(reg: Registry, name: str, overrides: dict) -> None:
    with pytest.raises(ConfigError):
        reg.create(name, **overrides)
