"""Upper-cases each message's value, keeping its key and headers.

A value that is not UTF-8 cannot be upper-cased, and retrying will not
change that, so it goes straight to the dead-letter topic. Tombstones pass
through untouched. Edit ``handle`` to make it yours.
"""

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
