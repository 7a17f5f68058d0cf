//! Waiting for a run to settle: everything applied, a final barrier released, every posting
//! answered by the ERP.

use crate::post::endpoint::consumer_name;
use crate::supervise::pipeline::Pipeline;
use std::time::{Duration, Instant};

/// Waits until the view has applied `seq` on every shard.
pub async fn applied(pipeline: &Pipeline, seq: u64, limit: Duration) -> bool {
    pipeline.shared.view.wait_all(seq, limit).await
}

/// Postings waiting or in flight for each endpoint, straight from the outbox consumers.
pub async fn erp_backlog(pipeline: &Pipeline) -> Result<u64, String> {
    let cfg = &pipeline.shared.config;
    let stream = pipeline
        .shared
        .js
        .get_stream(&cfg.streams.postings)
        .await
        .map_err(|e| e.to_string())?;
    let mut total = 0;
    for e in &cfg.erp {
        match stream.consumer_info(consumer_name(&e.name)).await {
            Ok(info) => total += info.num_pending + info.num_ack_pending as u64,
            // Not created yet: the endpoint actor has not fetched; count the stream instead.
            Err(_) => return Err(format!("consumer for {} not ready", e.name)),
        }
    }
    Ok(total)
}

/// Publishes a final flushing, snapshotting barrier, waits for its postings to be released,
/// then for the ERP to have answered every posting. Returns the time it took, or what is
/// still open when `limit` ran out.
pub async fn settle(pipeline: &Pipeline, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let seq = pipeline
        .barrier(true, true)
        .await
        .map_err(|e| e.to_string())?;
    if !pipeline.wait_released(seq, limit).await {
        return Err(format!("final barrier {seq} not released within {limit:?}"));
    }
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match erp_backlog(pipeline).await {
            Ok(0) => return Ok(start.elapsed()),
            Ok(n) if left.is_zero() => {
                return Err(format!("{n} postings still unanswered after {limit:?}"));
            }
            Err(e) if left.is_zero() => return Err(e),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
