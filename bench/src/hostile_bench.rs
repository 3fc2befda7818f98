//! Lookups by key while hostile listings run (issue 17): the GET-by-key p99
//! at 1 and 16 clients, idle and while three clients loop the costliest
//! listing the API still accepts (16 unindexed filters, counted over every
//! user). Part of `bench projections`, on its host and read models.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::projections_bench::get_by_key;
use crate::report::{millis, ms, percentile, Row, Table, Target};

/// The costliest listing the API accepts: 16 filters on unindexed fields
/// that every user passes, counted.
fn hostile_path() -> String {
    let filters: Vec<String> = (0..16).map(|i| format!("filter=email!=nobody{i}%40example.com")).collect();
    format!("/projections/user-directory/collections/users?count=true&{}", filters.join("&"))
}

pub(crate) async fn hostile_query_rows(
    addr: std::net::SocketAddr,
    keys: u64,
    duration: Duration,
    table: &mut Table,
) -> anyhow::Result<()> {
    for clients in [1, 16] {
        let (_, idle) = get_by_key(addr, keys, clients, duration).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let hostile: Vec<_> = (0..3)
            .map(|_| {
                let (stop, url) = (stop.clone(), format!("http://{addr}{}", hostile_path()));
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    let mut answers = std::collections::BTreeMap::<u16, u64>::new();
                    while !stop.load(Ordering::Relaxed) {
                        let status = http.get(&url).send().await?.status().as_u16();
                        *answers.entry(status).or_default() += 1;
                    }
                    anyhow::Ok(answers)
                })
            })
            .collect();
        let (_, busy) = get_by_key(addr, keys, clients, duration).await?;
        stop.store(true, Ordering::Relaxed);
        let mut answers = std::collections::BTreeMap::<u16, u64>::new();
        for task in hostile {
            for (status, n) in task.await?? {
                *answers.entry(status).or_default() += n;
            }
        }
        let (idle_p99, busy_p99) = (percentile(&idle, 0.99), percentile(&busy, 0.99));
        let answered: Vec<String> = answers.iter().map(|(status, n)| format!("{n} x {status}")).collect();
        table.push(
            Row::new(format!("hostile queries: GET by key p99, {clients} clients, idle"), millis(idle_p99), "ms")
                .detail(format!("p50 {}, {} requests", ms(percentile(&idle, 0.5)), idle.len())),
        );
        table.push(
            Row::new(
                format!("hostile queries: GET by key p99, {clients} clients, 3 hostile listings running"),
                millis(busy_p99),
                "ms",
            )
            .detail(format!(
                "p50 {}, {} requests; the hostile listings were answered {}",
                ms(percentile(&busy, 0.5)),
                busy.len(),
                answered.join(", ")
            )),
        );
        table.push(
            Row::new(
                format!("hostile queries: GET by key p99 under hostile listings over idle, {clients} clients"),
                busy_p99.as_secs_f64() / idle_p99.as_secs_f64().max(1e-6),
                "x",
            )
            .target(Target::AtMost(2.0)),
        );
    }
    Ok(())
}
