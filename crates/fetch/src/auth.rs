//! Registry authentication: `WWW-Authenticate` challenges, Basic credentials and the
//! Bearer token flow of the distribution token spec (anonymous or with credentials).

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;

/// What a user authenticates with: a password, or an identity (refresh) token as
/// `docker login` stores for OAuth2 registries.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Secret {
    Password(String),
    IdentityToken(String),
}

/// A user's credentials for a registry. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: Secret,
}

impl Credentials {
    /// Parse `user:password`.
    pub fn parse(s: &str) -> Option<Credentials> {
        let (u, p) = s.split_once(':')?;
        Some(Credentials {
            username: u.to_string(),
            secret: Secret::Password(p.to_string()),
        })
    }

    /// `Authorization: Basic …`, for password credentials.
    pub fn basic_header(&self) -> Option<String> {
        let Secret::Password(p) = &self.secret else {
            return None;
        };
        let raw = format!("{}:{p}", self.username);
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
    }
}

/// Never prints the secret itself.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Password(***)"),
            Secret::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}:***)", self.username)
    }
}

/// One challenge from a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Lower-case scheme: `bearer` or `basic`.
    pub scheme: String,
    pub params: HashMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parse a `WWW-Authenticate` value: `Bearer realm="…",service="…",scope="…"`.
/// Several challenges in one header (`Basic realm="a", Bearer realm="b"`) are split where a
/// new scheme token starts.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let s = header.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && (s[*i] == b' ' || s[*i] == b'\t' || s[*i] == b',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= s.len() {
            break;
        }
        // token: either a scheme (followed by space or end) or a param name (followed by '=').
        let start = i;
        while i < s.len() && !matches!(s[i], b' ' | b'\t' | b'=' | b',') {
            i += 1;
        }
        let token = &header[start..i];
        let mut j = i;
        while j < s.len() && (s[j] == b' ' || s[j] == b'\t') {
            j += 1;
        }
        if j < s.len() && s[j] == b'=' {
            // name=value
            i = j + 1;
            while i < s.len() && (s[i] == b' ' || s[i] == b'\t') {
                i += 1;
            }
            let value = if i < s.len() && s[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' && i + 1 < s.len() {
                        i += 1;
                    }
                    // Push whole UTF-8 characters.
                    let ch = header[i..].chars().next().unwrap();
                    v.push(ch);
                    i += ch.len_utf8();
                }
                i += 1;
                v
            } else {
                let vs = i;
                while i < s.len() && s[i] != b',' {
                    i += 1;
                }
                header[vs..i].trim().to_string()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(token.to_ascii_lowercase(), value);
            }
        } else if !token.is_empty() {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: HashMap::new(),
            });
        }
    }
    out
}

/// The body of a token endpoint's answer (GET or OAuth2 POST).
#[derive(serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    /// Seconds; the token spec's default is 60.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/centos:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/centos:pull"));
    }

    #[test]
    fn several_challenges_and_quoting() {
        let c = parse_challenges(
            r#"Basic realm="a \"quoted\", realm", Bearer realm=https://x/t ,service="s""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("a \"quoted\", realm"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("https://x/t"));
        assert_eq!(c[1].param("service"), Some("s"));
    }

    #[test]
    fn credentials_hide_password() {
        let c = Credentials::parse("rdpull:s3cret").unwrap();
        assert_eq!(format!("{c:?}"), "Credentials(rdpull:***)");
        assert_eq!(c.basic_header().unwrap(), "Basic cmRwdWxsOnMzY3JldA==");
        assert!(Credentials::parse("nocolon").is_none());
    }
}
