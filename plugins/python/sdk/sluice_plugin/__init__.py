"""Write sluice message handlers in Python.

A plugin is a class with a ``handle`` method that turns a message into a
verdict, built into a WebAssembly component with componentize-py. This
package gives handlers the shape of the Rust SDK (``plugins/sdk``)::

    from sluice_plugin import DeadLetter, Handler, Output, Success, Utf8Error, value_text

    class Uppercase(Handler):
        def handle(self, message):
            try:
                text = value_text(message)
            except Utf8Error as error:
                return DeadLetter(f"value is not valid UTF-8: {error}")
            if text is None:
                return Success([Output.from_message(message)])
            return Success([Output.replacing_value(message, text.upper())])

    WitWorld = Uppercase  # the name componentize-py exports

``Handler`` exports both ``handle`` and ``handle-batch``; override
``handle_batch`` only to share work across a batch. ``scripts/build-plugins``
builds every ``plugins/python/<name>/handler.py`` with this package on the
path.
"""

from wit_world import WitWorld as _WitWorld

from . import config, json_document, log
from .records import Header, Message, Output, header, header_text, key_text, value_text
from .text import Utf8Error, decode_utf8
from .verdicts import DeadLetter, Filter, Retry, Success, Verdict

__all__ = [
    "DeadLetter",
    "Filter",
    "Handler",
    "Header",
    "Message",
    "Output",
    "Retry",
    "Success",
    "Utf8Error",
    "Verdict",
    "config",
    "decode_utf8",
    "header",
    "header_text",
    "json_document",
    "key_text",
    "log",
    "value_text",
]


class Handler(_WitWorld):
    """What a plugin author subclasses: ``handle`` decides one message's fate.

    The host keeps one instance per worker and may recreate it at any time
    (after an exception, or when a new plugin version is swapped in), so state
    kept on the instance or in module globals is a cache, never a source of
    truth. An exception raised by ``handle`` counts as a failed attempt, like
    a retry, with the exception text in the reason.
    """

    def handle(self, message: Message) -> Verdict:
        raise NotImplementedError("a sluice handler must define handle(self, message)")

    def handle_batch(self, messages: list[Message]) -> list[Verdict]:
        """One verdict per message, in order; the default calls ``handle`` on each."""
        return [self.handle(message) for message in messages]
