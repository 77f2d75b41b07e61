"""Fixtures shared by several test modules (each defined beside the rig it builds)."""

from __future__ import annotations

from .assist_harness import make  # noqa: F401 (the decision-assist rig's fixture, for the test_assist* modules)
