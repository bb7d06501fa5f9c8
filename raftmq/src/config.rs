//! The broker's configuration file (`broker.toml`) under `RAFTMQ_*` environment overrides,
//! loaded into the broker's own options ([`broker::options::BrokerOptions`]: every key, its
//! default and its validation live there; this module mirrors none of them).
//!
//! Layers, lowest first: the defaults (documented in [`broker::options::DEFAULT_TOML`]), the
//! file, then one environment variable per key: `RAFTMQ_DATA_DIR`,
//! `RAFTMQ_RAFT__HEARTBEAT_INTERVAL_MS` (`__` separates a section from its key). String keys take
//! a variable's value as it is, `controllers` takes a comma-separated list, numbers are parsed.
//!
//! Only variables whose first part names a top-level key are read, so unrelated `RAFTMQ_*`
//! variables (a client's settings, or the `RAFTMQ_PORT` that Kubernetes sets for a service named
//! raftmq) cannot stop a broker; inside a known section an unknown key is an error, as it is in
//! the file. Every error names the key and where its value came from.
//!
//! What is the binary's own: a broker started from a file must be given its id (a library
//! caller always sets one) and must name its ports (port 0 would bind one that no client or
//! peer can be told in advance), and the advertised addresses and the metadata voters left
//! empty are filled in from the listening addresses, so the loaded options say what the broker
//! will announce.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::ffi::OsString;
use std::path::Path;

use anyhow::Context;
use broker::options::{BrokerOptions, InvalidKey};
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "RAFTMQ_";

/// Loads the file at `path` (none: defaults and environment only), applies the `RAFTMQ_*`
/// variables of this process, and validates. The error lists every problem with its key.
pub fn load(path: Option<&Path>) -> anyhow::Result<BrokerOptions> {
    load_from(path, std::env::vars_os())
}

/// [`load`] with the environment given (tests pass their own).
pub(crate) fn load_from(path: Option<&Path>, env: impl IntoIterator<Item = (OsString, OsString)>) -> anyhow::Result<BrokerOptions> {
    let text = match path {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading broker config {}", p.display()))?),
        None => None,
    };
    let env = env_overrides(env).map_err(|problems| anyhow::anyhow!("{}", problems.join("\n")))?;
    let sources = Sources { file: path, env: &env };
    let mut figment = Figment::new();
    if let Some(text) = &text {
        figment = figment.merge(Toml::string(text));
    }
    for var in &env {
        figment = figment.merge(var);
    }
    let options: BrokerOptions = figment.extract().map_err(|e| anyhow::anyhow!("invalid broker config:\n{}", sources.describe(e)))?;
    let id_given = figment.find_value("id").is_ok();
    resolve(options, id_given).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(|p| format!("  {p} ({})", sources.origin(&p.key))).collect();
        anyhow::anyhow!("invalid broker config:\n{}", lines.join("\n"))
    })
}

/// Validates `options` as a broker started from a file needs them (the broker's own checks, and
/// the binary's), and fills in the advertised addresses and voters left empty.
fn resolve(mut options: BrokerOptions, id_given: bool) -> Result<BrokerOptions, Vec<InvalidKey>> {
    let mut problems = options.validate().err().unwrap_or_default();
    if !id_given {
        problems.retain(|p| p.key != "id");
        problems.insert(0, InvalidKey { key: "id".into(), reason: "missing: every broker needs its own id, 1 to 2^63".into() });
    }
    let listeners =
        [("listen", Some(options.listen)), ("peer_listen", Some(options.peer_listen)), ("metrics_listen", options.metrics_listen)];
    for (key, addr) in listeners {
        if let Some(addr) = addr.filter(|a| a.port() == 0) {
            problems.push(InvalidKey { key: key.into(), reason: format!("{:?}: port 0 is not allowed", addr.to_string()) });
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if options.advertise.is_empty() {
        options.advertise = options.listen.to_string();
    }
    if options.peer_advertise.is_empty() {
        options.peer_advertise = options.peer_listen.to_string();
    }
    if options.controllers.is_empty() {
        options.controllers = vec![format!("{}@{}", options.id, options.peer_advertise)];
    }
    Ok(options)
}

/// One `RAFTMQ_*` variable as a layer of its own, so that errors can name the variable.
#[derive(Debug, Clone)]
struct EnvOverride {
    var: String,
    /// Dotted key path: `raft.heartbeat_interval_ms`.
    key: String,
    value: Value,
}

impl Provider for EnvOverride {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable {}", self.var))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        match figment::util::nest(&self.key, self.value.clone()).into_dict() {
            Some(dict) => Ok(Profile::Default.collect(dict)),
            None => Err(figment::Error::from(format!("{} does not name a key", self.var))),
        }
    }
}

/// The `RAFTMQ_*` variables that name a key, typed by the key's default: strings as they are,
/// lists split at commas, anything else parsed (numbers).
fn env_overrides(env: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Vec<EnvOverride>, Vec<String>> {
    let defaults = Value::serialize(BrokerOptions::default()).unwrap_or_else(|_| Value::from(Dict::new()));
    let top_level: BTreeSet<String> = defaults.as_dict().map(|d| d.keys().cloned().collect()).unwrap_or_default();
    let mut overrides = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in env {
        let Some(var) = name.to_str() else { continue };
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else { continue };
        let parts: Vec<String> = rest.to_ascii_lowercase().split("__").map(str::to_owned).collect();
        if !top_level.contains(&parts[0]) {
            continue;
        }
        if parts.iter().any(String::is_empty) {
            problems.push(format!("{var}: an empty part in the key; write RAFTMQ_SECTION__KEY"));
            continue;
        }
        let Some(text) = value.to_str() else {
            problems.push(format!("{var}: the value is not UTF-8"));
            continue;
        };
        let key = parts.join(".");
        // A key of a free-form table (`labels.zone`: a table with no keys of its own by default)
        // is a string as written.
        let parent = defaults.find_ref(&parts[..parts.len() - 1].join("."));
        let in_table = parts.len() > 1 && matches!(parent, Some(Value::Dict(_, d)) if d.is_empty());
        let value = match defaults.find_ref(&key) {
            Some(Value::String(..)) => Value::from(text.to_owned()),
            None if in_table => Value::from(text.to_owned()),
            Some(Value::Array(..)) => {
                let items: Vec<String> = text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
                Value::from(items)
            }
            _ => text.parse::<Value>().unwrap_or_else(|never: Infallible| match never {}),
        };
        overrides.push(EnvOverride { var: var.to_owned(), key, value });
    }
    // The order of the environment is arbitrary; sorting makes every run layer them the same way.
    overrides.sort_by(|a, b| a.var.cmp(&b.var));
    if problems.is_empty() { Ok(overrides) } else { Err(problems) }
}

/// Where the values came from, to say in an error which one to fix.
struct Sources<'a> {
    file: Option<&'a Path>,
    env: &'a [EnvOverride],
}

impl Sources<'_> {
    /// The variable that set `key` (or a section holding it), else the file, else the defaults.
    fn origin(&self, key: &str) -> String {
        let base = key.split('[').next().unwrap_or(key);
        let from_env = self.env.iter().find(|v| base == v.key || base.starts_with(&format!("{}.", v.key)));
        match (from_env, self.file) {
            (Some(v), _) => format!("from environment variable {}", v.var),
            (None, Some(file)) => format!("from {}", file.display()),
            (None, None) => "from the defaults".to_owned(),
        }
    }

    /// One line per error of figment's chain, each naming the key and its source.
    fn describe(&self, error: figment::Error) -> String {
        let mut lines = Vec::new();
        for e in error {
            // For an unknown field, figment's path already ends with the field.
            let what = match &e.kind {
                figment::error::Kind::UnknownField(_, expected) => format!("unknown key; expected one of: {}", expected.join(", ")),
                kind => kind.to_string(),
            };
            let key = e.path.join(".");
            if key.is_empty() {
                let source = self.file.map(|f| f.display().to_string()).unwrap_or_else(|| "the environment".to_owned());
                lines.push(format!("  {source}: {what}"));
            } else {
                lines.push(format!("  {key}: {what} ({})", self.origin(&key)));
            }
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests;
