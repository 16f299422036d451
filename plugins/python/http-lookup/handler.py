"""Looks each message up in an HTTP service and outputs the answer,
exactly as the Rust ``http-lookup`` does.

Plugin config: ``lookup-url``, where each message's value is POSTed. The
answer decides the verdict:

- 2xx: success, the response body replaces the value;
- 429 or 5xx, or no answer: retry, after the server's ``Retry-After`` (in
  seconds) when it sends one;
- any other status: dead-letter, since the same request gets the same answer;
- a request the stage's grant refuses: dead-letter, naming the refusal.
"""

from http import HTTPStatus

from sluice_plugin import DeadLetter, Handler, Output, Retry, Success, config, http

REFUSED = ("HttpRequestDenied", "DestinationIpProhibited", "HttpResponseBodySize")


def status_text(status):
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


class HttpLookup(Handler):
    def handle(self, message):
        url = config.get("lookup-url")
        if url is None:
            return DeadLetter("http-lookup: set `lookup-url` under [plugin.config]")
        try:
            response = http.request("POST", url, body=message.value or b"")
        except http.HttpError as error:
            if error.code in REFUSED:
                return DeadLetter(f"lookup refused by the stage: {error.code}")
            return Retry(f"lookup failed: {error}")
        if 200 <= response.status < 300:
            return Success([Output.replacing_value(message, response.body)])
        reason = f"lookup answered {status_text(response.status)}"
        if response.status == 429 or response.status >= 500:
            retry_after = (response.header("retry-after") or "").strip()
            if retry_after.isdigit():
                return Retry(reason, delay_ms=int(retry_after) * 1000)
            return Retry(reason)
        return DeadLetter(reason)


WitWorld = HttpLookup  # the name componentize-py exports
