#!/usr/bin/env python3
"""Can this Kafka-protocol broker run an exactly-once consume-transform-produce stage?

Exactly-once stages (issue 18) need a test broker that passes every check;
tansu 0.6.0 fails all but fencing (it has no EndTxn). Run it against a broker
you started, with any Python that has confluent-kafka (the stage bench's venv):
  target/bench-venv/bin/python scripts/probe-transactions.py --bootstrap HOST:PORT
It prints `PASS name: detail` or `FAIL name: detail` per check; exits 0 only if all pass:
  apiversions  ApiVersions lists InitProducerId(22), AddPartitionsToTxn(24),
               AddOffsetsToTxn(25), EndTxn(26) and TxnOffsetCommit(28)
  commit       10 records committed in a transaction; read_committed sees exactly 10
  abort        10 records aborted with abort_transaction(); read_committed sees none,
               but does see a plain marker record written after them
  offsets      20 records consumed in a group; send_offsets_to_transaction + commit;
               the group's committed offsets then sum to 20
  fencing      a 2nd producer with the same transactional.id makes the 1st one's commit
               fail with PRODUCER_FENCED, _FENCED or INVALID_PRODUCER_EPOCH
Every call has a timeout and --deadline is a watchdog: no EndTxn means FAIL lines, not a
hang.  Names get a random suffix per run.  Records are produced one per batch (linger.ms=0,
flush each), as tansu cannot fetch from the middle of a batch.
"""
import argparse, logging, logging.handlers, os, re, threading, time, uuid
from confluent_kafka import (Consumer, KafkaError, KafkaException, OFFSET_BEGINNING,
                             Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

TXN_APIS = {22: 'InitProducerId', 24: 'AddPartitionsToTxn', 25: 'AddOffsetsToTxn',
            26: 'EndTxn', 28: 'TxnOffsetCommit'}
FENCED = {KafkaError.PRODUCER_FENCED, KafkaError._FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
T = 10                        # seconds allowed for any single client call
RUN = uuid.uuid4().hex[:6]
BS = None                     # --bootstrap

class Fail(Exception): pass   # a check failed; the message is the FAIL line's detail

def kerr(e):                  # KafkaException/KafkaError verbatim, else "Type: message"
    err = e.args[0] if isinstance(e, KafkaException) else e
    return repr(err) if isinstance(err, KafkaError) else f'{type(e).__name__}: {e}'

def conf(**kw):               # log_level 0 keeps librdkafka's own logging quiet
    return {'bootstrap.servers': BS, 'log_level': 0, **kw}

def create_topics(*specs):
    admin = AdminClient(conf())   # must stay referenced until the futures resolve
    futures = admin.create_topics([NewTopic(n, num_partitions=p, replication_factor=1)
                                   for n, p in specs], operation_timeout=T, request_timeout=T)
    for f in futures.values():
        f.result(timeout=T + 5)
    time.sleep(0.5)               # let metadata settle

def txn_producer(txid):
    p = Producer(conf(**{'transactional.id': txid, 'linger.ms': 0}))
    p.init_transactions(T)
    return p

def produce_each(p, topic, values, partition=0):
    errs = []
    for v in values:
        p.produce(topic, v, partition=partition, on_delivery=lambda e, _: e and errs.append(e))
        if p.flush(T) or errs:    # flush per record: one record per batch
            raise Fail(f'produce to {topic}: {kerr(errs[0]) if errs else "flush timed out"}')

def txn_call(fn, *args):      # a failing transactional API call fails the check
    try:
        fn(*args)
    except KafkaException as e:
        raise Fail(f'{fn.__name__} failed: {kerr(e)}')

def poll_for(c, want, timeout, settle=1.5):
    """Poll c until `timeout`, or until `settle` s pass with >= `want` messages."""
    got, end, last = [], time.time() + timeout, time.time()
    while time.time() < end and not (len(got) >= want and time.time() - last > settle):
        if (m := c.poll(0.2)) is not None and not m.error():
            got.append(m)
            last = time.time()
    return got

def read_committed(topic, want):
    c = Consumer(conf(**{'group.id': f'probe-reader-{RUN}', 'isolation.level': 'read_committed'}))
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = [m.value() for m in poll_for(c, want, timeout=8)]
    c.close()
    return got

def ten_in_a_txn(kind, commit):
    topic = f'probe-{kind}-{RUN}'
    create_topics((topic, 1))
    p = txn_producer(f'probe-tx-{kind}-{RUN}')
    p.begin_transaction()
    produce_each(p, topic, [b'%s%d' % (kind.encode(), i) for i in range(10)])
    txn_call(p.commit_transaction if commit else p.abort_transaction, T)
    return topic

def check_apiversions():
    buf = logging.handlers.BufferingHandler(10**6)   # debug=feature logs one line per ApiKey
    log = logging.getLogger('probe.apiversions')
    log.addHandler(buf)
    log.setLevel(logging.DEBUG)
    p = Producer(conf(debug='feature', log_level=7, logger=log))
    p.list_topics(timeout=T)
    p.poll(0.5)                   # hands the queued log lines to Python
    seen = {int(k) for r in buf.buffer
            for k in re.findall(r'ApiKey .*\((\d+)\) Versions', r.getMessage())}
    if missing := [f'{n}({k})' for k, n in TXN_APIS.items() if k not in seen]:
        raise Fail(f'not advertised: {", ".join(missing)} ({len(seen)} ApiKeys listed)')
    return 'all five transaction ApiKeys advertised'

def check_commit():
    if len(got := read_committed(ten_in_a_txn('commit', True), 10)) != 10:
        raise Fail(f'read_committed saw {len(got)} records, expected exactly 10')
    return 'read_committed saw exactly 10 committed records'

def check_abort():
    topic = ten_in_a_txn('abort', False)
    produce_each(Producer(conf(**{'linger.ms': 0})), topic, [b'marker'])
    got = read_committed(topic, 1)
    if (aborted := sum(v != b'marker' for v in got)) or b'marker' not in got:
        raise Fail(f'read_committed saw {aborted} aborted records, marker seen: {b"marker" in got}')
    return 'read_committed saw 0 aborted records and the marker written after them'

def check_offsets():
    tin, tout = f'probe-in-{RUN}', f'probe-out-{RUN}'
    create_topics((tin, 2), (tout, 1))
    plain = Producer(conf(**{'linger.ms': 0}))
    for part in (0, 1):           # 10 input records per partition
        produce_each(plain, tin, [b'in%d' % i for i in range(10)], partition=part)
    cconf = conf(**{'group.id': f'probe-group-{RUN}', 'enable.auto.commit': False,
                    'auto.offset.reset': 'earliest', 'isolation.level': 'read_committed'})
    c = Consumer(cconf)
    c.subscribe([tin])
    if len(got := poll_for(c, 20, timeout=30)) != 20:
        raise Fail(f'consumed {len(got)} input records, expected 20')
    p = txn_producer(f'probe-tx-offsets-{RUN}')
    p.begin_transaction()
    produce_each(p, tout, [m.value().upper() for m in got])
    txn_call(p.send_offsets_to_transaction,
             c.position(c.assignment()), c.consumer_group_metadata(), T)
    txn_call(p.commit_transaction, T)
    c.close()                     # a fresh member reads what the group coordinator stored:
    tps = Consumer(cconf).committed([TopicPartition(tin, 0), TopicPartition(tin, 1)], timeout=T)
    if (total := sum(max(tp.offset, 0) for tp in tps)) != 20:
        raise Fail(f'committed offsets sum to {total}, not 20: {[tp.offset for tp in tps]}')
    return 'group committed offsets sum to 20'

def check_fencing():
    topic, txid = f'probe-fence-{RUN}', f'probe-tx-fence-{RUN}'
    create_topics((topic, 1))
    first = txn_producer(txid)
    first.begin_transaction()
    produce_each(first, topic, [b'first-0'])
    txn_producer(txid)            # second producer, same transactional.id
    try:
        first.produce(topic, b'first-after-fence', partition=0)
        first.flush(T)
        first.commit_transaction(T)
    except KafkaException as e:
        if e.args[0].code() in FENCED:
            return f"first producer's commit failed as expected: {kerr(e)}"
        raise Fail(f'first producer failed, but not with a fencing error: {kerr(e)}')
    raise Fail("first producer's commit succeeded after a 2nd producer took its transactional.id")

def main():
    global BS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--bootstrap', required=True, metavar='HOST:PORT')
    ap.add_argument('--deadline', type=float, default=150, help='watchdog, seconds (150)')
    args = ap.parse_args()
    BS = args.bootstrap
    threading.Timer(args.deadline, lambda: (
        print(f'FAIL watchdog: still running after {args.deadline:g} s', flush=True),
        os._exit(2))).start()
    ok = True
    for check in (check_apiversions, check_commit, check_abort, check_offsets, check_fencing):
        label = check.__name__.removeprefix('check_')
        try:
            print(f'PASS {label}: {check()}', flush=True)
        except Exception as e:    # Fail, KafkaException, timeouts: each becomes a FAIL line
            ok = False
            print(f'FAIL {label}: {e if isinstance(e, Fail) else kerr(e)}', flush=True)
    os._exit(0 if ok else 1)      # exit now: stops the watchdog, skips client destructors

if __name__ == '__main__':
    main()
