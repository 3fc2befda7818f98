//! `projector try`: a module run over recent or given events through
//! `POST /try`; prints what it would write and log, and fails when the
//! module failed (nothing is committed either way).

use anyhow::{bail, Context};
use base64::Engine;
use serde_json::Value;

use super::{print, say, Client};
use crate::cli::TryArgs;

impl Client {
    /// `POST /try`: prints the writes (`collection/key: document`), the
    /// log lines and the module's error; fails when the module failed.
    pub(super) async fn try_module(&self, args: TryArgs) -> anyhow::Result<()> {
        let module = match &args.file {
            Some(file) => {
                let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
                Some(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            None => None,
        };
        // A module of one's own may be tried before its first deploy: over
        // an empty read model when nothing is deployed under that name yet.
        let deployed = module.is_none()
            || self.get(&format!("/projections/{}", args.name)).send().await.is_ok_and(|r| r.status().is_success());
        if !deployed && !self.json {
            say(format_args!("nothing is deployed as {}: the module reads an empty read model", args.name));
        }
        let mut body = serde_json::json!({
            "projection": deployed.then_some(&args.name),
            "module_base64": module,
            "view": if args.empty || !deployed { "empty" } else { "current" },
        });
        match &args.events {
            Some(file) => {
                let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
                let events: Value =
                    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
                body["events"] = events;
            }
            None => body["last"] = args.last.into(),
        }
        let request = self.http.post(self.url("/try")).bearer_auth(self.token()?).json(&body);
        let outcome = self.send(request).await?;
        if self.json {
            print(&outcome)?;
        } else {
            let writes = outcome["writes"].as_array().map_or(&[][..], Vec::as_slice);
            say(format_args!("{} events, {} writes (nothing committed)", outcome["events"], writes.len()));
            for write in writes {
                let (collection, key) = (write["collection"].as_str(), write["key"].as_str());
                say(format_args!("{}/{}: {}", collection.unwrap_or("?"), key.unwrap_or("?"), write["document"]));
            }
            for line in outcome["logs"].as_array().map_or(&[][..], Vec::as_slice) {
                let (level, message) = (line["level"].as_str(), line["message"].as_str());
                say(format_args!("log {}: {}", level.unwrap_or("?"), message.unwrap_or("")));
            }
        }
        match outcome["error"].as_str() {
            Some(error) => bail!("the module failed: {error}"),
            None => Ok(()),
        }
    }
}
