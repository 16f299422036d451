"""Looks one field of each JSON message up at an HTTP service and adds the
answer to the message, exactly as the Rust ``enrich-http`` does: the same
input, config and answers give the same bytes out and the same reasons.

Plugin config:

- ``lookup-url``: the service. The field's value is appended as one
  percent-encoded path segment.
- ``field`` (default ``id``): the member looked up, a string or a number.
- ``into`` (default ``lookup``): the member the answer, which must be JSON,
  is stored under.

The answer decides the verdict:

- 2xx: success, the message with the answer added;
- 429 or 5xx, or no answer: retry, after the server's ``Retry-After`` (in
  seconds) when it sends one;
- 404: dead-letter, naming the value that was not found;
- any other status, or an answer that is not JSON: dead-letter;
- a request the stage's grant refuses: dead-letter, naming the refusal.
"""

from urllib.parse import quote

from sluice_plugin import DeadLetter, Handler, Output, Retry, Success, Utf8Error, config, decode_utf8, http, log
from sluice_plugin import json_document
from sluice_plugin.json_document import JsonError, Number

REFUSED = ("HttpRequestDenied", "DestinationIpProhibited", "HttpResponseBodySize")


class NotAnObject(Exception):
    """Why the message is dead-lettered before any request."""


def json_object(message):
    """The message's value as a JSON object, in the words json-enrich uses."""
    if message.value is None:
        raise NotAnObject("invalid JSON: the record is a tombstone (no value)")
    try:
        text = decode_utf8(message.value)
    except Utf8Error as error:
        raise NotAnObject(f"invalid JSON: the value is not UTF-8: {error}") from None
    try:
        document = json_document.parse(text)
    except JsonError as error:
        log.debug(f"offset {message.offset}: {error}")
        raise NotAnObject("invalid JSON: the value is not well-formed JSON") from None
    if not isinstance(document, dict):
        raise NotAnObject(f"invalid JSON: expected an object, got {json_document.kind(document)}")
    return document


class EnrichHttp(Handler):
    def handle(self, message):
        base = config.get("lookup-url")
        if base is None:
            return DeadLetter("enrich-http: set `lookup-url` under [plugin.config]")
        field = config.get_or("field", "id")
        into = config.get_or("into", "lookup")
        try:
            document = json_object(message)
        except NotAnObject as reason:
            return DeadLetter(str(reason))
        if field not in document:
            return DeadLetter(f"enrich-http: field `{field}` is missing")
        value = document[field]
        if isinstance(value, Number):
            looked_up = value.text
        elif isinstance(value, str):
            looked_up = value
        else:
            return DeadLetter(
                f"enrich-http: field `{field}` must be a string or a number to look up,"
                f" got {json_document.dumps(value)}"
            )
        subject = f"{field} {json_document.dumps(value)}"
        url = base.rstrip("/") + "/" + quote(looked_up, safe="")
        try:
            response = http.request("GET", url)
        except http.HttpError as error:
            if error.code in REFUSED:
                return DeadLetter(f"lookup refused by the stage: {error.code}")
            return Retry(f"lookup failed: {error}")
        if 200 <= response.status < 300:
            try:
                found = json_document.parse(response.body.decode("utf-8"))
            except (UnicodeDecodeError, JsonError):
                return DeadLetter(f"lookup of {subject} answered {response.status_line} with a body that is not JSON")
            document[into] = found
            return Success([Output.replacing_value(message, json_document.dumps(document))])
        if response.status == 404:
            return DeadLetter(f"lookup of {subject} found nothing ({response.status_line})")
        reason = f"lookup of {subject} answered {response.status_line}"
        if response.status == 429 or response.status >= 500:
            retry_after = (response.header("retry-after") or "").strip()
            if retry_after.isdigit():
                return Retry(reason, delay_ms=int(retry_after) * 1000)
            return Retry(reason)
        return DeadLetter(reason)


WitWorld = EnrichHttp  # the name componentize-py exports
