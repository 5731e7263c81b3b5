//! Credentials the way the docker CLI stores them: `$DOCKER_CONFIG/config.json` (default
//! `~/.docker/config.json`) with `auths` (base64 `auth`, `identitytoken`), `credsStore` and
//! `credHelpers`, the latter two through `docker-credential-<name> get`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::AsyncWriteExt;

use std::io::ErrorKind;

use crate::auth::{Credentials, Secret};
use crate::error::{FetchError, SettingError};
use crate::reference::DEFAULT_REGISTRY;

/// How long a credential helper may take (some prompt a keychain and hang without one).
const HELPER_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Default, serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
}

#[derive(Default, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(serde::Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The docker config directory: `dir`, else `$DOCKER_CONFIG`, else `~/.docker`.
pub fn config_dir(dir: Option<&Path>) -> Option<PathBuf> {
    dir.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("DOCKER_CONFIG").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
}

/// The key docker uses for a registry host: Docker Hub is `https://index.docker.io/v1/`.
fn server_key(registry: &str) -> String {
    if registry == DEFAULT_REGISTRY {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// `https://host:port/v1/` → `host:port`; Docker Hub's aliases → `docker.io`.
fn normalize(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => DEFAULT_REGISTRY.to_string(),
        h => h.to_string(),
    }
}

/// Where a docker config says the credentials for a registry are.
#[derive(Debug)]
#[non_exhaustive]
pub enum Found {
    /// `credHelpers` names a helper for the registry.
    Helper(String),
    /// `credsStore` names a helper for every registry; `auths` answers if it has nothing
    /// (an `auths` entry that does not parse matters only then).
    Store(String, Result<Option<Credentials>, FetchError>),
    /// From `auths`, or none.
    Inline(Option<Credentials>),
}

/// Credentials for `registry` (as a reference names it, e.g. `docker.io`, `host:5000`)
/// from the docker config in `dir`, if any. A missing file means none.
pub async fn lookup(dir: Option<&Path>, registry: &str) -> Result<Option<Credentials>, FetchError> {
    let Some(dir) = config_dir(dir) else {
        return Ok(None);
    };
    let path = dir.join("config.json");
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(FetchError::setting(
                format!("docker config {}", path.display()),
                e,
            ))
        }
    };
    let host = normalize(registry);
    match parse(&data, &path, registry)? {
        Found::Helper(helper) => run_helper(&helper, &server_key(&host)).await,
        Found::Store(store, inline) => match run_helper(&store, &server_key(&host)).await? {
            Some(c) => Ok(Some(c)),
            None => inline,
        },
        Found::Inline(inline) => Ok(inline),
    }
}

/// What the docker config `data` (read from `path`, named in errors) says of `registry`.
/// Pure: no I/O, any bytes.
pub fn parse(data: &[u8], path: &Path, registry: &str) -> Result<Found, FetchError> {
    let bad = |e: SettingError| FetchError::setting(format!("docker config {}", path.display()), e);
    // serde's message names the field and position, never the value.
    let cfg: ConfigFile = serde_json::from_slice(data).map_err(|e| bad(e.into()))?;
    let host = normalize(registry);
    if let Some((_, helper)) = cfg.cred_helpers.iter().find(|(k, _)| normalize(k) == host) {
        return Ok(Found::Helper(helper.clone()));
    }
    let inline = inline_credentials(&cfg, &host).map_err(bad);
    Ok(match &cfg.creds_store {
        Some(store) => Found::Store(store.clone(), inline),
        None => Found::Inline(inline?),
    })
}

/// The `auths` entry for `host`: an identity token, base64 `auth`, or a username and
/// password.
fn inline_credentials(cfg: &ConfigFile, host: &str) -> Result<Option<Credentials>, SettingError> {
    let Some((_, entry)) = cfg.auths.iter().find(|(k, _)| normalize(k) == host) else {
        return Ok(None);
    };
    if let Some(t) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        let username = match (&entry.auth, &entry.username) {
            (_, Some(u)) => u.clone(),
            (Some(a), None) => decode_auth(a).map(|(u, _)| u).unwrap_or_default(),
            _ => String::new(),
        };
        return Ok(Some(Credentials {
            username,
            secret: Secret::IdentityToken(t.clone()),
        }));
    }
    if let Some(a) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
        let (username, password) = decode_auth(a).ok_or_else(|| {
            SettingError::Rule(format!("auths.{host}.auth is not base64 user:password"))
        })?;
        return Ok(Some(Credentials {
            username,
            secret: Secret::Password(password),
        }));
    }
    Ok(match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Some(Credentials {
            username: u.clone(),
            secret: Secret::Password(p.clone()),
        }),
        _ => None,
    })
}

fn decode_auth(a: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(a.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// `docker-credential-<name> get`, the server on stdin. "Not found" (non-zero exit) is
/// no credentials; a username `<token>` marks an identity token.
async fn run_helper(name: &str, server: &str) -> Result<Option<Credentials>, FetchError> {
    let program = format!("docker-credential-{name}");
    let bad = |e: SettingError| FetchError::setting(format!("credential helper {program}"), e);
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| bad(e.into()))?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(server.as_bytes())
        .await
        .map_err(|e| bad(e.into()))?;
    drop(stdin);
    let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            let secs = HELPER_TIMEOUT.as_secs();
            let late =
                std::io::Error::new(ErrorKind::TimedOut, format!("no answer within {secs} s"));
            bad(late.into())
        })?
        .map_err(|e| bad(e.into()))?;
    if !out.status.success() {
        return Ok(None);
    }
    let a: HelperAnswer =
        serde_json::from_slice(&out.stdout).map_err(|e| bad(SettingError::HelperAnswer(e)))?;
    if a.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if a.username == "<token>" {
        Credentials {
            username: String::new(),
            secret: Secret::IdentityToken(a.secret),
        }
    } else {
        Credentials {
            username: a.username,
            secret: Secret::Password(a.secret),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_normalise() {
        assert_eq!(normalize("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize("registry-1.docker.io"), "docker.io");
        assert_eq!(normalize("https://127.0.0.1:5443"), "127.0.0.1:5443");
        assert_eq!(normalize("127.0.0.1:5443/v2/"), "127.0.0.1:5443");
        assert_eq!(server_key("docker.io"), "https://index.docker.io/v1/");
    }

    #[tokio::test]
    async fn auths_entries() {
        let d = tempfile_dir();
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p:with:colons");
        std::fs::write(
            d.join("config.json"),
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"h:1":{{"auth":"","identitytoken":"tok","username":"x"}}}}}}"#),
        )
        .unwrap();
        let c = lookup(Some(&d), "docker.io").await.unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), &c.secret),
            ("u", &Secret::Password("p:with:colons".into()))
        );
        let c = lookup(Some(&d), "h:1").await.unwrap().unwrap();
        assert_eq!(c.secret, Secret::IdentityToken("tok".into()));
        assert!(lookup(Some(&d), "other:2").await.unwrap().is_none());
        std::fs::write(d.join("config.json"), r#"{"auths": ["secret-value"]}"#).unwrap();
        let e = lookup(Some(&d), "h:1").await.unwrap_err().to_string();
        assert!(
            e.starts_with("docker config ") && !e.contains("secret-value"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "rdpull-dockercfg-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
