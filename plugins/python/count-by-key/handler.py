"""Keeps a running count per message key in the stage's key-value store
and outputs it, exactly as the Rust ``count-by-key`` does.

Each message with a key ``k`` outputs one record: key ``k``, value the
count of messages with that key so far, as decimal text. The entry under
``count:k`` (``count-hex:`` and the key in hex when it is not UTF-8) holds
``<count> <partition> <offset>``: the count and the message that last
raised it, so a message delivered again (after a crash, before its offset
was committed) outputs the stored count instead of counting twice.

A message without a key is dead-lettered; a store failure is retried; a
bucket the stage does not grant is dead-lettered, naming it. Plugin config:
``bucket`` (default ``default``).
"""

from sluice_plugin import DeadLetter, Handler, Output, Retry, Success, config, keyvalue


def entry_key(key):
    try:
        return "count:" + key.decode("utf-8")
    except UnicodeDecodeError:
        return "count-hex:" + key.hex()


def parse_entry(stored):
    """``(count, partition, offset)``, or ``None`` for anything else."""
    try:
        fields = stored.decode("utf-8").split(" ")
        if len(fields) != 3:
            return None
        count, partition, offset = (int(field) for field in fields)
        return count, partition, offset
    except (UnicodeDecodeError, ValueError):
        return None


def count(bucket_name, key, message):
    bucket = keyvalue.open(bucket_name)
    name = entry_key(key)
    stored = bucket.get(name)
    entry = parse_entry(stored) if stored is not None else None
    if entry is not None and entry[1] == message.partition and entry[2] >= message.offset:
        return entry[0]
    total = (entry[0] if entry is not None else 0) + 1
    bucket.set(name, f"{total} {message.partition} {message.offset}".encode())
    return total


class CountByKey(Handler):
    def handle(self, message):
        if message.key is None:
            return DeadLetter("count-by-key: the message has no key to count it under")
        bucket_name = config.get_or("bucket", "default")
        try:
            total = count(bucket_name, message.key, message)
        except keyvalue.StoreError as error:
            if error.kind == "other":
                return Retry(f"count-by-key: the store failed: {error.reason}")
            return DeadLetter(f"count-by-key: the stage does not grant bucket `{bucket_name}`")
        return Success([Output.replacing_value(message, str(total))])


WitWorld = CountByKey  # the name componentize-py exports
