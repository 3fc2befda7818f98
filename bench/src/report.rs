//! The benchmarks' output: every figure is a number with a unit, optionally
//! a target; one run gives a [`Table`], several runs of the same benchmark
//! give a [`Summary`] with the median, min and max of each figure.
#![allow(clippy::print_stdout)] // the table is the output

use std::time::Duration;

/// What a figure should reach.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    fn met(self, value: f64) -> bool {
        match self {
            Target::AtLeast(bound) => value >= bound,
            Target::AtMost(bound) => value <= bound,
        }
    }

    fn label(self, unit: &str) -> String {
        match self {
            Target::AtLeast(bound) => format!(">= {} {unit}", number(bound)),
            Target::AtMost(bound) => format!("<= {} {unit}", number(bound)),
        }
    }
}

/// One figure of one run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Row {
    metric: String,
    value: f64,
    unit: String,
    target: Option<Target>,
    detail: String,
}

impl Row {
    /// `metric` measured at `value` `unit`.
    pub(crate) fn new(metric: impl Into<String>, value: f64, unit: &str) -> Row {
        Row { metric: metric.into(), value, unit: unit.to_owned(), target: None, detail: String::new() }
    }

    /// The same figure with a target to meet.
    pub(crate) fn target(self, target: Target) -> Row {
        Row { target: Some(target), ..self }
    }

    /// The same figure with context from its run (a breakdown, a baseline).
    pub(crate) fn detail(self, detail: impl Into<String>) -> Row {
        Row { detail: detail.into(), ..self }
    }
}

/// The figures of one run of one benchmark, in the order measured.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Table(Vec<Row>);

impl Table {
    pub(crate) fn push(&mut self, row: Row) {
        self.0.push(row);
    }

    /// Appends another table's figures.
    pub(crate) fn extend(&mut self, other: Table) {
        self.0.extend(other.0);
    }

    /// The value of the figure named `metric`, if measured.
    pub(crate) fn value(&self, metric: &str) -> Option<f64> {
        self.0.iter().find(|row| row.metric == metric).map(|row| row.value)
    }

    /// Prints this run as one line of JSON (for `bench all`).
    pub(crate) fn print_json(&self) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string(self)?);
        Ok(())
    }

    /// Prints this run alone as a Markdown table.
    pub(crate) fn print(self) {
        print!("{}", Summary::of(vec![self]).markdown());
    }
}

/// One figure over several runs.
#[derive(Debug)]
struct Line {
    metric: String,
    unit: String,
    values: Vec<f64>,
    target: Option<Target>,
    /// The detail of the run whose value is nearest the median.
    detail: String,
}

impl Line {
    fn median(&self) -> f64 {
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        if sorted.len() % 2 == 1 {
            sorted[middle]
        } else {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        }
    }

    fn range(&self) -> (f64, f64) {
        let min = self.values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }
}

/// Several runs of one benchmark, figure by figure.
#[derive(Debug)]
pub(crate) struct Summary {
    lines: Vec<Line>,
    runs: usize,
}

impl Summary {
    /// Groups the figures of `runs` by name, in the order first measured.
    pub(crate) fn of(runs: Vec<Table>) -> Summary {
        let count = runs.len();
        let mut lines: Vec<Line> = Vec::new();
        let mut details: Vec<Vec<(f64, String)>> = Vec::new();
        for table in runs {
            for row in table.0 {
                let index = match lines.iter().position(|line| line.metric == row.metric) {
                    Some(index) => index,
                    None => {
                        lines.push(Line {
                            metric: row.metric.clone(),
                            unit: row.unit.clone(),
                            values: Vec::new(),
                            target: row.target,
                            detail: String::new(),
                        });
                        details.push(Vec::new());
                        lines.len() - 1
                    }
                };
                lines[index].values.push(row.value);
                details[index].push((row.value, row.detail));
            }
        }
        for (line, details) in lines.iter_mut().zip(details) {
            let median = line.median();
            let nearest = details.into_iter().min_by(|a, b| (a.0 - median).abs().total_cmp(&(b.0 - median).abs()));
            line.detail = nearest.map(|(_, detail)| detail).unwrap_or_default();
        }
        Summary { lines, runs: count }
    }

    /// Every figure is a finite number (what the smoke test checks).
    pub(crate) fn all_numbers(&self) -> Result<(), String> {
        match self.lines.iter().find(|line| line.values.iter().any(|v| !v.is_finite())) {
            Some(line) => Err(format!("'{}' measured {:?}", line.metric, line.values)),
            None if self.lines.is_empty() => Err("no figures".into()),
            None => Ok(()),
        }
    }

    /// Targets missed, by figure.
    pub(crate) fn missed(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|line| line.target.is_some_and(|t| !t.met(line.median())))
            .map(|line| line.metric.as_str())
            .collect()
    }

    /// A Markdown table: the median, min and max of every figure.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        if self.runs > 1 {
            out.push_str(&format!(
                "| figure | median of {} runs | min - max | target | met | detail (median run) |\n",
                self.runs
            ));
        } else {
            out.push_str("| figure | measured | | target | met | detail |\n");
        }
        out.push_str("|---|---|---|---|---|---|\n");
        for line in &self.lines {
            let median = line.median();
            let (min, max) = line.range();
            let range = if self.runs > 1 { format!("{} - {}", number(min), number(max)) } else { String::new() };
            let (target, met) = match line.target {
                Some(target) => (target.label(&line.unit), if target.met(median) { "yes" } else { "NO" }),
                None => (String::new(), ""),
            };
            out.push_str(&format!(
                "| {} | {} {} | {range} | {target} | {met} | {} |\n",
                line.metric,
                number(median),
                line.unit,
                line.detail
            ));
        }
        out
    }
}

/// A figure with the precision its size deserves: 54,712 / 412 / 38.4 / 1.27.
pub(crate) fn number(value: f64) -> String {
    if !value.is_finite() {
        return format!("{value}");
    }
    let magnitude = value.abs();
    if magnitude >= 10_000.0 {
        let digits = format!("{:.0}", magnitude);
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if value < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
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

/// A duration in milliseconds, as a figure.
pub(crate) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Milliseconds with two decimals, for details.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", millis(d))
}

/// Bytes in MiB, as a figure.
pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(values: &[(&str, f64)]) -> Table {
        let mut table = Table::default();
        for (metric, value) in values {
            table.push(Row::new(*metric, *value, "events/s").target(Target::AtLeast(10.0)).detail(format!("v{value}")));
        }
        table
    }

    #[test]
    fn a_summary_shows_the_median_and_range_and_checks_the_median() {
        let summary = Summary::of(vec![
            run(&[("a", 12.0), ("b", 1.0)]),
            run(&[("a", 8.0), ("b", 3.0)]),
            run(&[("a", 9.0), ("b", 2.0)]),
        ]);
        let text = summary.markdown();
        assert!(text.contains("| a | 9.00 events/s | 8.00 - 12.0 | >= 10.0 events/s | NO | v9 |"), "{text}");
        assert!(text.contains("| b | 2.00 events/s | 1.00 - 3.00 |"), "{text}");
        assert_eq!(summary.missed(), ["a", "b"]);
        assert!(summary.all_numbers().is_ok());
    }

    #[test]
    fn a_figure_that_is_not_a_number_is_reported() {
        let summary = Summary::of(vec![run(&[("a", f64::NAN)])]);
        assert!(summary.all_numbers().expect_err("NaN is not a number").contains("'a'"));
        assert!(Summary::of(vec![]).all_numbers().is_err());
    }

    #[test]
    fn numbers_are_grouped_and_rounded_by_size() {
        assert_eq!(number(54_712.4), "54,712");
        assert_eq!(number(1_234_567.0), "1,234,567");
        assert_eq!(number(412.3), "412");
        assert_eq!(number(38.44), "38.4");
        assert_eq!(number(1.274), "1.27");
    }
}
