//! Contexts: named clusters fathomctl can talk to, kept in one TOML file
//! (`$FATHOMCTL_CONFIG`, else `$XDG_CONFIG_HOME/fathom/fathomctl.toml`, else
//! `~/.config/fathom/fathomctl.toml`):
//!
//! ```toml
//! current = "prod-eu"
//!
//! [contexts.prod-eu]
//! server = "10.0.0.1:20035"           # control port of any server node (admin gRPC, TLS)
//! query = "http://10.0.0.1:20416"     # query API (fathomctl query)
//! ca = "/etc/fathom/ca.pem"           # the cluster CA, to check the server
//! cert = "/etc/fathom/admin.pem"      # admin client certificate and key (mTLS)
//! key = "/etc/fathom/admin-key.pem"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEFAULT_SERVER: &str = "https://127.0.0.1:20035";
/// Where a fathom-server with default settings writes its admin bundle (ca.pem,
/// admin.pem, admin.key): fathomctl on a server machine uses it when nothing else
/// names certificates. `FATHOMCTL_ADMIN_DIR` points elsewhere.
pub const DEFAULT_ADMIN_DIR: &str = "/var/lib/fathom/admin";
pub const DEFAULT_QUERY_PORT: u16 = 20416;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextFile {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current: String,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FATHOMCTL_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("fathom").join("fathomctl.toml")
}

impl ContextFile {
    /// A missing file is an empty one.
    pub fn load(path: &Path) -> Result<ContextFile, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ContextFile::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let text = toml::to_string_pretty(self).map_err(|e| e.to_string())?;
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// Where and how to reach the cluster, once flags, environment and context are merged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// The context used, if any (for error messages).
    pub context: Option<String>,
    /// The server address came from --server / FATHOMCTL_SERVER, not the context.
    #[serde(skip)]
    pub server_from_flag: bool,
    /// Admin gRPC endpoint URL.
    pub server: String,
    /// Query API base URL.
    pub query: String,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Target {
    /// "context \"prod\"" or "no context": says where an address came from.
    pub fn origin(&self) -> String {
        match (&self.context, self.server_from_flag) {
            (Some(c), true) => format!("from --server, context {c:?}"),
            (None, true) => "from --server".into(),
            (Some(c), false) => format!("context {c:?}"),
            (None, false) => "the default; no context is set".into(),
        }
    }
}

/// Add a scheme when the user gave `host:port`.
pub fn normalize_url(addr: &str, tls: bool) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

/// The admin bundle directory used when the context names no certificates.
fn admin_dir() -> PathBuf {
    std::env::var_os("FATHOMCTL_ADMIN_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ADMIN_DIR))
}

/// The query API next to an admin endpoint: same host, the default query port.
fn query_beside(server: &str) -> String {
    let rest = server.split_once("://").map(|(_, r)| r).unwrap_or(server);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let host = match host_port.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host_port,
    };
    format!("http://{host}:{DEFAULT_QUERY_PORT}")
}

fn nonempty(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// Merge: flags first, then the chosen context, then the defaults. The context is the
/// `--context` flag, else `FATHOMCTL_CONTEXT`, else the file's `current`.
pub fn resolve(
    file: &ContextFile,
    context_flag: Option<&str>,
    server_flag: Option<&str>,
    query_flag: Option<&str>,
) -> Result<Target, String> {
    let chosen = context_flag
        .map(str::to_string)
        .or_else(|| std::env::var("FATHOMCTL_CONTEXT").ok().filter(|c| !c.is_empty()))
        .or_else(|| (!file.current.is_empty()).then(|| file.current.clone()));
    let ctx = match &chosen {
        Some(name) => file.contexts.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = file.contexts.keys().map(String::as_str).collect();
            format!(
                "no context {name:?} (known: {}); add it with `fathomctl context set {name} --server ADDR`",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            )
        })?,
        None => Context::default(),
    };
    // The control port is TLS-only.
    let tls = true;
    let server = server_flag
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| nonempty(&ctx.server).map(|_| ctx.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let server = normalize_url(&server, tls);
    let query = match query_flag.filter(|s| !s.is_empty()) {
        Some(q) => normalize_url(q, false),
        None if !ctx.query.is_empty() => normalize_url(&ctx.query, false),
        None if server_flag.is_some() || !ctx.server.is_empty() => query_beside(&server),
        None => format!("http://127.0.0.1:{DEFAULT_QUERY_PORT}"),
    };
    let (mut ca, mut cert, mut key) = (nonempty(&ctx.ca), nonempty(&ctx.cert), nonempty(&ctx.key));
    if ca.is_none() && cert.is_none() && key.is_none() {
        let dir = admin_dir();
        if dir.join("ca.pem").exists() {
            ca = Some(dir.join("ca.pem"));
            cert = Some(dir.join("admin.pem"));
            key = Some(dir.join("admin.key"));
        }
    }
    Ok(Target {
        context: chosen,
        server_from_flag: server_flag.is_some_and(|s| !s.is_empty()),
        server,
        query,
        ca,
        cert,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> ContextFile {
        let mut f = ContextFile { current: "a".into(), ..Default::default() };
        f.contexts
            .insert("a".into(), Context { server: "10.0.0.1:20035".into(), ..Default::default() });
        f.contexts.insert(
            "b".into(),
            Context {
                server: "b.example:7000".into(),
                query: "http://b.example:8000".into(),
                ..Default::default()
            },
        );
        f
    }

    #[test]
    fn flags_beat_the_context_which_beats_defaults() {
        let f = file();
        let t = resolve(&f, None, None, None).unwrap();
        assert_eq!(t.server, "https://10.0.0.1:20035");
        assert_eq!(t.query, "http://10.0.0.1:20416");
        assert_eq!(t.context.as_deref(), Some("a"));
        let t = resolve(&f, Some("b"), None, None).unwrap();
        assert_eq!(
            (t.server.as_str(), t.query.as_str()),
            ("https://b.example:7000", "http://b.example:8000")
        );
        let t = resolve(&f, Some("b"), Some("https://c:1"), Some("c:2")).unwrap();
        assert_eq!((t.server.as_str(), t.query.as_str()), ("https://c:1", "http://c:2"));
        let none = resolve(&ContextFile::default(), None, None, None).unwrap();
        assert_eq!(none.server, DEFAULT_SERVER);
        assert_eq!(none.query, "http://127.0.0.1:20416");
        let err = resolve(&f, Some("nope"), None, None).unwrap_err();
        assert!(err.contains("nope") && err.contains("a, b"), "{err}");
    }

    #[test]
    fn the_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/fathomctl.toml");
        assert_eq!(ContextFile::load(&path).unwrap(), ContextFile::default());
        file().save(&path).unwrap();
        assert_eq!(ContextFile::load(&path).unwrap(), file());
        std::fs::write(&path, "current = 3").unwrap();
        assert!(ContextFile::load(&path).unwrap_err().contains("fathomctl.toml"));
    }
}
