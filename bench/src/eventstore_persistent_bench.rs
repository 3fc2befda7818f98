//! Persistent subscription figures for `bench eventstore`: one consumer
//! group over every event of the loaded store (`$all` from the start), with
//! 1 and then 4 competing consumers acking each event as
//! the official client's users do, beside the catch-up subscription's rate.
//! The server's resident memory is sampled while the group works: a group
//! reads ahead only its buffers, so it must stay flat however long the
//! source is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use eventstore::{
    Client, PersistentSubscriptionToAllOptions, StreamPosition, SubscribeToPersistentSubscriptionOptions,
};

use crate::eventstore_bench::{Meter, ServerProcess};
use crate::report::{mib, Row, Table};

/// Unacked events each consumer may hold (the client's default is 10).
const BUFFER: usize = 500;

/// Adds the rows for a store holding `events` events.
pub(crate) async fn figures(
    server: &ServerProcess,
    client: &Client,
    events: u64,
    catch_up: f64,
    rows: &mut Table,
) -> anyhow::Result<()> {
    for consumers in [1, 4] {
        let group = format!("bench-{consumers}");
        // The group's checkpoints land in `$all` too, after the events counted.
        let options = PersistentSubscriptionToAllOptions::default().start_from(StreamPosition::Start);
        client.create_persistent_subscription_to_all(&group, &options).await?;
        let acked = Arc::new(AtomicU64::new(0));
        let mut meter = Meter::start(server)?;
        let before = server.rss_bytes()?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..consumers {
            let options = SubscribeToPersistentSubscriptionOptions::default().buffer_size(BUFFER);
            let mut sub = client.subscribe_to_persistent_subscription_to_all(&group, &options).await?;
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                while acked.load(Ordering::Relaxed) < events {
                    let event = sub.next().await?;
                    sub.ack(event).await?;
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            }));
        }
        let mut peak = before;
        while acked.load(Ordering::Relaxed) < events {
            tokio::time::sleep(Duration::from_millis(50)).await;
            peak = peak.max(server.rss_bytes()?);
            if let Some(failed) = tasks.iter().position(|t| t.is_finished()) {
                if acked.load(Ordering::Relaxed) < events {
                    tasks.swap_remove(failed).await??;
                    bail!("a consumer stopped after {} of {events} events", acked.load(Ordering::Relaxed));
                }
            }
        }
        let rate = events as f64 / started.elapsed().as_secs_f64();
        let cpu = meter.cpu(server)?;
        for task in tasks {
            task.abort();
        }
        let plural = if consumers == 1 { "" } else { "s" };
        rows.push(
            Row::new(
                format!("event store: persistent subscription, {consumers} consumer{plural}, acked"),
                rate,
                "events/s",
            )
            .detail(format!(
                "{events} events of $all, {BUFFER} in flight per consumer, one ack each; \
                     catch-up subscription {catch_up:.0} events/s; {cpu}"
            )),
        );
        rows.push(
            Row::new(format!("event store: server RSS during it ({consumers} consumer{plural})"), mib(peak), "MiB")
                .detail(format!("peak of samples every 50 ms; {:.0} MiB before", mib(before))),
        );
        client.delete_persistent_subscription_to_all(&group, &Default::default()).await?;
    }
    Ok(())
}
