//! The HTTP side of the driver: one place that builds requests, authenticates them, times
//! them out, retries them and turns failures into messages that carry DigitalOcean's error
//! `id`, `message` and `request_id` but never the token.

use std::fmt;
use std::hash::BuildHasher;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info_span, warn, Instrument};

use super::wire::ErrorBody;
use super::{DigitalOceanOptions, PROVIDER};
use crate::config::SecretToken;
use crate::provider::ProviderError;

/// DigitalOcean's rate-limit header: when the oldest counted request expires (Unix seconds).
const RATELIMIT_RESET: &str = "ratelimit-reset";

/// Longest piece of a non-JSON error body quoted in an error.
const MAX_QUOTED_BODY: usize = 300;

/// Why an API call failed, once retrying is over.
#[derive(Debug, thiserror::Error)]
pub(super) enum CallError {
    /// DigitalOcean answered with a status that retrying cannot fix (4xx other than 429).
    #[error("{call}: HTTP {status}: {detail}")]
    Status {
        /// `METHOD /path`.
        call: String,
        /// The status.
        status: StatusCode,
        /// DigitalOcean's `id: message (request_id: ...)`.
        detail: String,
        /// Attempts made, this one included.
        attempts: u32,
    },
    /// Every attempt allowed failed with a retryable error, or the next wait would pass the
    /// retry budget.
    #[error("{call}: gave up after {attempts} attempt(s) in {elapsed_ms} ms ({why}); last error: {last}")]
    Exhausted {
        /// `METHOD /path`.
        call: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent, waits included.
        elapsed_ms: u128,
        /// Which bound stopped the retries.
        why: String,
        /// The last failure, with DigitalOcean's error fields when it answered.
        last: String,
    },
    /// The request could not be sent for a reason retrying cannot fix.
    #[error("{call}: {detail}")]
    Transport {
        /// `METHOD /path`.
        call: String,
        /// What went wrong.
        detail: String,
    },
    /// The answer does not have the shape the contract promises.
    #[error("{call}: unexpected response: {detail}")]
    Unexpected {
        /// `METHOD /path`.
        call: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl CallError {
    /// The status of a non-retryable error answer.
    pub(super) fn status(&self) -> Option<StatusCode> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether an earlier attempt failed in a way that leaves open whether DigitalOcean acted
    /// on it (timeout, 5xx, dropped connection): the outcome must then be read back.
    pub(super) fn after_ambiguous_attempt(&self) -> bool {
        match self {
            CallError::Status { attempts, .. } => *attempts > 1,
            CallError::Exhausted { .. } => true,
            CallError::Transport { .. } | CallError::Unexpected { .. } => false,
        }
    }
}

/// One failed attempt that may succeed if tried again.
struct Retryable {
    detail: String,
    /// How long the API asked us to wait (429).
    wait_hint: Option<Duration>,
}

/// Authenticated, timed-out, retrying access to the DigitalOcean API.
pub(super) struct ApiClient {
    http: reqwest::Client,
    base: Url,
    /// `Bearer <token>`, marked sensitive so `http`'s own Debug hides it.
    auth: HeaderValue,
    /// Kept only to scrub it out of any text the server sends back.
    token: SecretToken,
    options: DigitalOceanOptions,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .field("token", &self.token) // SecretToken's Debug is `<redacted>`
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn config_error(message: impl Into<String>) -> ProviderError {
    ProviderError::Config {
        provider: PROVIDER,
        message: message.into(),
    }
}

/// Whether `url` points at this machine, where plain HTTP cannot expose the token on a network
/// and no proxy is wanted.
fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

impl ApiClient {
    /// Validates the base URL and token and builds the HTTP client. Nothing is sent.
    pub(super) fn new(
        base_url: &str,
        token: SecretToken,
        options: DigitalOceanOptions,
    ) -> Result<Self, ProviderError> {
        let base = Url::parse(base_url.trim())
            .map_err(|e| config_error(format!("API URL {base_url:?} is not a URL: {e}")))?;
        let loopback = is_loopback(&base);
        match base.scheme() {
            "https" => {}
            // Plain HTTP would send the bearer token in clear text: only for local test
            // servers.
            "http" if loopback => {}
            other => {
                return Err(config_error(format!(
                    "API URL {} must use https (http is allowed only for localhost), not {other}",
                    base.as_str()
                )))
            }
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(config_error(format!(
                "API URL {} has no host",
                base.as_str()
            )));
        }
        if !base.username().is_empty() || base.password().is_some() {
            // Credentials in the URL would end up in error messages.
            return Err(config_error(
                "API URL must not carry credentials; the token is sent as a bearer header",
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(config_error(format!(
                "API URL {} must not have a query or fragment",
                base.as_str()
            )));
        }
        if token.expose().trim().is_empty() {
            return Err(config_error("cloud-provider-token is empty"));
        }
        // The error of `from_str` does not quote the value, so the token cannot leak here.
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose().trim()))
            .map_err(|_| {
                config_error(
                    "cloud-provider-token contains characters not allowed in an HTTP header",
                )
            })?;
        auth.set_sensitive(true);
        if options.max_attempts == 0 {
            return Err(config_error("max_attempts must be at least 1"));
        }

        let mut builder = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(concat!("kubescaler/", env!("CARGO_PKG_VERSION")))
            // The API does not redirect; following one could carry the token elsewhere.
            .redirect(reqwest::redirect::Policy::none());
        if loopback {
            // A proxy from the environment must not intercept a local test server.
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            auth,
            token,
            options,
        })
    }

    /// The driver's options.
    pub(super) fn options(&self) -> &DigitalOceanOptions {
        &self.options
    }

    /// The API URL of `segments` (each percent-encoded as one path segment) with `query`.
    pub(super) fn url(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Url, CallError> {
        let mut url = self.base.clone();
        if let Some(bad) = segments
            .iter()
            .find(|s| s.is_empty() || **s == "." || **s == "..")
        {
            // `..` would silently address another resource.
            return Err(CallError::Unexpected {
                call: format!("/{}", segments.join("/")),
                detail: format!("refusing to build a path with the segment {bad:?}"),
            });
        }
        url.path_segments_mut()
            .map_err(|()| CallError::Unexpected {
                call: self.base.as_str().to_owned(),
                detail: "the API URL cannot take a path".to_owned(),
            })?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    /// `GET url`, decoded as `T`.
    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        op: &'static str,
        url: Url,
    ) -> Result<T, CallError> {
        let call = describe_call(&Method::GET, &url);
        let bytes = self.call(op, Method::GET, url, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| CallError::Unexpected {
            call,
            detail: format!("invalid JSON: {e}"),
        })
    }

    /// `PUT url` with a JSON body; the answer decoded as `T`.
    pub(super) async fn put_json<B: Serialize, T: DeserializeOwned>(
        &self,
        op: &'static str,
        url: Url,
        body: &B,
    ) -> Result<T, CallError> {
        let call = describe_call(&Method::PUT, &url);
        let bytes = serde_json::to_vec(body).map_err(|e| CallError::Transport {
            call: call.clone(),
            detail: format!("cannot encode the request body: {e}"),
        })?;
        let answer = self.call(op, Method::PUT, url, Some(bytes)).await?;
        serde_json::from_slice(&answer).map_err(|e| CallError::Unexpected {
            call,
            detail: format!("invalid JSON: {e}"),
        })
    }

    /// `DELETE url`.
    pub(super) async fn delete(&self, op: &'static str, url: Url) -> Result<(), CallError> {
        self.call(op, Method::DELETE, url, None).await.map(drop)
    }

    /// Turns a failed call into the provider's error, with any echo of the token removed.
    pub(super) fn provider_error(&self, op: &str, error: &CallError) -> ProviderError {
        ProviderError::Api {
            provider: PROVIDER,
            op: op.to_owned(),
            message: self.scrub(&error.to_string()),
        }
    }

    /// `text` without the token: the server may echo request headers back.
    pub(super) fn scrub(&self, text: &str) -> String {
        let token = self.token.expose().trim();
        if token.is_empty() {
            text.to_owned()
        } else {
            text.replace(token, "<redacted>")
        }
    }

    /// Sends one logical call, retrying 429, 5xx and connection/timeout failures with
    /// exponential backoff and jitter, within `max_attempts` and `retry_budget`.
    async fn call(
        &self,
        op: &'static str,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, CallError> {
        let call = describe_call(&method, &url);
        // Attempt and status go on each event: re-recorded on the span, a text log would
        // repeat them once per attempt.
        let span = info_span!(
            "digitalocean_api",
            op,
            method = %method,
            path = %url.path(),
        );
        async {
            let options = &self.options;
            let started = Instant::now();
            let mut attempt: u32 = 0;
            loop {
                attempt += 1;
                // The whole call, waits included, stays within the budget: the last attempt
                // gets only what is left of it.
                let remaining = options.retry_budget.saturating_sub(started.elapsed());
                let timeout = options.request_timeout.min(remaining).max(Duration::from_millis(1));
                let mut request = self
                    .http
                    .request(method.clone(), url.clone())
                    .header(AUTHORIZATION, self.auth.clone())
                    .header(ACCEPT, "application/json")
                    .timeout(timeout);
                if let Some(body) = &body {
                    request = request
                        .header(CONTENT_TYPE, "application/json")
                        .body(body.clone());
                }
                let failure = match send(request).await {
                    Ok((status, headers, bytes)) => {
                        debug!(attempt, status = status.as_u16(), "DigitalOcean API answered");
                        if status.is_success() {
                            return Ok(bytes);
                        }
                        let detail = format!("HTTP {status}: {}", self.error_detail(&bytes));
                        if status == StatusCode::TOO_MANY_REQUESTS {
                            Retryable {
                                detail,
                                wait_hint: rate_limit_wait(&headers, SystemTime::now()),
                            }
                        } else if status.is_server_error() {
                            Retryable {
                                detail,
                                wait_hint: None,
                            }
                        } else {
                            return Err(CallError::Status {
                                call,
                                status,
                                detail: self.error_detail(&bytes),
                                attempts: attempt,
                            });
                        }
                    }
                    Err(error) if is_retryable(&error) => Retryable {
                        detail: self.scrub(&describe_transport(&error)),
                        wait_hint: None,
                    },
                    Err(error) => {
                        return Err(CallError::Transport {
                            call,
                            detail: self.scrub(&describe_transport(&error)),
                        })
                    }
                };

                let exhausted = |why: String| CallError::Exhausted {
                    call: call.clone(),
                    attempts: attempt,
                    elapsed_ms: started.elapsed().as_millis(),
                    why,
                    last: failure.detail.clone(),
                };
                if attempt >= options.max_attempts {
                    warn!(attempt, error = %failure.detail, "DigitalOcean API call failed, no attempts left");
                    return Err(exhausted(format!(
                        "max_attempts is {}",
                        options.max_attempts
                    )));
                }
                let wait = retry_wait(options, attempt, failure.wait_hint);
                if started.elapsed().saturating_add(wait) >= options.retry_budget {
                    warn!(attempt, wait_ms = wait.as_millis() as u64, error = %failure.detail,
                        "DigitalOcean API call failed, retry budget spent");
                    return Err(exhausted(format!(
                        "the next retry, in {} ms, would pass the {} ms retry budget",
                        wait.as_millis(),
                        options.retry_budget.as_millis()
                    )));
                }
                warn!(attempt, wait_ms = wait.as_millis() as u64, error = %failure.detail,
                    "DigitalOcean API call failed, retrying");
                tokio::time::sleep(wait).await;
            }
        }
        .instrument(span)
        .await
    }

    /// DigitalOcean's `id: message (request_id: ...)`, or the start of a body that is not its
    /// error JSON.
    fn error_detail(&self, body: &[u8]) -> String {
        let text = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody {
                id,
                message,
                request_id,
            }) if id.is_some() || message.is_some() => {
                let mut text = match (id, message) {
                    (Some(id), Some(message)) => format!("{id}: {message}"),
                    (Some(one), None) | (None, Some(one)) => one,
                    (None, None) => String::new(),
                };
                if let Some(request_id) = request_id.filter(|r| !r.is_empty()) {
                    text.push_str(&format!(" (request_id: {request_id})"));
                }
                text
            }
            _ => {
                let raw = String::from_utf8_lossy(body);
                let raw = raw.trim();
                if raw.is_empty() {
                    "(empty body)".to_owned()
                } else if raw.chars().count() > MAX_QUOTED_BODY {
                    let cut: String = raw.chars().take(MAX_QUOTED_BODY).collect();
                    format!("{cut}...")
                } else {
                    raw.to_owned()
                }
            }
        };
        self.scrub(&text)
    }
}

/// `METHOD /path` for messages (never the host, query or headers).
fn describe_call(method: &Method, url: &Url) -> String {
    format!("{method} {}", url.path())
}

/// Sends a request and reads the whole answer, so that a body cut off mid-way counts as a
/// failed attempt like any other transport error.
async fn send(
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, HeaderMap, Vec<u8>), reqwest::Error> {
    let response = request.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await?;
    Ok((status, headers, bytes.to_vec()))
}

/// Connection failures, timeouts and broken exchanges may pass; a request that cannot be
/// built or a redirect will not.
fn is_retryable(error: &reqwest::Error) -> bool {
    error.is_timeout() || error.is_connect() || error.is_request() || error.is_body()
}

/// A transport error with its causes (reqwest's own Display stops at the outermost one), and
/// without the URL (the caller names the call).
fn describe_transport(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    if error.is_timeout() {
        parts.push("timed out".to_owned());
    }
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        let text = match e.downcast_ref::<reqwest::Error>() {
            // reqwest's Display appends the URL; the caller already names the call.
            Some(re) if re.url().is_some() => {
                let mut stripped = format!("{re}");
                if let Some(url) = re.url() {
                    stripped = stripped.replace(&format!(" for url ({url})"), "");
                }
                stripped
            }
            _ => e.to_string(),
        };
        if !text.is_empty() && parts.last() != Some(&text) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// How long a 429 asks us to wait: `Retry-After` (seconds) if present, else until
/// `ratelimit-reset` (Unix seconds). Zero when the reset time has already passed.
pub(super) fn rate_limit_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let number = |name: &str| -> Option<u64> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(seconds) = number(RETRY_AFTER.as_str()) {
        return Some(Duration::from_secs(seconds));
    }
    let reset = number(RATELIMIT_RESET)?;
    let reset_at = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(reset))?;
    Some(reset_at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait before attempt `attempt + 1`: exponential from `initial_backoff`, capped at
/// `max_backoff`, with "equal jitter" (half fixed, half random) so that several kubescalers
/// (or retries of several calls) do not hit the API in lockstep. A 429's own wait is honoured
/// when longer, plus some jitter.
pub(super) fn retry_wait(
    options: &DigitalOceanOptions,
    attempt: u32,
    wait_hint: Option<Duration>,
) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let exponential = options
        .initial_backoff
        .saturating_mul(1u32 << exponent)
        .min(options.max_backoff);
    let half = exponential / 2;
    let backoff = half.saturating_add(scale(half, random_fraction()));
    match wait_hint {
        Some(hint) => {
            backoff.max(hint.saturating_add(scale(options.initial_backoff, random_fraction())))
        }
        None => backoff,
    }
}

/// `d * fraction` for `fraction` in [0, 1), without the panics of `Duration::mul_f64`.
fn scale(d: Duration, fraction: f64) -> Duration {
    // `as` saturates on float-to-int conversion.
    Duration::from_nanos((d.as_nanos() as f64 * fraction.clamp(0.0, 1.0)) as u64)
}

/// A number in [0, 1) good enough for jitter, from std's randomly keyed hasher (no new
/// dependency for a non-cryptographic need).
fn random_fraction() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}
