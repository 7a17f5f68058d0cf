//! A private 3-node nats-server cluster with JetStream, for the tests of failover: three
//! [`NatsServer`]s on free loopback ports (client, route and monitoring port each, a store
//! directory each), routed to each other as cluster `retailflow`. Each node can be killed
//! (SIGKILL), put into lame duck mode and restarted on its ports and store; all are killed
//! when the cluster is dropped.

use super::{NatsServer, ServerError};
use std::net::TcpListener;
use std::time::Duration;

/// Cluster name the nodes share (also in `nats/cluster/`).
pub const CLUSTER_NAME: &str = "retailflow";

/// Nodes in the cluster: the smallest that survives losing one (Raft quorum 2 of 3).
pub const NODES: usize = 3;

pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    monitor_ports: Vec<u16>,
}

/// `n` distinct free loopback ports: every listener is held until all are chosen.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .filter_map(|_| TcpListener::bind("127.0.0.1:0").ok())
        .collect();
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok().map(|a| a.port()))
        .collect()
}

impl NatsCluster {
    /// Starts the three nodes and waits until JetStream can place a stream on all of them
    /// (a meta leader is elected and every node is a peer), at most `limit`.
    pub async fn start(limit: Duration) -> Result<NatsCluster, ServerError> {
        let ports = free_ports(3 * NODES);
        if ports.len() != 3 * NODES {
            return Err(ServerError::Start {
                binary: "nats-server".into(),
                message: "no free loopback ports".into(),
            });
        }
        let (clients, rest) = ports.split_at(NODES);
        let (routes, monitors) = rest.split_at(NODES);
        let route = |p: &u16| format!("nats://127.0.0.1:{p}");
        let mut nodes = Vec::with_capacity(NODES);
        for i in 0..NODES {
            let others: Vec<String> = (0..NODES)
                .filter(|&j| j != i)
                .map(|j| route(&routes[j]))
                .collect();
            let args = [
                "-n".to_string(),
                format!("n{}", i + 1),
                "--cluster_name".into(),
                CLUSTER_NAME.into(),
                "--cluster".into(),
                route(&routes[i]),
                "--routes".into(),
                others.join(","),
                "-m".into(),
                monitors[i].to_string(),
            ];
            let port = clients[i];
            let node = tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                NatsServer::start_on(port, &args)
            })
            .await
            .map_err(|e| ServerError::Start {
                binary: "nats-server".into(),
                message: e.to_string(),
            })??;
            nodes.push(node);
        }
        let cluster = NatsCluster {
            nodes,
            monitor_ports: monitors.to_vec(),
        };
        cluster.wait_jetstream(limit).await?;
        Ok(cluster)
    }

    /// Every node's client address, comma-separated: a `nats.url`.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// SIGKILL node `i`: a crashed server.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Puts node `i` into lame duck mode (see [`NatsServer::lame_duck`]).
    pub fn lame_duck(&self, i: usize) -> Result<(), ServerError> {
        self.nodes[i].lame_duck()
    }

    /// Starts node `i` again on its ports and store directory.
    pub fn restart(&mut self, i: usize) -> Result<(), ServerError> {
        self.nodes[i].restart()
    }

    /// Names of the client connections node `i` holds, from its monitoring endpoint
    /// (`/connz`); empty when the node is down.
    pub async fn connection_names(&self, i: usize) -> Vec<String> {
        #[derive(serde::Deserialize)]
        struct Connz {
            #[serde(default)]
            connections: Vec<Conn>,
        }
        #[derive(serde::Deserialize)]
        struct Conn {
            #[serde(default)]
            name: String,
        }
        let url = format!(
            "http://127.0.0.1:{}/connz?limit=1024",
            self.monitor_ports[i]
        );
        let got = async {
            reqwest::get(&url)
                .await?
                .error_for_status()?
                .json::<Connz>()
                .await
        };
        match tokio::time::timeout(Duration::from_secs(5), got).await {
            Ok(Ok(c)) => c.connections.into_iter().map(|c| c.name).collect(),
            _ => Vec::new(),
        }
    }

    /// Which node holds a client connection whose name starts with `prefix`.
    pub async fn node_with_connection(&self, prefix: &str) -> Option<usize> {
        for i in 0..self.nodes.len() {
            if self
                .connection_names(i)
                .await
                .iter()
                .any(|n| n.starts_with(prefix))
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits until JetStream places a replicated stream on every node: a meta leader exists
    /// and all nodes are its peers. Creates and deletes a small probe stream to find out.
    pub async fn wait_jetstream(&self, limit: Duration) -> Result<(), ServerError> {
        use async_nats::jetstream::stream;
        let url = self.url();
        let not_ready = |why: String| ServerError::NotReady {
            port: self.nodes[0].port(),
            waited: limit,
            log: format!("JetStream of the cluster {url}: {why}"),
        };
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = String::from("no attempt");
        while tokio::time::Instant::now() < deadline {
            let attempt = async {
                let client = async_nats::connect(crate::bus::servers(&url))
                    .await
                    .map_err(|e| e.to_string())?;
                let js = async_nats::jetstream::new(client);
                js.create_stream(stream::Config {
                    name: "RETAILFLOW_CLUSTER_PROBE".into(),
                    subjects: vec!["retailflow.cluster.probe".into()],
                    num_replicas: NODES,
                    storage: stream::StorageType::Memory,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
                js.delete_stream("RETAILFLOW_CLUSTER_PROBE")
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<(), String>(())
            };
            // Before a meta leader is elected nobody answers; ask again rather than wait.
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = e,
                Err(_) => last = "no answer within 2 s".into(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(not_ready(last))
    }

    /// Waits until every stream of the account has a leader and all its replicas are current
    /// (a restarted node caught up), at most `limit`. False if that did not happen.
    pub async fn wait_streams_current(&self, limit: Duration) -> bool {
        use futures::TryStreamExt;
        let url = self.url();
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            let check = async {
                let client = async_nats::connect(crate::bus::servers(&url)).await.ok()?;
                let js = async_nats::jetstream::new(client);
                let infos: Vec<_> = js.streams().try_collect().await.ok()?;
                Some(infos.iter().all(|info| {
                    info.cluster.as_ref().is_some_and(|c| {
                        c.leader.is_some()
                            && c.replicas.len() + 1 == info.config.num_replicas.max(1)
                            && c.replicas
                                .iter()
                                .all(|p| p.current && !p.offline && p.lag.unwrap_or(0) == 0)
                    })
                }))
            };
            if let Ok(Some(true)) = tokio::time::timeout(Duration::from_secs(5), check).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}
