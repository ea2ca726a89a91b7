"""The dashboard's settings: DASHBOARD_ENV_FILE names the env file, DASHBOARD_* override."""

from __future__ import annotations

import os

from streaming.kernel.settings import Settings, load_settings


def dashboard_settings() -> Settings:
    """Settings from DASHBOARD_ENV_FILE if set, else the usual ENV_FILE / .env, then the environment."""
    return load_settings(os.environ.get("DASHBOARD_ENV_FILE") or None)
