"""Messages in, outputs out: the contract's records with the conveniences
that keep handlers short."""

from typing import Optional, Union

try:
    from wit_world.imports import types
except ImportError:  # a world with wasi:http, whose own `types` takes the name
    from wit_world.imports import sluice_plugin_types as types

from .text import decode_utf8

Header = types.Header
Message = types.Message

#: Values, keys and header values may be given as text (encoded as UTF-8) or bytes.
BytesLike = Union[bytes, bytearray, str]


def _as_bytes(data: BytesLike) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


# A record to produce: build one with the class methods below, then chain
# ``to_topic``, ``with_key`` and ``with_header`` as needed. It is the
# generated record class itself with these attached, not a subclass, so a
# returned output is exactly what componentize-py's bindings expect (a few
# per cent faster per batch in the plugin runtime bench).
Output = types.Output


def _new(cls, value: BytesLike) -> "Output":
    """A record with this value, no key and no headers, for the stage's output topic."""
    return cls(None, None, _as_bytes(value), [])


def _from_message(cls, message: Message) -> "Output":
    """The input record passed through unchanged: same key, value and headers."""
    return cls(None, message.key, message.value, list(message.headers))


def _replacing_value(cls, message: Message, value: BytesLike) -> "Output":
    """The input record with a new value: keeps the key (and so the
    partitioning) and the headers, the usual shape of a transform."""
    return cls(None, message.key, _as_bytes(value), list(message.headers))


def _to_topic(self, topic: str) -> "Output":
    """Send this record to ``topic`` instead of the stage's output topic."""
    self.topic = topic
    return self


def _with_key(self, key: BytesLike) -> "Output":
    """Set the record key."""
    self.key = _as_bytes(key)
    return self


def _with_header(self, name: str, value: BytesLike) -> "Output":
    """Append a header (Kafka keeps duplicates and their order)."""
    self.headers.append(Header(name, _as_bytes(value)))
    return self


Output.new = classmethod(_new)
Output.from_message = classmethod(_from_message)
Output.replacing_value = classmethod(_replacing_value)
Output.to_topic = _to_topic
Output.with_key = _with_key
Output.with_header = _with_header


def value_text(message: Message) -> Optional[str]:
    """The value as text; ``None`` for a tombstone. Raises ``Utf8Error``
    when the bytes are not UTF-8."""
    return None if message.value is None else decode_utf8(message.value)


def key_text(message: Message) -> Optional[str]:
    """The key as text; ``None`` when there is no key. Raises ``Utf8Error``
    when the bytes are not UTF-8."""
    return None if message.key is None else decode_utf8(message.key)


def header(message: Message, name: str) -> Optional[bytes]:
    """The value of the first header with this name."""
    return next((found.value for found in message.headers if found.name == name), None)


def header_text(message: Message, name: str) -> Optional[str]:
    """The value of the first header with this name, when it is UTF-8 text."""
    value = header(message, name)
    try:
        return None if value is None else value.decode("utf-8")
    except UnicodeDecodeError:
        return None
