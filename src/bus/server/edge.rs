//! A hub and store leaf nodes on one machine, for the edge tests. The hub is a
//! [`NatsServer`] that also listens for leaf node connections; a store is a [`NatsServer`]
//! with a JetStream domain of its own whose `leafnodes` remote points at the hub (in the
//! tests through a [`super::TcpProxy`], so the link can be cut while both keep running). Both
//! have a monitoring port, from which the tests learn whether the link is up. The store's
//! configuration is the one nats/edge/store.conf documents, with ports and names filled in.

use super::{NatsServer, ServerError, free_port};
use std::net::SocketAddr;
use std::time::Duration;

/// Subjects that never cross the link by themselves. Store events reach the hub only through
/// the events stream's source; were they also forwarded as plain messages, the hub's events
/// stream, which captures the same subjects, would store them a second time.
pub const LINK_DENY: &str = "retail.v1.>";

pub struct NatsHub {
    server: NatsServer,
    leaf_port: u16,
    monitor_port: u16,
}

impl NatsHub {
    /// Starts a hub with JetStream domain `domain`, accepting leaf nodes on `leaf_port` (0: a
    /// free one). A hub tells its leaf nodes in `INFO` where to reconnect: its own leaf
    /// address unless `advertise` names another. A test that cuts the link with a proxy
    /// advertises the proxy, or a store reconnects around it.
    pub fn start(
        domain: &str,
        leaf_port: u16,
        advertise: Option<SocketAddr>,
    ) -> Result<NatsHub, ServerError> {
        let leaf_port = if leaf_port == 0 {
            free_port()
        } else {
            leaf_port
        };
        let monitor_port = free_port();
        let advertise = advertise.map_or(String::new(), |a| format!("  advertise: \"{a}\"\n"));
        let config = format!(
            "jetstream {{ domain: \"{domain}\" }}\n\
             leafnodes {{\n  listen: \"127.0.0.1:{leaf_port}\"\n{advertise}}}\n"
        );
        let server = NatsServer::start_configured(
            free_port(),
            Some(&config),
            &["-m", &monitor_port.to_string()],
        )?;
        Ok(NatsHub {
            server,
            leaf_port,
            monitor_port,
        })
    }

    pub fn server(&self) -> &NatsServer {
        &self.server
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Where leaf nodes connect.
    pub fn leaf_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.leaf_port))
    }

    /// Leaf node connections the hub holds now (0 when its monitoring does not answer).
    pub async fn leaf_connections(&self) -> u64 {
        leafnodes(self.monitor_port).await.unwrap_or(0)
    }
}

pub struct NatsLeaf {
    server: NatsServer,
    domain: String,
    monitor_port: u16,
}

impl NatsLeaf {
    /// Starts a store server with JetStream domain `domain`, its leaf node remote pointing at
    /// `hub` (the hub's leaf port, or a proxy in front of it), reconnecting every second.
    pub fn start(domain: &str, hub: SocketAddr) -> Result<NatsLeaf, ServerError> {
        let monitor_port = free_port();
        let config = format!(
            "server_name: \"{domain}\"\n\
             jetstream {{ domain: \"{domain}\" }}\n\
             leafnodes {{\n\
               reconnect: \"1s\"\n\
               remotes: [{{\n\
                 url: \"nats-leaf://{hub}\"\n\
                 deny_exports: [\"{LINK_DENY}\"]\n\
                 deny_imports: [\"{LINK_DENY}\"]\n\
               }}]\n\
             }}\n"
        );
        let server = NatsServer::start_configured(
            free_port(),
            Some(&config),
            &["-m", &monitor_port.to_string()],
        )?;
        Ok(NatsLeaf {
            server,
            domain: domain.to_string(),
            monitor_port,
        })
    }

    pub fn server(&self) -> &NatsServer {
        &self.server
    }

    /// The store's own client URL: tills connect here.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether the store's link to the hub is up.
    pub async fn linked(&self) -> bool {
        leafnodes(self.monitor_port).await.unwrap_or(0) > 0
    }

    /// Waits until the link is up (`up`) or down, at most `limit`; false if it did not happen.
    pub async fn wait_linked(&self, up: bool, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.linked().await == up {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// The count of leaf node connections a server's monitoring endpoint (`/leafz`) reports.
async fn leafnodes(monitor_port: u16) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Leafz {
        #[serde(default)]
        leafnodes: u64,
    }
    let url = format!("http://127.0.0.1:{monitor_port}/leafz");
    let got = async {
        reqwest::get(&url)
            .await?
            .error_for_status()?
            .json::<Leafz>()
            .await
    };
    match tokio::time::timeout(Duration::from_secs(2), got).await {
        Ok(Ok(l)) => Some(l.leafnodes),
        _ => None,
    }
}
