//! What a failover run does to the cluster, in order: SIGKILL the leader replica (started again
//! after `leader_down`), SIGKILL the NATS node that leads the events stream (restarted after
//! `node_down`), then restart every replica in turn with SIGTERM, each once the one before
//! has caught up. Every step is a mark on the report's charts.

use super::watch::Watch;
use crate::chaos::Proc;
use crate::harness::RunError;
use crate::report::{Mark, Takeover};
use crate::spec::ClusterSpec;
use retailflow::bus::server::NatsCluster;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Longest a replica may take to catch up after it was started again.
const CATCH_UP: Duration = Duration::from_secs(120);

pub struct Schedule {
    pub watch: Arc<Watch>,
    pub procs: Arc<Vec<Mutex<Proc>>>,
    pub cluster: Arc<Mutex<NatsCluster>>,
    pub js: async_nats::jetstream::Context,
    pub events: String,
    pub spec: ClusterSpec,
    pub graceful_limit: Duration,
    /// Times in the spec count from here.
    pub start: Instant,
}

/// What the schedule did.
#[derive(Default)]
pub struct Done {
    pub marks: Vec<Mark>,
    /// The killed leader's name and when.
    killed: Option<(String, Instant)>,
    /// The first other replica that said it led after the kill.
    new_leader: Option<String>,
    pub node_restart_s: Option<f64>,
    pub rolling_s: Vec<f64>,
    pub rolling_exit_codes: Vec<Option<i32>>,
}

impl Done {
    /// How soon barriers and postings came after the leader was killed, and who leads now.
    pub fn takeover(&self, watch: &Watch) -> Option<Takeover> {
        let (killed, at) = self.killed.clone()?;
        let (barrier_after_s, posting_after_s) = watch.next_after(at);
        Some(Takeover {
            killed,
            killed_at_s: watch.t(at),
            new_leader: self.new_leader.clone().unwrap_or_default(),
            barrier_after_s,
            posting_after_s,
        })
    }
}

fn name(i: usize) -> String {
    format!("r{}", i + 1)
}

impl Schedule {
    fn mark(&self, done: &mut Done, label: String) {
        tracing::info!(%label, "failover");
        done.marks.push(Mark {
            t: self.watch.t(Instant::now()),
            label,
        });
    }

    async fn until(&self, after: Duration) {
        tokio::time::sleep_until((self.start + after).into()).await;
    }

    /// The replica leading now, waiting up to 15 s for one to say so.
    async fn leader(&self) -> Result<usize, RunError> {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(i) = self.watch.leader() {
                return Ok(i);
            }
            if Instant::now() > until {
                return Err(RunError::Run("no replica leads".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn kill_leader(&self, done: &mut Done) -> Result<(), RunError> {
        self.until(self.spec.kill_leader_at).await;
        let l = self.leader().await?;
        self.watch.untrack(l);
        self.procs[l].lock().await.kill9().await;
        done.killed = Some((name(l), Instant::now()));
        self.mark(done, format!("{} (leader) killed", name(l)));
        // Who takes over: the first other replica to say it leads.
        let until = Instant::now() + self.spec.leader_down;
        while Instant::now() < until {
            if done.new_leader.is_none()
                && let Some(n) = self.watch.leader().filter(|n| *n != l)
            {
                done.new_leader = Some(name(n));
                self.mark(done, format!("{} leads", name(n)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.procs[l].lock().await.start()?;
        self.watch.track(l);
        self.mark(done, format!("{} started", name(l)));
        Ok(())
    }

    /// The node that leads the events stream's Raft group (the first node if unknown).
    async fn stream_leader_node(&self) -> usize {
        let Ok(mut stream) = self.js.get_stream(&self.events).await else {
            return 0;
        };
        let Ok(info) = stream.info().await else {
            return 0;
        };
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .and_then(|n| n.trim_start_matches('n').parse::<usize>().ok())
            .filter(|n| (1..=retailflow::bus::server::NODES).contains(n))
            .map_or(0, |n| n - 1)
    }

    async fn kill_node(&self, done: &mut Done) -> Result<(), RunError> {
        self.until(self.spec.kill_node_at).await;
        let node = self.stream_leader_node().await;
        let cluster = self.cluster.clone();
        tokio::task::block_in_place(|| cluster.blocking_lock().kill(node));
        self.mark(done, format!("NATS n{} killed", node + 1));
        tokio::time::sleep(self.spec.node_down).await;
        let started = Instant::now();
        let restarted = tokio::task::block_in_place(|| cluster.blocking_lock().restart(node));
        restarted.map_err(|e| RunError::Run(format!("restarting NATS n{}: {e}", node + 1)))?;
        done.node_restart_s = Some(started.elapsed().as_secs_f64());
        self.mark(done, format!("NATS n{} restarted", node + 1));
        Ok(())
    }

    async fn rolling(&self, done: &mut Done) -> Result<(), RunError> {
        self.until(self.spec.rolling_at).await;
        for i in 0..self.procs.len() {
            let stopping = Instant::now();
            self.watch.untrack(i);
            self.mark(done, format!("{} restart", name(i)));
            let code = self.procs[i]
                .lock()
                .await
                .terminate(self.graceful_limit)
                .await;
            done.rolling_exit_codes.push(code);
            self.procs[i].lock().await.start()?;
            self.watch.track(i);
            // What the stream holds now (the watcher's figure may be a moment old).
            let mut target = self.watch.stream_last();
            for _ in 0..5 {
                if let Some(last) = super::watch::last_seq(&self.js, &self.events).await {
                    target = target.max(last);
                    break;
                }
            }
            if !self.watch.caught_up(i, target, CATCH_UP).await {
                return Err(RunError::Run(format!(
                    "{} did not catch up within {CATCH_UP:?} after its restart",
                    name(i)
                )));
            }
            done.rolling_s.push(stopping.elapsed().as_secs_f64());
        }
        self.mark(done, "rolling restart done".into());
        Ok(())
    }

    pub async fn run(self) -> Result<Done, RunError> {
        let mut done = Done::default();
        self.kill_leader(&mut done).await?;
        self.kill_node(&mut done).await?;
        self.rolling(&mut done).await?;
        Ok(done)
    }
}
