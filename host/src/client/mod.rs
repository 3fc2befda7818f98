//! `projector deploy|list|status|stop|start|reset|retry|rollback|rm|query|try`:
//! a command-line client of the HTTP API. Output is text for people: an
//! aligned table for `list`, `key: value` lines for a status (`status` and
//! the lifecycle actions), one line for `deploy` and `rm`; documents from
//! `query` are JSON. `--json` prints the API's JSON answer instead, for
//! scripts. A refused request prints the API's message as one line and exits
//! non-zero.

// A command-line client: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::cli::{ClientCommand, Connection, DeployArgs, NameArgs, QueryArgs};

mod trial;

/// Runs one client command against the API.
pub(crate) async fn run(command: ClientCommand) -> anyhow::Result<()> {
    let action = |args: NameArgs, action: &'static str| async move {
        Client::new(&args.connection)?.act(&args.name, action).await
    };
    // A status, as text or as the API's JSON.
    match command {
        ClientCommand::Deploy(args) => Client::new(&args.connection)?.deploy(args).await,
        ClientCommand::List(connection) => Client::new(&connection)?.list().await,
        ClientCommand::Status(args) => {
            let client = Client::new(&args.connection)?;
            let status = client.send(client.get(&format!("/projections/{}", args.name))).await?;
            client.show_status(&status)
        }
        ClientCommand::Stop(args) => action(args, "stop").await,
        ClientCommand::Start(args) => action(args, "start").await,
        ClientCommand::Reset(args) => action(args, "reset").await,
        ClientCommand::Retry(args) => action(args, "retry").await,
        ClientCommand::Rollback(args) => action(args, "rollback").await,
        ClientCommand::Rm(args) => {
            let client = Client::new(&args.connection)?;
            let url = client.url(&format!("/projections/{}", args.name));
            client.send(client.http.delete(url).bearer_auth(client.token()?)).await?;
            say(format_args!("deleted {}", args.name));
            Ok(())
        }
        ClientCommand::Query(args) => Client::new(&args.connection)?.query(args).await,
        ClientCommand::Try(args) => Client::new(&args.connection)?.try_module(args).await,
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// Print the API's JSON instead of text.
    json: bool,
}

impl Client {
    fn new(args: &Connection) -> anyhow::Result<Client> {
        let base = args.url.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--url '{base}' must start with http:// or https://");
        }
        let token = match (&args.token, &args.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => Some(crate::network::read_token_file("admin token", path)?),
            (None, None) => read_token(&crate::admin_token_path(&args.data))?,
        };
        let mut http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).use_rustls_tls();
        if let Some(path) = &args.ca_cert {
            let pem =
                std::fs::read(path).with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
            let certificate = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
            http = http.add_root_certificate(certificate);
        }
        let http = http.build()?;
        Ok(Client { http, base, token, json: args.json })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn token(&self) -> anyhow::Result<&str> {
        self.token.as_deref().context(
            "no admin token: pass --token, set PROJECTOR_ADMIN_TOKEN, or run where --data holds the host's admin-token file",
        )
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.get(self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request`; a non-2xx answer becomes an error carrying the API's message.
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request.send().await.with_context(|| format!("cannot reach the host at {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        let body: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if status.is_success() {
            return Ok(body);
        }
        match body["error"]["message"].as_str() {
            Some(message) => bail!("{message} (HTTP {})", status.as_u16()),
            None => bail!("the host answered HTTP {status}: {body}"),
        }
    }

    async fn act(&self, name: &str, action: &str) -> anyhow::Result<()> {
        let request = self.http.post(self.url(&format!("/projections/{name}/{action}"))).bearer_auth(self.token()?);
        let status = self.send(request).await?;
        self.show_status(&status)
    }

    /// A projection's status: `key: value` lines, or the API's JSON with `--json`.
    fn show_status(&self, status: &Value) -> anyhow::Result<()> {
        if self.json {
            return print(status);
        }
        say(format_args!("{}", status_lines(status)));
        Ok(())
    }

    async fn list(&self) -> anyhow::Result<()> {
        let list = self.send(self.get("/projections")).await?;
        if self.json {
            return print(&list);
        }
        let rows = list.as_array().context("the host's list is not an array")?;
        say(format_args!("{}", list_table(rows)));
        Ok(())
    }

    async fn deploy(&self, args: DeployArgs) -> anyhow::Result<()> {
        let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
        let mut query = Vec::new();
        if let Some(mode) = &args.mode {
            query.push(format!("mode={mode}"));
        }
        if let Some(on_error) = &args.on_error {
            query.push(format!("on_error={on_error}"));
        }
        if let Some(mb) = args.memory_mb {
            query.push(format!("memory_mb={mb}"));
        }
        if let Some(ms) = args.batch_timeout_ms {
            query.push(format!("batch_timeout_ms={ms}"));
        }
        let url = self.url(&format!("/projections/{}?{}", args.name, query.join("&")));
        let status = self.send(self.http.put(url).bearer_auth(self.token()?).body(bytes)).await?;
        if self.json {
            // Scripts get the answer as it is (a rebuild is not followed).
            return print(&status);
        }
        let Some(target) = status["rebuild"]["version"].as_str().map(str::to_owned) else {
            say(format_args!("{}", status_lines(&status)));
            return Ok(());
        };
        self.follow_rebuild(&args.name, &target).await
    }

    /// Shows the rebuild's progress until queries switch to it.
    async fn follow_rebuild(&self, name: &str, target: &str) -> anyhow::Result<()> {
        let terminal = std::io::stderr().is_terminal();
        let mut stderr = std::io::stderr();
        let mut last_line = std::time::Instant::now();
        loop {
            let status = self.send(self.get(&format!("/projections/{name}"))).await?;
            let rebuild = &status["rebuild"];
            if rebuild.is_null() {
                if terminal {
                    eprintln!();
                }
                if status["version"].as_str() == Some(target) {
                    say(format_args!("{name}: queries switched to version {target}"));
                    return Ok(());
                }
                bail!(
                    "the rebuild to {target} ended without a switch (rolled back?); {name} serves {}",
                    status["version"]
                );
            }
            if let Some(reason) = rebuild["fault"]["reason"].as_str() {
                bail!("the rebuild to {target} faulted: {reason}; queries stay on {}", status["version"]);
            }
            let line = progress_line(rebuild);
            if terminal {
                let _ = write!(stderr, "\r{line}\x1b[K");
                let _ = stderr.flush();
            } else if last_line.elapsed() >= Duration::from_secs(2) {
                eprintln!("{line}");
                last_line = std::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn query(&self, args: QueryArgs) -> anyhow::Result<()> {
        let mut path = format!("/projections/{}/collections/{}", args.name, args.collection);
        if let Some(key) = &args.key {
            path.push('/');
            path.push_str(key);
        }
        let mut params = form_urlencoded::Serializer::new(String::new());
        for filter in &args.filter {
            params.append_pair("filter", filter);
        }
        if let Some(order) = &args.order_by {
            params.append_pair("order_by", order);
        }
        if let Some(limit) = args.limit {
            params.append_pair("limit", &limit.to_string());
        }
        if let Some(position) = args.at_least {
            params.append_pair("at_least", &position.to_string());
        }
        if args.count {
            params.append_pair("count", "true");
        }
        let params = params.finish();
        if !params.is_empty() {
            path = format!("{path}?{params}");
        }
        print(&self.send(self.get(&path)).await?)
    }
}

/// `rebuilding 2.0.0 [########............] 41%  410000/1000000 events  52000 ev/s  ETA 11s`
fn progress_line(rebuild: &Value) -> String {
    const WIDTH: usize = 30;
    let position = rebuild["position"].as_u64().unwrap_or(0);
    let total = rebuild["total"].as_u64().unwrap_or(0).max(1);
    let fraction = (position as f64 / total as f64).clamp(0.0, 1.0);
    let filled = (fraction * WIDTH as f64).round() as usize;
    let eta = match rebuild["eta_seconds"].as_f64() {
        Some(s) => format!("ETA {s:.0}s"),
        None => "ETA -".to_owned(),
    };
    format!(
        "rebuilding {} [{}{}] {:>3.0}%  {position}/{total} events  {:.0} ev/s  {eta}",
        rebuild["version"].as_str().unwrap_or(""),
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        fraction * 100.0,
        rebuild["rate"].as_f64().unwrap_or(0.0),
    )
}

/// The projections as an aligned table: name, version, state, events, lag,
/// and a note; with several hosts, the host running each after its state.
fn list_table(rows: &[Value]) -> String {
    use comfy_table::{presets::NOTHING, CellAlignment, Table};
    let shared = rows.iter().any(|p| p.get("host").is_some());
    let mut table = Table::new();
    let mut header = vec!["NAME", "VERSION", "STATE", "EVENTS", "LAG", "NOTE"];
    if shared {
        header.insert(3, "HOST");
    }
    table.load_preset(NOTHING).set_header(header);
    for p in rows {
        let note = match (&p["rebuild"], &p["fault"]) {
            (Value::Object(r), _) => {
                format!("rebuilding {} ({} of {})", text(&r["version"]), r["position"], r["total"])
            }
            (_, Value::Object(f)) => format!("fault: {}", text(&f["reason"])),
            _ => String::new(),
        };
        let mut cells = vec![
            text(&p["name"]),
            text(&p["version"]),
            text(&p["state"]),
            text(&p["events_processed"]),
            text(&p["lag_events"]),
            note,
        ];
        if shared {
            cells.insert(3, p.get("host").map_or_else(|| "-".to_owned(), text));
        }
        table.add_row(cells);
    }
    let numbers = if shared { [4, 5] } else { [3, 4] };
    for (index, column) in table.column_iter_mut().enumerate() {
        // Two spaces between columns, none before the first.
        column.set_padding((0, 2));
        if numbers.contains(&index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table.lines().map(|line| line.trim_end().to_owned()).collect::<Vec<_>>().join("\n")
}

/// A status as `key: value` lines, the same for `status` and every lifecycle action.
fn status_lines(s: &Value) -> String {
    let mut lines = vec![
        ("name", text(&s["name"])),
        ("version", text(&s["version"])),
        ("state", text(&s["state"])),
        ("checkpoint", text(&s["checkpoint"])),
        ("events processed", text(&s["events_processed"])),
        ("lag", format!("{} events, {} s", text(&s["lag_events"]), text(&s["lag_seconds"]))),
        ("on error", text(&s["on_error"])),
        ("dead letters", text(&s["dead_letters"])),
        ("read model", text(&s["read_model"])),
        ("module", module_text(&s["module"])),
        ("limits", limits_text(&s["limits"], &s["limits_set"])),
        ("previous", previous_text(&s["previous"], &s["read_model"])),
    ];
    if let Some(host) = s.get("host") {
        lines.insert(3, ("host", text(host)));
    }
    if let Value::Object(fault) = &s["fault"] {
        let at = [
            ("stream", &fault["stream"]),
            ("revision", &fault["revision"]),
            ("position", &fault["position"]),
            ("type", &fault["event_type"]),
        ]
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| format!("{k} {}", text(v)))
        .collect::<Vec<_>>();
        lines.push(("fault", format!("{} ({})", text(&fault["reason"]), at.join(", "))));
    }
    if !s["problem"].is_null() {
        lines.push(("problem", text(&s["problem"])));
    }
    if let Value::Object(r) = &s["rebuild"] {
        lines.push((
            "rebuild",
            format!("{} {}, {} of {} events", text(&r["version"]), text(&r["state"]), r["position"], r["total"]),
        ));
    }
    lines.iter().map(|(key, value)| format!("{:<18}{value}", format!("{key}:"))).collect::<Vec<_>>().join("\n")
}

/// A JSON value as plain text: strings without quotes, null as `none`.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        other => other.to_string(),
    }
}

/// The limits in force, and which of them the deploy set.
fn limits_text(limits: &Value, set: &Value) -> String {
    let mib = |bytes: &Value| bytes.as_u64().map_or_else(|| "?".into(), |b| format!("{} MiB", b as f64 / 1048576.0));
    let in_force = format!(
        "memory {} MiB, batch timeout {} ms, document {}, batch writes {}",
        text(&limits["memory_mb"]),
        text(&limits["batch_timeout_ms"]),
        mib(&limits["document_bytes"]),
        mib(&limits["batch_write_bytes"]),
    );
    let set: Vec<&str> = set.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    if set.is_empty() {
        format!("{in_force} (host defaults)")
    } else {
        format!("{in_force} (set at deploy: {})", set.join(", "))
    }
}

/// The serving module's toolchain and size.
fn module_text(module: &Value) -> String {
    let size = module["bytes"].as_u64().map_or_else(|| "?".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
    match module["toolchain"].as_str() {
        Some(toolchain) => format!("{toolchain}, {size}"),
        None => size,
    }
}

/// What `rollback` would return to.
fn previous_text(previous: &Value, serving_read_model: &Value) -> String {
    if previous.is_null() {
        return "none".into();
    }
    let version = text(&previous["version"]);
    if previous["read_model"] == *serving_read_model {
        format!("{version} (same read model: rollback changes only the code)")
    } else {
        format!("{version} (read model {}: rollback serves it again)", text(&previous["read_model"]))
    }
}

/// Writes a line to stdout; a reader that went away (`| head`) ends the
/// output quietly instead of a panic.
pub(crate) fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let written = writeln!(std::io::stdout().lock(), "{line}");
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

fn print(value: &Value) -> anyhow::Result<()> {
    say(format_args!("{}", serde_json::to_string_pretty(value)?));
    Ok(())
}

fn read_token(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(token) => Ok(Some(token.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read the admin token in {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{limits_text, list_table, previous_text};

    #[test]
    fn the_list_names_the_host_running_each_projection_only_when_hosts_share_a_database() {
        let alone =
            [json!({"name": "orders", "version": "1", "state": "running", "events_processed": 7, "lag_events": 0})];
        let header =
            |table: &str| table.lines().next().unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(header(&list_table(&alone)), "NAME VERSION STATE EVENTS LAG NOTE");
        let shared = [
            json!({"name": "orders", "version": "1", "state": "running", "events_processed": 7, "lag_events": 0, "host": "host-b"}),
            json!({"name": "stock", "version": "2", "state": "catching-up", "events_processed": 3, "lag_events": 4}),
        ];
        let table = list_table(&shared);
        assert_eq!(header(&table), "NAME VERSION STATE HOST EVENTS LAG NOTE");
        let rows: Vec<Vec<&str>> = table.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            rows,
            [vec!["orders", "1", "running", "host-b", "7", "0"], vec!["stock", "2", "catching-up", "-", "3", "4"]]
        );
    }

    #[test]
    fn the_previous_version_says_what_a_rollback_would_serve() {
        let serving = json!("orders-2");
        assert_eq!(previous_text(&json!(null), &serving), "none");
        assert_eq!(
            previous_text(&json!({"version": "1.0.0", "read_model": "orders-2"}), &serving),
            "1.0.0 (same read model: rollback changes only the code)"
        );
        assert_eq!(
            previous_text(&json!({"version": "1.0.0", "read_model": "orders-1"}), &serving),
            "1.0.0 (read model orders-1: rollback serves it again)"
        );
    }

    #[test]
    fn limits_show_every_value_in_force_and_which_the_deploy_set() {
        let limits = json!({"memory_mb": 32, "batch_timeout_ms": 5000, "document_bytes": 1048576, "batch_write_bytes": 67108864});
        assert_eq!(
            limits_text(&limits, &json!({"memory_mb": 32})),
            "memory 32 MiB, batch timeout 5000 ms, document 1 MiB, batch writes 64 MiB (set at deploy: memory_mb)"
        );
        assert!(limits_text(&limits, &json!({})).ends_with("(host defaults)"));
    }
}
