"""The plain Python loop a sluice stage replaces, as the stage bench runs it.

confluent-kafka, the way its documentation writes an at-least-once
transform: consume up to 500 records, upper-case each value, produce it
with the same key and headers, flush, then commit the batch's offsets
synchronously. Timed from the first record consumed to the last batch
committed; prints one JSON line: {"messages": N, "seconds": S,
"cpu_seconds": C}, C being the process's CPU time (every thread) meanwhile.

    python_loop.py BOOTSTRAP GROUP INPUT_TOPIC OUTPUT_TOPIC COUNT
"""

import json
import sys
import time

from confluent_kafka import Consumer, Producer


def main() -> None:
    bootstrap, group, input_topic, output_topic, count = sys.argv[1:6]
    count = int(count)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    consumer.subscribe([input_topic])
    done = 0
    started = None
    while done < count:
        messages = consumer.consume(500, timeout=1.0)
        if not messages:
            continue
        if started is None:
            started = time.monotonic()
            cpu_started = time.process_time()
        for message in messages:
            if message.error() is not None:
                raise SystemExit(f"consume failed: {message.error()}")
            producer.produce(
                output_topic,
                key=message.key(),
                value=message.value().decode("utf-8").upper().encode("utf-8"),
                headers=message.headers(),
            )
        if producer.flush(60) != 0:
            raise SystemExit("records were not acknowledged within 60 s")
        consumer.commit(asynchronous=False)
        done += len(messages)
    seconds = time.monotonic() - started
    cpu_seconds = time.process_time() - cpu_started
    consumer.close()
    print(json.dumps({"messages": done, "seconds": seconds, "cpu_seconds": cpu_seconds}))


if __name__ == "__main__":
    main()
