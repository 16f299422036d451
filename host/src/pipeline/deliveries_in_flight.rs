//! A worker's records under way to the broker, and which of its messages
//! they belong to.
//!
//! Every record a worker produces carries a token naming its message's
//! entry here; the producer reports each answer on the worker's one
//! channel. A message's delivery is settled once all its records are
//! answered, and the worker takes every settled delivery at once: one
//! wake-up for a burst of acknowledgements instead of a future per record.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use crate::kafka::{DeliveryReport, DeliveryRoute, FailedDelivery, OutgoingRecord, SinkProducer};

/// How many reports one wake-up takes off the channel at most.
const REPORTS_PER_WAKE: usize = 512;

/// A delivery whose records are all answered: `failed` holds the records
/// the broker did not take (empty when every one was acknowledged).
pub(super) struct Settled<T> {
    pub(super) item: T,
    pub(super) failed: Vec<FailedDelivery>,
}

struct Waiting<T> {
    item: T,
    /// Records not answered yet.
    outstanding: usize,
    failed: Vec<FailedDelivery>,
}

/// Deliveries under way for one worker, each an `item` (what the worker
/// needs back to finish the message) and the records sent for it.
pub(super) struct DeliveriesInFlight<T> {
    producer: Arc<SinkProducer>,
    route: DeliveryRoute,
    reports: UnboundedReceiver<DeliveryReport>,
    waiting: HashMap<u64, Waiting<T>>,
    settled: Vec<Settled<T>>,
    next_token: u64,
    buffer: Vec<DeliveryReport>,
}

impl<T> DeliveriesInFlight<T> {
    pub(super) fn new(producer: Arc<SinkProducer>) -> Self {
        let (route, reports) = producer.route();
        DeliveriesInFlight {
            producer,
            route,
            reports,
            waiting: HashMap::new(),
            settled: Vec::new(),
            next_token: 0,
            buffer: Vec::with_capacity(REPORTS_PER_WAKE),
        }
    }

    /// Deliveries not yet taken back by [`DeliveriesInFlight::next_settled`].
    pub(super) fn len(&self) -> usize {
        self.waiting.len() + self.settled.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A delivery with nothing to send (the plugin filtered the message):
    /// settled at once, but taken back in turn like any other.
    pub(super) fn settle_now(&mut self, item: T) {
        self.settled.push(Settled {
            item,
            failed: Vec::new(),
        });
    }

    /// Enqueue `records` for `item`, waiting while the producer's queue is
    /// full. `None` when told to stop first: records already enqueued are
    /// still produced, but their answers are ignored and the message stays
    /// unfinished, to be consumed again.
    pub(super) async fn send(&mut self, item: T, records: &[OutgoingRecord], stop: &CancellationToken) -> Option<()> {
        let token = self.next_token;
        self.next_token += 1;
        let mut outstanding = 0;
        let mut failed = Vec::new();
        for record in records {
            if stop.is_cancelled() {
                return None;
            }
            let enqueue = self.producer.enqueue_routed(record, &self.route, token);
            // The queue almost always has room: then the record is enqueued
            // without setting up the race against the stop signal. Dropping
            // the attempt when the queue is full loses nothing; the record
            // is ours.
            let enqueued = match enqueue.now_or_never() {
                Some(enqueued) => enqueued,
                None => tokio::select! {
                    biased;
                    _ = stop.cancelled() => return None,
                    enqueued = self.producer.enqueue_routed(record, &self.route, token) => enqueued,
                },
            };
            match enqueued {
                Ok(()) => outstanding += 1,
                Err(refused) => failed.push(*refused),
            }
        }
        if outstanding == 0 {
            self.settled.push(Settled { item, failed });
        } else {
            self.waiting.insert(
                token,
                Waiting {
                    item,
                    outstanding,
                    failed,
                },
            );
        }
        Some(())
    }

    /// Every delivery settled by now, waiting for at least one. Never
    /// resolves while nothing is in flight. Cancel-safe: a report taken off
    /// the channel is applied before this yields again.
    pub(super) async fn next_settled(&mut self) -> Vec<Settled<T>> {
        loop {
            if !self.settled.is_empty() {
                return std::mem::take(&mut self.settled);
            }
            if self.waiting.is_empty() {
                return std::future::pending().await;
            }
            // The channel cannot close: `self.route` is a sender.
            self.reports.recv_many(&mut self.buffer, REPORTS_PER_WAKE).await;
            let mut reports = std::mem::take(&mut self.buffer);
            for report in reports.drain(..) {
                self.apply(report);
            }
            self.buffer = reports;
        }
    }

    fn apply(&mut self, report: DeliveryReport) {
        // An unknown token is a record of a send that was told to stop.
        let Entry::Occupied(mut entry) = self.waiting.entry(report.token) else {
            return;
        };
        let waiting = entry.get_mut();
        waiting.outstanding -= 1;
        if let Some(failure) = report.failure {
            waiting.failed.push(*failure);
        }
        if waiting.outstanding == 0 {
            let Waiting { item, failed, .. } = entry.remove();
            self.settled.push(Settled { item, failed });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdkafka::ClientConfig;

    use super::*;
    use crate::kafka::{DeliveryFailureKind, EmbeddedCluster};

    fn producer(cluster: &EmbeddedCluster) -> Arc<SinkProducer> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "3000")
            .set("message.max.bytes", "10000");
        Arc::new(SinkProducer::new(&config).expect("producer"))
    }

    fn record(topic: &str, value: &str) -> OutgoingRecord {
        OutgoingRecord {
            topic: topic.to_owned(),
            key: None,
            value: Some(value.as_bytes().to_vec()),
            headers: vec![("h".to_owned(), b"v".to_vec())],
        }
    }

    /// Every delivery in flight, once settled, by its item.
    async fn settle_all(in_flight: &mut DeliveriesInFlight<&'static str>) -> Vec<Settled<&'static str>> {
        let mut settled = Vec::new();
        while !in_flight.is_empty() {
            let ready = tokio::time::timeout(Duration::from_secs(20), in_flight.next_settled())
                .await
                .expect("deliveries settle");
            settled.extend(ready);
        }
        settled.sort_by_key(|settled| settled.item);
        settled
    }

    #[tokio::test]
    async fn a_delivery_settles_once_every_record_is_answered() {
        let cluster = EmbeddedCluster::start(&["out"], 2).expect("cluster");
        let mut in_flight = DeliveriesInFlight::new(producer(&cluster));
        let stop = CancellationToken::new();
        let three: Vec<OutgoingRecord> = (0..3).map(|n| record("out", &n.to_string())).collect();
        in_flight.send("a-three", &three, &stop).await.expect("not stopped");
        in_flight
            .send("b-one", &[record("out", "x")], &stop)
            .await
            .expect("not stopped");
        in_flight.settle_now("c-none");
        assert_eq!(in_flight.len(), 3);

        let settled = settle_all(&mut in_flight).await;
        let items: Vec<&str> = settled.iter().map(|settled| settled.item).collect();
        assert_eq!(items, ["a-three", "b-one", "c-none"]);
        assert!(settled.iter().all(|settled| settled.failed.is_empty()));
    }

    #[tokio::test]
    async fn a_refused_record_comes_back_with_its_delivery() {
        let cluster = EmbeddedCluster::start(&["out"], 1).expect("cluster");
        let mut in_flight = DeliveriesInFlight::new(producer(&cluster));
        let stop = CancellationToken::new();
        let too_large = "x".repeat(20_000);
        let records = [record("out", "fine"), record("out", &too_large)];
        in_flight.send("mixed", &records, &stop).await.expect("not stopped");

        let settled = settle_all(&mut in_flight).await;
        assert_eq!(settled.len(), 1);
        let [failed] = settled[0].failed.as_slice() else {
            panic!("one record fails: {:?}", settled[0].failed.len());
        };
        assert_eq!(failed.record, records[1], "the failed record is handed back whole");
        assert_eq!(failed.error.kind, DeliveryFailureKind::RecordTooLarge);
    }

    #[tokio::test]
    async fn a_stopped_send_leaves_nothing_in_flight() {
        let cluster = EmbeddedCluster::start(&["out"], 1).expect("cluster");
        let mut in_flight = DeliveriesInFlight::new(producer(&cluster));
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(in_flight.send("stopped", &[record("out", "x")], &stop).await.is_none());
        assert!(
            in_flight.is_empty(),
            "the message stays unfinished, to be consumed again"
        );
    }
}
