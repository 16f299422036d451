"""Adds fields to JSON objects and routes each one to the topic it names.

The Python twin of ``plugins/rust/json-enrich``: the same input and config
give the same bytes out, reasons included.

Plugin config:
- ``add.<field> = <value>``: set ``<field>`` to ``<value>`` on every object.
  The value is parsed as JSON when it parses (``add.version = 3`` is a
  number), and is a string otherwise (``add.env = prod``).
- ``route-field`` (default ``route``): the field whose string value names the
  output topic. Without it the record goes to the stage's output topic.

A value that is not a JSON object is dead-lettered: no number of retries
will make it valid. The reason names the problem in words all three
languages share; the parser's own message goes to the debug log.
"""

from sluice_plugin import DeadLetter, Handler, Output, Success, Utf8Error, config, decode_utf8, json_document, log
from sluice_plugin.json_document import JsonError


class JsonEnrich(Handler):
    def handle(self, message):
        if message.value is None:
            return DeadLetter("invalid JSON: the record is a tombstone (no value)")
        try:
            text = decode_utf8(message.value)
        except Utf8Error as error:
            return DeadLetter(f"invalid JSON: the value is not UTF-8: {error}")
        try:
            document = json_document.parse(text)
        except JsonError as error:
            log.debug(f"offset {message.offset}: {error}")
            return DeadLetter("invalid JSON: the value is not well-formed JSON")
        if not isinstance(document, dict):
            return DeadLetter(f"invalid JSON: expected an object, got {json_document.kind(document)}")
        add_configured_fields(document)
        route_field = config.get_or("route-field", "route")
        topic = document.get(route_field)
        if topic is not None and not (isinstance(topic, str) and topic):
            return DeadLetter(
                f"invalid JSON: field `{route_field}` must be a non-empty string naming a topic,"
                f" got {json_document.dumps(topic)}"
            )
        output = Output.replacing_value(message, json_document.dumps(document))
        return Success([output if topic is None else output.to_topic(topic)])


def add_configured_fields(document: dict) -> None:
    for key, text in config.entries():
        if key.startswith("add."):
            try:
                value = json_document.parse(text)
            except JsonError:
                value = text
            document[key.removeprefix("add.")] = value


WitWorld = JsonEnrich  # the name componentize-py exports
