//! containerd's registry host configuration, `<hosts-dir>/<registry>/hosts.toml`
//! (docs/hosts.md): mirrors tried in order with their capabilities, CA, client
//! certificate, TLS verification, path override and headers, then the server.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::error::{FetchError, SettingError};
use crate::options::EndpointSpec;

/// The endpoints for `registry` (as named in references: `docker.io`, `host:5000`) from
/// `dir`: its own `hosts.toml`, else `_default/hosts.toml`, else `None`.
/// `default_server` is the server URL used when the file names none.
pub fn load(
    dir: &Path,
    registry: &str,
    default_server: &str,
) -> Result<Option<Vec<EndpointSpec>>, FetchError> {
    for name in [registry, "_default"] {
        let path = dir.join(name).join("hosts.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => return parse(&text, &path, registry, default_server).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(setting(&path, e)),
        }
    }
    Ok(None)
}

fn setting(path: &Path, e: impl Into<SettingError>) -> FetchError {
    FetchError::setting(format!("hosts file {}", path.display()), e)
}

/// A rule of the hosts file that `path` breaks.
fn invalid(path: &Path, why: String) -> FetchError {
    setting(path, SettingError::Rule(why))
}

/// Mirrors in file order, then the server.
pub fn parse(
    text: &str,
    path: &Path,
    registry: &str,
    default_server: &str,
) -> Result<Vec<EndpointSpec>, FetchError> {
    let table: Table = text
        .parse()
        .map_err(|e: toml::de::Error| setting(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let server_url = match table.get("server") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid(path, "server must be a string".into())),
        None => default_server.to_string(),
    };
    let mut out = Vec::new();
    if let Some(hosts) = table.get("host") {
        let hosts = hosts
            .as_table()
            .ok_or_else(|| invalid(path, "host must be a table".into()))?;
        for (url, t) in hosts {
            let t = t
                .as_table()
                .ok_or_else(|| invalid(path, format!("host.\"{url}\" must be a table")))?;
            let mut spec = host_spec(url, t, base, path)?;
            spec.namespace = Some(registry.to_string());
            out.push(spec);
        }
    }
    // Top-level keys configure the server itself.
    out.push(host_spec(&server_url, &table, base, path)?);
    Ok(out)
}

fn host_spec(url: &str, t: &Table, base: &Path, path: &Path) -> Result<EndpointSpec, FetchError> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(invalid(
            path,
            format!("host {url:?} needs http:// or https://"),
        ));
    }
    let host = HostTable { url, t, base, path };
    let caps = host.capabilities()?;
    Ok(EndpointSpec {
        url: url.trim_end_matches('/').to_string(),
        override_path: host.boolean("override_path")?,
        pull: caps.iter().any(|c| c == "pull"),
        resolve: caps.iter().any(|c| c == "resolve"),
        ca: host.strings("ca")?.iter().map(|p| host.file(p)).collect(),
        client: host.client()?,
        skip_verify: host.boolean("skip_verify")?,
        headers: host.headers()?,
        namespace: None,
    })
}

/// One host's table (or the top level, for the server) of a hosts file.
struct HostTable<'a> {
    url: &'a str,
    t: &'a Table,
    /// The hosts file's directory: relative certificate paths are below it.
    base: &'a Path,
    path: &'a Path,
}

impl HostTable<'_> {
    fn bad(&self, key: &str, want: &str) -> FetchError {
        invalid(self.path, format!("{}: {key} must be {want}", self.url))
    }

    /// A string or an array of strings; none when absent.
    fn strings(&self, key: &str) -> Result<Vec<String>, FetchError> {
        match self.t.get(key) {
            None => Ok(vec![]),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.bad(key, "a string or strings"))
                })
                .collect(),
            Some(_) => Err(self.bad(key, "a string or strings")),
        }
    }

    fn boolean(&self, key: &str) -> Result<bool, FetchError> {
        match self.t.get(key) {
            None => Ok(false),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(_) => Err(self.bad(key, "true or false")),
        }
    }

    fn file(&self, p: &str) -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    /// `capabilities`, all three when absent, as containerd reads it.
    fn capabilities(&self) -> Result<Vec<String>, FetchError> {
        let caps = match self.t.get("capabilities") {
            None => vec![
                "pull".to_string(),
                "resolve".to_string(),
                "push".to_string(),
            ],
            Some(_) => self.strings("capabilities")?,
        };
        match caps
            .iter()
            .find(|c| !matches!(c.as_str(), "pull" | "resolve" | "push"))
        {
            Some(c) => Err(invalid(
                self.path,
                format!("{}: unknown capability {c:?}", self.url),
            )),
            None => Ok(caps),
        }
    }

    /// client: "both.pem", ["cert", "key"], or [["cert", "key"], ...] (the first pair is used).
    fn client(&self) -> Result<Option<(PathBuf, Option<PathBuf>)>, FetchError> {
        let forms = "a path, [cert, key] or [[cert, key]]";
        Ok(match self.t.get("client") {
            None => None,
            Some(Value::String(s)) => Some((self.file(s), None)),
            Some(Value::Array(a)) => match a.first() {
                None => None,
                Some(Value::String(_)) => {
                    let v = self.strings("client")?;
                    Some((self.file(&v[0]), v.get(1).map(|k| self.file(k))))
                }
                Some(Value::Array(pair)) => {
                    let s: Vec<&str> = pair.iter().filter_map(Value::as_str).collect();
                    let cert = s
                        .first()
                        .ok_or_else(|| self.bad("client", "[cert, key] pairs"))?;
                    Some((self.file(cert), s.get(1).map(|k| self.file(k))))
                }
                Some(_) => return Err(self.bad("client", forms)),
            },
            Some(_) => return Err(self.bad("client", forms)),
        })
    }

    /// `[header]`: each key a string or strings.
    fn headers(&self) -> Result<Vec<(String, String)>, FetchError> {
        let mut headers = Vec::new();
        let Some(h) = self.t.get("header") else {
            return Ok(headers);
        };
        let h = h.as_table().ok_or_else(|| self.bad("header", "a table"))?;
        for (k, v) in h {
            match v {
                Value::String(s) => headers.push((k.clone(), s.clone())),
                Value::Array(a) => {
                    for x in a {
                        let x = x.as_str().ok_or_else(|| self.bad("header", "strings"))?;
                        headers.push((k.clone(), x.to_string()));
                    }
                }
                _ => return Err(self.bad("header", "strings")),
            }
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_in_order_then_server() {
        let text = r#"
server = "https://registry-1.docker.io"
ca = "/etc/ca.pem"

[host."https://mirror-b.example"]
  capabilities = ["pull"]
  skip_verify = true
  client = [["certs/c.pem", "certs/c.key"]]
  [host."https://mirror-b.example".header]
    x-token = "t"
    x-multi = ["1", "2"]

[host."http://mirror-a.example:5000/custom/v2"]
  capabilities = ["pull", "resolve"]
  override_path = true
  ca = ["a.pem", "/abs/b.pem"]
"#;
        let path = Path::new("/etc/containerd/certs.d/docker.io/hosts.toml");
        let e = parse(text, path, "docker.io", "https://unused").unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].url, "https://mirror-b.example");
        assert!(e[0].pull && !e[0].resolve && e[0].skip_verify);
        assert_eq!(
            e[0].client,
            Some((
                PathBuf::from("/etc/containerd/certs.d/docker.io/certs/c.pem"),
                Some(PathBuf::from(
                    "/etc/containerd/certs.d/docker.io/certs/c.key"
                ))
            ))
        );
        assert_eq!(
            e[0].headers,
            vec![
                ("x-token".into(), "t".into()),
                ("x-multi".into(), "1".into()),
                ("x-multi".into(), "2".into())
            ]
        );
        assert_eq!(e[0].namespace.as_deref(), Some("docker.io"));
        assert_eq!(e[1].url, "http://mirror-a.example:5000/custom/v2");
        assert!(e[1].override_path && e[1].pull && e[1].resolve);
        assert_eq!(
            e[1].ca,
            vec![
                PathBuf::from("/etc/containerd/certs.d/docker.io/a.pem"),
                PathBuf::from("/abs/b.pem")
            ]
        );
        assert_eq!(e[2].url, "https://registry-1.docker.io");
        assert!(e[2].pull && e[2].resolve && e[2].namespace.is_none());
        assert_eq!(e[2].ca, vec![PathBuf::from("/etc/ca.pem")]);
    }

    #[test]
    fn defaults_and_errors() {
        let p = Path::new("/x/h/hosts.toml");
        let e = parse("", p, "h:1", "https://h:1").unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].url, "https://h:1");
        let err = parse("[host.\"mirror\"]\n", p, "h", "https://h")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "hosts file /x/h/hosts.toml: host \"mirror\" needs http:// or https://"
        );
        let err = parse(
            "[host.\"https://m\"]\ncapabilities = [\"fly\"]\n",
            p,
            "h",
            "https://h",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "hosts file /x/h/hosts.toml: https://m: unknown capability \"fly\""
        );
        assert!(parse("server = [", p, "h", "https://h")
            .unwrap_err()
            .to_string()
            .starts_with("hosts file /x/h/hosts.toml: "));
    }
}
