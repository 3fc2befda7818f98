//! The event store's cost of TLS and authentication: batched appends and a
//! full read against two fresh stores, one plaintext and one with TLS
//! (verified against its generated CA) and the admin password on every call.
//!
//! Rounds alternate between the two stores, so that load from elsewhere on a
//! shared machine falls on both alike; each figure is the median of its
//! rounds, with the range. Single-append latency is left out: it is the
//! fsync's, the same for both.

use std::path::Path;

use eventstore::{AppendToStreamOptions, Client};

use crate::eventstore_bench::{append_throughput, event, read_all, ServerProcess};
use crate::report::{Row, Table, Target};

/// Appends in batches of 100 and 1000, then reads everything, alternating
/// between a plaintext and a secure store; adds a row per figure.
pub(crate) async fn figures(dir: &Path, rows: &mut Table, quick: bool) -> anyhow::Result<()> {
    let plain = ServerProcess::start(&dir.join("plain"))?;
    let secure = ServerProcess::start_with(&dir.join("secure"), &["--secure"])?;
    let clients = [plain.client()?, secure.client()?];
    for client in &clients {
        client.append_to_stream("warmup", &AppendToStreamOptions::default(), event(0)).await?;
    }
    let (rounds, per_round) = if quick { (2, 4_000) } else { (5, 40_000) };
    let batch_100 =
        alternate(&clients, rounds, |client| async move { append_throughput(&client, per_round, 100, 8).await })
            .await?;
    rows.push(compare("append, batch 100 (8 writers)", &batch_100, Some(0.8)));
    let batch_1000 =
        alternate(&clients, rounds, |client| async move { append_throughput(&client, per_round, 1000, 4).await })
            .await?;
    rows.push(compare("append, batch 1000 (4 writers)", &batch_1000, None));
    let count = 1 + 2 * rounds * per_round;
    let reads = alternate(&clients, 3, |client| async move { Ok(read_all(&client).await?.1) }).await?;
    rows.push(compare(&format!("read_all of {count} events"), &reads, None));
    plain.stop()?;
    secure.stop()
}

/// `rounds` measurements on each client, alternating; each list sorted.
async fn alternate<F, Fut>(clients: &[Client; 2], rounds: u64, measure: F) -> anyhow::Result<[Vec<f64>; 2]>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (side, client) in clients.iter().enumerate() {
            rates[side].push(measure(client.clone()).await?);
        }
    }
    for side in &mut rates {
        side.sort_by(f64::total_cmp);
    }
    Ok(rates)
}

/// The secure median beside the plaintext one; `target` is the least share
/// of plaintext the secure store should reach.
fn compare(what: &str, [plain, secure]: &[Vec<f64>; 2], target: Option<f64>) -> Row {
    let median = |rates: &[f64]| rates[rates.len() / 2];
    let range = |rates: &[f64]| format!("{:.0} - {:.0}", rates[0], rates[rates.len() - 1]);
    let row = Row::new(format!("event store, TLS + auth: {what}"), median(secure), "events/s").detail(format!(
        "{:.0}% of plaintext's median {:.0} events/s; ranges over {} alternating rounds: TLS + auth {}, plaintext {}",
        100.0 * median(secure) / median(plain),
        median(plain),
        secure.len(),
        range(secure),
        range(plain),
    ));
    match target {
        Some(share) => row.target(Target::AtLeast(share * median(plain))),
        None => row,
    }
}
