"""Uses every SDK helper, chosen by the message value; the Python twin of
``plugins/rust/testing/sdk-tour``, whose doc lists the commands. The tests
hold the two (and the JavaScript one) to the same output byte for byte.
"""

from sluice_plugin import (
    DeadLetter,
    Filter,
    Handler,
    Output,
    Retry,
    Success,
    Utf8Error,
    config,
    header_text,
    key_text,
    log,
    value_text,
)


class SdkTour(Handler):
    def handle(self, message):
        try:
            command = value_text(message)
        except Utf8Error:
            command = None
        if command is None:
            return Success([Output.from_message(message)])
        log.info(f"sdk-tour: {command}")
        if command == "filter":
            return Filter()
        if command == "retry":
            return Retry("asked to retry")
        if command == "retry-later":
            return Retry("asked to retry later", delay_ms=250)
        if command == "dead-letter":
            return DeadLetter("asked to dead-letter")
        if command == "build":
            output = Output.new("built").to_topic("elsewhere").with_key("k-1").with_header("h", "v")
            return Success([output.with_header("h", b"\xff")])
        if command == "header":
            return Success([Output.new(header_text(message, "trace") or "no trace header")])
        if command == "key":
            try:
                key = key_text(message)
            except Utf8Error:
                key = "key is not text"
            return Success([Output.new("no key" if key is None else key)])
        if command == "config":
            settings = ",".join(f"{key}={value}" for key, value in config.entries())
            return Success([Output.new(f"{config.get_or('greeting', 'no greeting')}; {settings}")])
        return Success([Output.from_message(message)])


WitWorld = SdkTour  # the name componentize-py exports
