//! The leader lease on a real nats-server: one holder at a time, a successor once the holder
//! stops renewing or resigns, a deposed holder learns it on its next renewal, and every new
//! leader has a higher term.

use async_nats::jetstream::{self, stream::StorageType};
use retailflow::bus::lease::{Lease, LeaseConfig, Role};
use retailflow::testing::*;
use std::time::Duration;

fn lease_config(instance: &str) -> LeaseConfig {
    LeaseConfig {
        bucket: "lease_test".into(),
        key: "side-effects".into(),
        instance: instance.into(),
        lease: Duration::from_secs(2),
        replicas: 1,
        storage: StorageType::Memory,
    }
}

async fn open(js: &jetstream::Context, instance: &str) -> Lease {
    Lease::open(js, &lease_config(instance))
        .await
        .expect("lease bucket opens")
}

/// Rounds of `lease` until it leads, at most `limit`; the term it won.
async fn until_leader(lease: &mut Lease, limit: Duration) -> Option<u64> {
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if let Role::Leader { term } = lease.round().await {
            return Some(term);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_successor_when_it_stops() {
    let server = nats();
    let js = jetstream::new(client(&server.url()).await);
    let mut a = open(&js, "replica-a").await;
    let mut b = open(&js, "replica-b").await;

    let Role::Leader { term: first } = a.round().await else {
        panic!("the first candidate takes a free lease");
    };
    assert_eq!(
        b.round().await,
        Role::Follower {
            leader: Some("replica-a".into())
        },
        "the second follows and names the leader"
    );
    // Renewals keep it: for longer than a lease, b never gets in.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        assert_eq!(a.round().await, Role::Leader { term: first });
        assert!(!b.round().await.leads(), "two leaders at once");
        tokio::time::sleep(a.interval()).await;
    }

    // a stops renewing (as if killed): b takes over once a's last write ages out.
    let stopped = tokio::time::Instant::now();
    let second = until_leader(&mut b, Duration::from_secs(10))
        .await
        .expect("a successor takes the lease once the holder stops renewing");
    assert!(
        stopped.elapsed() >= Duration::from_millis(1000),
        "the lease was taken before it could have run out ({:?})",
        stopped.elapsed()
    );
    assert!(second > first, "terms grow: {first} then {second}");

    // a comes back and tries to renew on its old revision: it learns it lost.
    assert_eq!(
        a.round().await,
        Role::Follower {
            leader: Some("replica-b".into())
        },
        "a deposed leader steps down on its next renewal"
    );
    assert_eq!(b.round().await, Role::Leader { term: second });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resigning_leader_hands_over_at_once() {
    let server = nats();
    let js = jetstream::new(client(&server.url()).await);
    let mut a = open(&js, "replica-a").await;
    let mut b = open(&js, "replica-b").await;
    let first = until_leader(&mut a, Duration::from_secs(5)).await.unwrap();
    assert!(!b.round().await.leads());
    a.resign().await;
    let Role::Leader { term } = b.round().await else {
        panic!("the lease is free right after the leader resigned");
    };
    assert!(term > first);
    assert!(!a.round().await.leads(), "the one that resigned follows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_shorter_than_a_second_is_refused() {
    let server = nats();
    let js = jetstream::new(client(&server.url()).await);
    let mut cfg = lease_config("replica-a");
    cfg.lease = Duration::from_millis(500);
    let error = Lease::open(&js, &cfg).await.err().expect("refused");
    assert!(error.to_string().contains("too short"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_under_its_name_takes_its_lease_back_at_once() {
    let server = nats();
    let js = jetstream::new(client(&server.url()).await);
    let mut a = open(&js, "replica-a").await;
    let first = until_leader(&mut a, Duration::from_secs(5)).await.unwrap();
    // Killed: never renews, never resigns. Its successor under another name must wait...
    drop(a);
    let mut b = open(&js, "replica-b").await;
    assert!(!b.round().await.leads(), "another name waits for the lease");
    // ...but the same name, restarted, takes it on its first round, with a new term.
    let mut again = open(&js, "replica-a").await;
    let Role::Leader { term } = again.round().await else {
        panic!("a restart under the holder's name takes the lease back");
    };
    assert!(term > first, "a new term: {first} then {term}");
    assert!(!b.round().await.leads(), "still one leader");
    assert_eq!(again.round().await, Role::Leader { term }, "and it renews");
}
