//! The benchmarks' output: a Markdown table, each figure beside its target.
#![allow(clippy::print_stdout)] // the table is the output

use std::time::Duration;

/// One line of the table.
pub(crate) struct Row {
    metric: String,
    value: String,
    target: String,
    met: Option<bool>,
}

impl Row {
    /// A figure with a target, and whether it was met.
    pub(crate) fn checked(metric: impl Into<String>, value: String, target: impl Into<String>, met: bool) -> Row {
        Row { metric: metric.into(), value, target: target.into(), met: Some(met) }
    }

    /// A figure shown for context (a baseline, a breakdown).
    pub(crate) fn figure(metric: impl Into<String>, value: String) -> Row {
        Row { metric: metric.into(), value, target: String::new(), met: None }
    }

    /// A figure with a note in the target column but nothing to meet.
    pub(crate) fn noted(metric: impl Into<String>, value: String, note: impl Into<String>) -> Row {
        Row { metric: metric.into(), value, target: note.into(), met: None }
    }
}

/// Rows collected while a benchmark runs, printed at the end.
#[derive(Default)]
pub(crate) struct Table(Vec<Row>);

impl Table {
    pub(crate) fn push(&mut self, row: Row) {
        self.0.push(row);
    }

    pub(crate) fn print(&self) {
        println!("| figure | measured | target | met |");
        println!("|---|---|---|---|");
        for row in &self.0 {
            let met = match row.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            println!("| {} | {} | {} | {} |", row.metric, row.value, row.target, met);
        }
    }
}

/// The `p` quantile (0..=1) of sorted samples.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

/// Milliseconds with two decimals.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
