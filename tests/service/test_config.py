"""The server's settings refuse values it cannot run with."""

from __future__ import annotations

import math

import pytest

from visloc.errors import ConfigError
from visloc.service.config import ServiceConfig


@pytest.mark.parametrize(("field", "value"), [
    ("workers", 0), ("workers", 1.5), ("workers", True), ("queue_size", -1), ("max_body_bytes", 0),
    ("max_pixels", -5), ("timeout_s", 0.0), ("timeout_s", math.nan), ("timeout_s", math.inf), ("retry_after_s", 0),
    ("max_retrieve", 0), ("token", ""), ("token", " padded "),
])
def test_bad_settings_are_config_errors(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        ServiceConfig(**{field: value})


def test_capacity_and_the_token_stays_out_of_repr() -> None:
    config = ServiceConfig(workers=2, queue_size=3, token="secret")
    assert config.capacity == 5 and "secret" not in repr(config)
    assert ServiceConfig(queue_size=0).capacity == 1
