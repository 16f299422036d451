"""Sum a stage profile's samples by thread and by the part of the stage
they fall in, from `perf script` (used by scripts/profile-stage).

A sample belongs to the innermost frame of its call chain that names a
part: the allocation under `output_headers` counts as output building, the
copy under wasmtime's lowering as the plugin call. Threads librdkafka owns
(`rdk:*`) and the consumer thread count as theirs whatever they run.

    BENCH_MESSAGES=N python3 scripts/profile-breakdown.py PERF_DATA
"""

import collections
import os
import re
import subprocess
import sys

# (part, pattern on a frame's symbol), innermost match wins.
PARTS = [
    # Guest code is compiled at run time: perf sees it as an address in the
    # process's perf map and cannot unwind past it, so it is matched alone.
    ("plugin call (lowering, guest code, lifting)", re.compile(r"plugin_caller|PluginWorker|wasmtime|cranelift|call_in_order|/perf-[0-9]+\.map")),
    ("producer: enqueue (librdkafka produce)", re.compile(r"SinkProducer|rd_kafka_produce|send_result")),
    ("output records: headers, traceparent", re.compile(r"output_headers|trace_for|TraceParent|produce_outputs|dead_letter_record")),
    ("intake: poll partition queue, record into message, memory budget", re.compile(r"into_message|RecordIntake|take_now|take_waiting|HeldBytes|InFlightBytes|ConsumedRecord|headers_from_raw|PartitionFeed")),
    ("delivery tracking and finishing (futures, counters, offsets)", re.compile(r"on_delivered|complete|PartitionWorker::finish|StageCounters|OffsetTracker|FuturesUnordered|DeliveryFuture|PendingDelivery|settle|oneshot")),
    ("tracing spans and logs", re.compile(r"tracing_subscriber|tracing_core|Instrumented")),
    ("partition worker: other", re.compile(r"PartitionWorker|partition_worker")),
]

# Threads that count as one part whatever they run.
THREADS = [
    ("librdkafka broker threads (fetch and produce requests)", re.compile(r"^rdk:broker")),
    ("delivery reports (rdkafka's producer polling thread)", re.compile(r"^producer pollin")),
    ("librdkafka main thread", re.compile(r"^rdk:main")),
    ("consumer thread (rebalances, commits)", re.compile(r"^sluice-consumer")),
]


def samples(path):
    """Yield (thread name, [frames innermost first]) per sample."""
    script = subprocess.run(
        ["perf", "script", "-i", path, "-F", "comm,tid,ip,sym,dso"],
        capture_output=True, text=True, errors="replace", check=True,
    ).stdout
    for block in script.split("\n\n"):
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        header = lines[0].strip()
        thread = header.rsplit(None, 1)[0] if " " in header else header
        frames = []
        for line in lines[1:]:
            parts = line.strip().split(None, 1)
            frames.append(parts[1] if len(parts) > 1 else "")
        yield thread, frames


def part_of(thread, frames):
    for part, pattern in THREADS:
        if pattern.search(thread):
            return part
    for frame in frames:
        for part, pattern in PARTS:
            if pattern.search(frame):
                return part
    return "tokio scheduling, allocator, kernel (no part above on the stack)"


def main():
    messages = int(os.environ.get("BENCH_MESSAGES", "200000"))
    by_part = collections.Counter()
    by_thread = collections.Counter()
    total = 0
    for thread, frames in samples(sys.argv[1]):
        total += 1
        by_thread[re.sub(r"[0-9]+$", "", thread)] += 1
        by_part[part_of(thread, frames)] += 1
    if not total:
        raise SystemExit("no samples")
    print(f"{total} samples of 1 ms: {1000 * total / messages:.2f} µs of CPU per message ({messages} messages)")
    print("by thread:")
    for thread, count in by_thread.most_common():
        print(f"  {100 * count / total:5.1f}%  {thread}")
    print("by part of the stage:")
    for part, count in by_part.most_common():
        print(f"  {100 * count / total:5.1f}%  {1000 * count / messages:5.2f} µs  {part}")


if __name__ == "__main__":
    main()
