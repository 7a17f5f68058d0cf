//! Reading a stream up to where it ended when the read began: an ordered consumer that knows
//! how many messages were pending when it was created, gives those and stops, instead of
//! waiting for messages that may never come. For pages of dead letters and of a document's
//! source events.

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use std::time::Duration;

/// Longest wait for the next pending message before the read is given up.
const NEXT_WITHIN: Duration = Duration::from_secs(5);

/// The messages an ordered consumer had pending when it was created, one at a time.
pub struct Pending {
    messages: consumer::pull::Ordered,
    left: u64,
    what: &'static str,
}

impl Pending {
    /// Opens an ordered consumer on `stream` with `config`; `what` names the stream in
    /// errors (`the dead-letter stream`).
    pub async fn open(
        stream: &jetstream::stream::Stream,
        config: consumer::pull::OrderedConfig,
        what: &'static str,
    ) -> Result<Pending, String> {
        let failed = |e: &dyn std::fmt::Display| format!("reading {what}: {e}");
        let mut consumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| failed(&e))?;
        let left = consumer.info().await.map_err(|e| failed(&e))?.num_pending;
        let messages = consumer.messages().await.map_err(|e| failed(&e))?;
        Ok(Pending {
            messages,
            left,
            what,
        })
    }

    /// Messages still to come.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// The next pending message, None after the last.
    pub async fn next(&mut self) -> Result<Option<jetstream::Message>, String> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        match tokio::time::timeout(NEXT_WITHIN, self.messages.next()).await {
            Ok(Some(Ok(m))) => Ok(Some(m)),
            _ => Err(format!("{} did not answer in time", self.what)),
        }
    }
}
