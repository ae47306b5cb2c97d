"""Estimator plug-ins: registry, configs (dotted overrides), the checks they make on a map."""

from __future__ import annotations

from pathlib import Path

import pytest

from visloc.errors import ConfigError
from visloc.localization import (
    EssentialConfig,
    LocalizeConfig,
    Localizer,
    Map,
    PnPConfig,
    RelPoseEstimatorConfig,
    UnifiedConfig,
    estimator_config,
    estimators,
)


def test_every_method_is_a_registered_plugin_with_its_own_config() -> None:
    assert estimators.names() == ["essential", "pnp", "relpose", "unified"]
    assert estimators.entry("pnp").config_cls is PnPConfig
    assert estimators.entry("essential").config_cls is EssentialConfig
    assert estimators.entry("relpose").config_cls is RelPoseEstimatorConfig
    assert estimators.entry("unified").config_cls is UnifiedConfig


def test_relpose_defaults_to_the_best_measured_fusion_and_keeps_the_paper_one_option_away() -> None:
    assert RelPoseEstimatorConfig().fusion == "metric" and UnifiedConfig().relpose.fusion == "metric"
    assert estimator_config("relpose", {"fusion": "original"}).fusion == "original"
    unified = estimator_config("unified", {"relpose.fusion": "original", "gate_m": 2.0})
    assert unified.relpose.fusion == "original" and unified.gate_m == 2.0 and unified.pnp == PnPConfig()
    with pytest.raises(ConfigError, match="fusion must be one of"):
        RelPoseEstimatorConfig(fusion="bogus")


def test_unknown_options_and_mismatched_configs_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown option 'gate' for UnifiedConfig"):
        estimator_config("unified", {"gate": 1})
    with pytest.raises(ConfigError, match="has no option"):
        estimator_config("unified", {"gate_m.x": 1})
    with pytest.raises(ConfigError, match="unknown pose estimator 'pnpp'"):
        LocalizeConfig("pnpp")
    with pytest.raises(ConfigError, match="takes a PnPConfig"):
        LocalizeConfig("pnp", EssentialConfig())


def test_auto_picks_pnp_on_a_map_with_points(tiny_map: Path) -> None:
    localizer = Localizer(Map(tiny_map))
    assert localizer.method == "pnp" and localizer.points_only
    essential = Localizer(Map(tiny_map), LocalizeConfig("essential", EssentialConfig(min_inliers=20)))
    assert essential.estimator.config.min_inliers == 20 and not essential.points_only
