//! Turning HTTP failures into [`FetchError`]s.

use reqwest::{Response, StatusCode};

use std::future::Future;
use std::time::Duration;

use crate::error::FetchError;

pub(crate) fn http_error(what: &str, url: &str, e: reqwest::Error) -> FetchError {
    FetchError::Http {
        what: what.to_string(),
        url: url.to_string(),
        source: e.without_url(),
    }
}

pub(crate) async fn status_error(
    what: &str,
    url: &str,
    status: StatusCode,
    resp: Response,
) -> FetchError {
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    FetchError::Status {
        what: what.to_string(),
        url: url.to_string(),
        status: status.as_u16(),
        detail: error_detail(resp).await,
        retry_after,
    }
}

/// The first error `message` of a registry's JSON error body, if any.
pub(crate) async fn error_detail(resp: Response) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<E>,
    }
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let body = match resp.bytes().await {
        Ok(b) if b.len() < 64 << 10 => b,
        _ => return String::new(),
    };
    match serde_json::from_slice::<Errors>(&body) {
        Ok(e) if !e.errors.is_empty() => {
            let e = &e.errors[0];
            let msg: String = format!("{} {}", e.code, e.message)
                .chars()
                .take(200)
                .collect();
            format!(" ({})", msg.trim())
        }
        _ => String::new(),
    }
}

/// `work` (the fetch of `what`, a small object) if it is done within `limit`.
pub(crate) async fn within<T>(
    limit: Duration,
    what: &str,
    work: impl Future<Output = Result<T, FetchError>>,
) -> Result<T, FetchError> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| FetchError::TimedOut {
            what: what.to_string(),
            limit: limit.as_secs(),
        })?
}
