"""Log through the host, which tags every record with the plugin's name and
version and writes it to the stage's log stream.

``print`` also reaches the host's log, one record per line, but without a
level; prefer these functions.
"""

from wit_world.imports import logging as _logging

_Level = _logging.Level


def trace(message: str) -> None:
    """Detail only useful while developing the plugin."""
    _logging.log(_Level.TRACE, message)


def debug(message: str) -> None:
    _logging.log(_Level.DEBUG, message)


def info(message: str) -> None:
    _logging.log(_Level.INFO, message)


def warn(message: str) -> None:
    """Something an operator may want to look at."""
    _logging.log(_Level.WARN, message)


def error(message: str) -> None:
    _logging.log(_Level.ERROR, message)
