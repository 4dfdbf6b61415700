//! The DigitalOcean provider's own configuration keys, declared here rather than in core
//! configuration: [`SETTINGS`] tells the config loader each key's name, default, help and
//! validator (through [`crate::provider::REGISTRY`]), and [`DigitalOceanSettings`] is what the
//! provider reads back from the validated values in [`Config::provider_settings`].

use std::collections::BTreeMap;

use super::{config_error, DEFAULT_API_URL};
use crate::config::Config;
use crate::provider::{ProviderError, ProviderSetting};

/// The key of the API base URL. Its env var, `DIGITALOCEAN_API_URL`, is its UPPER_SNAKE form,
/// and its flag `--digitalocean-api-url`, like every key's.
pub const API_URL_KEY: &str = "digitalocean-api-url";

/// Every key of the `digitalocean` provider.
pub const SETTINGS: &[ProviderSetting] = &[ProviderSetting {
    key: API_URL_KEY,
    default: DEFAULT_API_URL,
    value_name: "URL",
    help: "Base URL of the DigitalOcean API, e.g. a local fake's http://127.0.0.1:PORT",
    allowed: "an https:// URL with a host and no credentials, query or fragment; http:// only \
              for localhost / a loopback address (a local fake)",
    validate: check_api_url,
}];

/// The `digitalocean` provider's settings, read from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigitalOceanSettings {
    /// Base URL of the DigitalOcean API, without a trailing slash (`digitalocean-api-url`).
    pub api_url: String,
}

impl Default for DigitalOceanSettings {
    fn default() -> Self {
        Self {
            api_url: DEFAULT_API_URL.to_string(),
        }
    }
}

impl DigitalOceanSettings {
    /// The settings in `config` (the loader has validated them; unset keys take their default).
    pub fn from_config(config: &Config) -> Result<Self, ProviderError> {
        Self::from_values(&config.provider_settings)
    }

    /// The settings from raw values by key, each checked again (a hand-built [`Config`] has
    /// not been through the loader); a missing key takes its default.
    pub fn from_values(values: &BTreeMap<String, String>) -> Result<Self, ProviderError> {
        let api_url = match values.get(API_URL_KEY) {
            None => DEFAULT_API_URL.to_string(),
            Some(text) => check_api_url(text.trim())
                .map_err(|reason| config_error(format!("{API_URL_KEY} {text:?}: {reason}")))?,
        };
        Ok(Self { api_url })
    }
}

/// `digitalocean-api-url`: an http(s) URL with a host, no credentials (they would end up in
/// messages), no query or fragment; plain http only for this machine, as the token travels
/// in it. Returned without a trailing slash; empty means the default.
pub fn check_api_url(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        // Empty (e.g. `DIGITALOCEAN_API_URL=`) means the default, as it did before the key.
        return Ok(DEFAULT_API_URL.to_string());
    }
    let url = reqwest::Url::parse(text.trim()).map_err(|e| format!("not a URL: {e}"))?;
    let host = url.host_str().unwrap_or("");
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(
                "plain http would send the API token in clear text: use https (http is for \
                 localhost only)"
                    .into(),
            )
        }
        other => return Err(format!("scheme {other:?} is not http or https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not carry credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the URL must not have a query or fragment".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn config_settings_are_read_back_with_defaults_for_missing_keys() {
        assert_eq!(
            DigitalOceanSettings::from_values(&BTreeMap::new())
                .ok()
                .map(|s| s.api_url),
            Some(DEFAULT_API_URL.to_string())
        );
        let values = BTreeMap::from([(API_URL_KEY.to_string(), "http://127.0.0.1:9/".into())]);
        assert_eq!(
            DigitalOceanSettings::from_values(&values)
                .ok()
                .map(|s| s.api_url),
            Some("http://127.0.0.1:9".to_string())
        );
        let bad = BTreeMap::from([(API_URL_KEY.to_string(), "http://example.com".into())]);
        assert!(DigitalOceanSettings::from_values(&bad).is_err());
    }
}
