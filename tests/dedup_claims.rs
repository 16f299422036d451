//! Claims in a real Redis and a real Redis Cluster: what the stage relies
//! on to handle a message seen on two partitions (or two hosts) at once
//! only once. One claim wins per key, the holder may claim again and renew,
//! nobody else can; the done-mark replaces the claim; an expired claim can
//! be taken; only the holder releases its claim; forgetting a done-mark
//! leaves claims alone. On a cluster every batch spans several slots.

use std::time::Duration;

use sluice::dedup::{ClaimHolder, ClaimOutcome, DedupKey, DedupStore, KeyMaker, RedisStore, RenewOutcome};
use sluice_tests::redis::{Redis, RedisCluster};
use sluice_tests::stage::{StageFile, StageSpec};
use sluice_tests::{keyed_message, rust_plugin};

const LEASE: Duration = Duration::from_secs(30);

fn keys(names: impl IntoIterator<Item = String>) -> Vec<DedupKey> {
    let maker = KeyMaker::new("s", sluice::config::DedupKeyKind::MessageKey, None);
    names
        .into_iter()
        .map(|name| maker.key_for(&keyed_message(&name)).unwrap())
        .collect()
}

/// Twenty keys: on a three-node cluster they land on every node.
fn twenty_keys() -> Vec<DedupKey> {
    keys((0..20).map(|n| format!("message-{n}")))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The whole protocol, on whichever store.
async fn claims_follow_the_protocol(store: &RedisStore) {
    let all = twenty_keys();
    let (first_five, rest) = all.split_at(5);
    let holder = ClaimHolder::new("in/0");
    let other = ClaimHolder::new("in/1");
    let claimed = vec![ClaimOutcome::Claimed; all.len()];

    assert_eq!(store.claim(&all, &holder, LEASE).await.unwrap(), claimed);
    assert_eq!(
        store.claim(&all, &other, LEASE).await.unwrap(),
        vec![ClaimOutcome::HeldElsewhere(holder.to_string()); all.len()],
        "the second holder is refused and told who holds the keys"
    );
    assert_eq!(
        store.claim(&all, &holder, LEASE).await.unwrap(),
        claimed,
        "the holder may claim again"
    );
    assert_eq!(
        store.done(&all).await.unwrap(),
        vec![false; all.len()],
        "a claim is not done"
    );
    assert_eq!(
        store.renew(&all, &holder, LEASE).await.unwrap(),
        vec![RenewOutcome::Renewed; all.len()]
    );
    assert_eq!(
        store.renew(&all, &other, LEASE).await.unwrap(),
        vec![RenewOutcome::Lost; all.len()]
    );

    assert_eq!(
        store.release(&all, &other).await.unwrap(),
        0,
        "only the holder releases"
    );
    assert_eq!(store.release(first_five, &holder).await.unwrap(), 5);
    assert_eq!(
        store.claim(first_five, &other, LEASE).await.unwrap(),
        vec![ClaimOutcome::Claimed; 5]
    );

    store.mark_done(&all).await.unwrap();
    assert_eq!(store.done(&all).await.unwrap(), vec![true; all.len()]);
    assert_eq!(
        store.claim(&all, &other, LEASE).await.unwrap(),
        vec![ClaimOutcome::Done; all.len()],
        "the done-mark replaced every claim"
    );
    assert_eq!(
        store.renew(rest, &holder, LEASE).await.unwrap(),
        vec![RenewOutcome::Done; rest.len()]
    );
    assert_eq!(
        store.release(&all, &holder).await.unwrap(),
        0,
        "a done-mark is not released"
    );

    assert_eq!(store.forget(first_five).await.unwrap(), 5);
    assert_eq!(
        store.claim(first_five, &holder, LEASE).await.unwrap(),
        vec![ClaimOutcome::Claimed; 5]
    );
    assert_eq!(
        store.forget(first_five).await.unwrap(),
        0,
        "forgetting leaves claims alone"
    );

    let crashed = ClaimHolder::new("in/2");
    let short = Duration::from_millis(300);
    assert_eq!(
        store.claim(rest, &crashed, short).await.unwrap(),
        vec![ClaimOutcome::Done; rest.len()]
    );
    let expiring = keys(["expiring".to_owned()]);
    assert_eq!(
        store.claim(&expiring, &crashed, short).await.unwrap(),
        [ClaimOutcome::Claimed]
    );
    assert_eq!(
        store.claim(&expiring, &other, LEASE).await.unwrap(),
        [ClaimOutcome::HeldElsewhere(crashed.to_string())]
    );
    tokio::time::sleep(short + Duration::from_millis(200)).await;
    assert_eq!(
        store.claim(&expiring, &other, LEASE).await.unwrap(),
        [ClaimOutcome::Claimed],
        "an expired claim is free"
    );
    assert_eq!(
        store.renew(&expiring, &crashed, LEASE).await.unwrap(),
        [RenewOutcome::Lost]
    );
}

#[test]
fn claims_in_a_single_redis_follow_the_protocol() {
    let redis = Redis::start();
    let runtime = runtime();
    let _in_runtime = runtime.enter();
    let store =
        RedisStore::open(&[redis.url()], false, Duration::from_secs(60), Duration::from_secs(2)).expect("store opens");
    runtime.block_on(claims_follow_the_protocol(&store));
    // The first five keys ended up claimed again; the rest stayed done.
    assert_eq!(redis.keys("sluice:s:done:key:message-*").len(), 20);
    assert_eq!(
        redis.get("sluice:s:done:key:message-19").as_deref(),
        Some("1"),
        "done-marks keep their old value"
    );
    assert!(
        redis
            .get("sluice:s:done:key:message-0")
            .is_some_and(|value| value.starts_with("claim:")),
        "a claim holds its holder's token"
    );
}

#[test]
fn claims_in_a_redis_cluster_follow_the_protocol_across_slots() {
    let cluster = RedisCluster::start();
    let runtime = runtime();
    let _in_runtime = runtime.enter();
    let store =
        RedisStore::open(&cluster.urls(), true, Duration::from_secs(60), Duration::from_secs(2)).expect("store opens");
    runtime.block_on(claims_follow_the_protocol(&store));
    let per_node = cluster.keys_per_node();
    assert!(
        per_node.iter().filter(|count| **count > 0).count() >= 2,
        "the keys spread over several nodes: {per_node:?}"
    );
}

#[test]
fn a_claim_lease_out_of_bounds_is_refused_naming_the_key() {
    let plugin = rust_plugin("uppercase");
    let toml = StageSpec {
        brokers: "127.0.0.1:9092",
        plugin: &plugin,
        group: "g",
        input: "in",
        output: "out",
        dead_letter: "dlq",
        extra: "[dedup]\nkey = \"message-key\"\n",
    }
    .to_toml();
    let stage = StageFile::new(&toml);
    let run = |lease: &str| {
        let output = std::process::Command::new(sluice_tests::sluice_bin())
            .arg("run")
            .arg(&stage.path)
            .env("SLUICE_CACHE_DIR", stage.dir.path().join("cache"))
            .env("SLUICE_DEDUP_CLAIM_LEASE_MS", lease)
            .output()
            .expect("sluice runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (code, stderr) = run("500");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            "`dedup.claim_lease_ms` must be at least 1000 and at least 3 times dedup.redis_timeout_ms (6000)"
        ) && stderr.contains("got 500"),
        "{stderr}"
    );
    let (code, stderr) = run("7200000");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("`dedup.claim_lease_ms` must be at most 3600000"),
        "{stderr}"
    );
}
