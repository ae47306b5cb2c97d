"""The registry of descriptor matchers (``nn`` ...)."""

from __future__ import annotations

from ..registry import Registry

matchers: Registry = Registry("matcher")
