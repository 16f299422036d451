"""Raises an exception when the value equals the marker (config ``marker``,
default ``TRAP``); passes every other message through. Proves the host turns
an uncaught Python exception into a failed attempt whose reason quotes the
exception, and recovers on a fresh instance.
"""

from sluice_plugin import Handler, Output, Success, config


class MarkerFound(Exception):
    """The message carried the marker value."""


class RaiseOnMarker(Handler):
    def handle(self, message):
        marker = config.get_or("marker", "TRAP")
        if message.value == marker.encode("utf-8"):
            raise MarkerFound(f"found the marker value {marker!r}")
        return Success([Output.from_message(message)])


WitWorld = RaiseOnMarker  # the name componentize-py exports
