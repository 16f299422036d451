"""The plugin's own settings: the ``[plugin.config]`` table of the stage
file, or ``--config key=value`` arguments to ``sluice test``."""

from typing import Optional

from wit_world.imports import config as _host


def get(key: str) -> Optional[str]:
    """The value of a setting, or ``None`` when it is not set."""
    return _host.get(key)


def get_or(key: str, default: str) -> str:
    """The value of a setting, or ``default`` when it is not set."""
    value = _host.get(key)
    return default if value is None else value


def entries() -> list[tuple[str, str]]:
    """Every setting as (key, value) pairs, sorted by key."""
    return list(_host.entries())
