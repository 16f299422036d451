"""POSTs each message to a webhook with an idempotency key, exactly as the
Rust ``webhook`` does: the shape of a mailer, a notifier or any side effect
that must happen once.

Delivery is at-least-once, so each request carries an ``Idempotency-Key``
that is the same every time the same message is handled: the value of the
header named by ``idempotency-header`` when the message has it, otherwise
the message's coordinates ``<topic>/<partition>/<offset>``.

Plugin config: ``webhook-url``; ``idempotency-header`` (optional). Success
only on 2xx, passing the message through; 408, 429 and 5xx, or no answer:
retry (after ``Retry-After`` when sent); any other status: dead-letter.
"""

from sluice_plugin import DeadLetter, Handler, Output, Retry, Success, config, header, http


def idempotency_key(message):
    name = config.get("idempotency-header")
    if name is not None:
        value = header(message, name)
        if value is not None:
            return value
    return f"{message.topic}/{message.partition}/{message.offset}".encode()


class Webhook(Handler):
    def handle(self, message):
        url = config.get("webhook-url")
        if url is None:
            return DeadLetter("webhook: set `webhook-url` under [plugin.config]")
        headers = [
            ("idempotency-key", idempotency_key(message)),
            ("content-type", b"application/octet-stream"),
        ]
        try:
            response = http.request("POST", url, headers=headers, body=message.value or b"")
        except http.HttpError as error:
            return Retry(f"webhook failed: {error}")
        if 200 <= response.status < 300:
            return Success([Output.from_message(message)])
        reason = f"webhook answered {response.status_line}"
        if response.status in (408, 429) or response.status >= 500:
            retry_after = (response.header("retry-after") or "").strip()
            if retry_after.isdigit():
                return Retry(reason, delay_ms=int(retry_after) * 1000)
            return Retry(reason)
        return DeadLetter(reason)


WitWorld = Webhook  # the name componentize-py exports
