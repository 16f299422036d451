"""JSON read and written exactly as a Rust handler does with serde_json
(``preserve_order`` + ``arbitrary_precision``, as the Rust examples use it),
so a Python handler's outputs match the Rust one's byte for byte::

    from sluice_plugin import json_document

    document = json_document.parse(text)  # raises json_document.JsonError
    document["seen"] = True
    output = json_document.dumps(document)

- Numbers are kept as written (a ``Number``), except that an exponent is
  written ``e`` with an explicit sign: ``1E5`` becomes ``1e+5``. Nothing is
  rounded through a float.
- Objects keep their members in input order; a repeated member keeps its
  first position and takes its last value.
- Output is compact, and strings use serde_json's escapes, which are also
  ``json.dumps(ensure_ascii=False)``'s: ``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``
  and ``\\u00XX`` for other control characters; nothing else is escaped.
- Whatever serde_json rejects is rejected: ``NaN`` and ``Infinity``, escapes
  that leave a surrogate unpaired, and nesting 128 or more levels deep.
"""

import json
import re

#: serde_json's recursion limit: arrays and objects may nest this deep, no deeper.
MAX_DEPTH = 127

_EXPONENT = re.compile(r"[eE]([+-]?)")
_SURROGATE = re.compile("[\ud800-\udfff]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class JsonError(ValueError):
    """The text is not a JSON document as serde_json understands one."""


class Number:
    """A JSON number, kept as written (exponent normalised as described above)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = _EXPONENT.sub(lambda sign: "e" + (sign.group(1) or "+"), text)

    def __eq__(self, other):
        return isinstance(other, Number) and other.text == self.text

    def __repr__(self):
        return f"Number({self.text!r})"


def _reject_constant(name: str):
    raise JsonError(f"{name} is not a JSON value")


def parse(text: str):
    """The document in ``text``: dicts, lists, str, ``Number``, bool, None."""
    if _too_deep(text):
        raise JsonError(f"nested more than {MAX_DEPTH} levels deep")
    try:
        document = json.loads(text, parse_int=Number, parse_float=Number, parse_constant=_reject_constant)
    except (json.JSONDecodeError, RecursionError) as error:
        raise JsonError(str(error)) from None
    _check_strings(document)
    return document


def _too_deep(text: str) -> bool:
    """Whether arrays and objects nest more than MAX_DEPTH deep.

    Checked before parsing because json.loads recurses once per level and
    deep enough input exhausts the WebAssembly stack, which no ``except``
    can catch. Brackets inside strings do not count; on malformed input the
    answer may be wrong, but such input is rejected either way.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    depth = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


def _check_strings(value) -> None:
    """Reject strings with an unpaired surrogate, which json.loads accepts
    (from escapes such as ``"\\ud800"``) but serde_json does not."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise JsonError("unpaired surrogate in a string escape")
    elif isinstance(value, dict):
        for key, member in value.items():
            _check_strings(key)
            _check_strings(member)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def dumps(value) -> str:
    """``value`` as compact JSON text."""
    if isinstance(value, Number):
        return value.text
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, list):
        return "[" + ",".join(dumps(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(dumps(key) + ":" + dumps(member) for key, member in value.items()) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


def kind(value) -> str:
    """What sort of JSON value this is, for messages: "an array", "a number", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Number):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
