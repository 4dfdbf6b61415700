//! The `digitalocean-api-url` key: default, layering (env `DIGITALOCEAN_API_URL` keeps
//! working, being the key's UPPER_SNAKE form), validation, and that the DigitalOcean provider
//! talks to the URL it names.

use std::collections::BTreeMap;

use kubescaler::cli::Overrides;
use kubescaler::config::{
    load, load_with_origins, Config, ConfigError, ConfigSources, ValueSource,
};
use kubescaler::provider::digitalocean::{self, DigitalOceanSettings, DEFAULT_API_URL};

mod dofake;

const TOKEN: &str = "dop_v1_api_url_token_0123456789";

/// The API URL as the provider reads it from its own settings.
fn api_url(config: &Config) -> String {
    DigitalOceanSettings::from_config(config)
        .unwrap_or_else(|e| panic!("{e}"))
        .api_url
}

fn env(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    [
        ("CLUSTER_NAME", "games"),
        ("NODE_POOL_NAME", "game-servers"),
        ("NODE_SELECTOR", "role=game-servers"),
        ("SERVER_POD_LABEL_NAME", "app"),
        ("SERVER_POD_LABEL_VALUE", "game-server"),
        ("CLOUD_PROVIDER_TOKEN", TOKEN),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn api_url_defaults_to_digitaloceans_public_api() {
    let loaded = load_with_origins(&ConfigSources {
        env: env(&[]),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api_url(&loaded.config), DEFAULT_API_URL);
    assert_eq!(loaded.origins["digitalocean-api-url"], ValueSource::Default);
    assert!(loaded
        .to_annotated_yaml()
        .contains("digitalocean-api-url: https://api.digitalocean.com"));
}

#[test]
fn api_url_env_var_is_digitalocean_api_url_and_a_flag_beats_it() {
    let mut sources = ConfigSources {
        env: env(&[("DIGITALOCEAN_API_URL", "http://127.0.0.1:8089/")]),
        ..Default::default()
    };
    let loaded = load_with_origins(&sources).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api_url(&loaded.config), "http://127.0.0.1:8089");
    assert_eq!(
        loaded.origins["digitalocean-api-url"],
        ValueSource::Env("DIGITALOCEAN_API_URL".into())
    );
    sources.flags =
        Overrides::from_pairs(&[("digitalocean-api-url", "https://do-proxy.example.com/api")])
            .unwrap_or_else(|e| panic!("{e}"));
    let config = load(&sources).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api_url(&config), "https://do-proxy.example.com/api");
}

#[test]
fn an_empty_api_url_means_the_default() {
    let config = load(&ConfigSources {
        env: env(&[("DIGITALOCEAN_API_URL", "")]),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api_url(&config), DEFAULT_API_URL);
}

#[test]
fn api_url_must_be_https_or_local_http_without_credentials() {
    for (bad, why) in [
        ("http://api.example.com", "clear text"),
        ("ftp://127.0.0.1", "not http or https"),
        ("api.digitalocean.com", "not a URL"),
        ("https://user:secret@api.digitalocean.com", "credentials"),
        ("https://api.digitalocean.com/?x=1", "query or fragment"),
    ] {
        let errors = load(&ConfigSources {
            env: env(&[("DIGITALOCEAN_API_URL", bad)]),
            ..Default::default()
        })
        .expect_err(bad);
        let found = errors.errors().iter().any(|e| {
            matches!(e, ConfigError::Invalid { key: "digitalocean-api-url", reason, origin, .. }
                if reason.contains(why) && *origin == ValueSource::Env("DIGITALOCEAN_API_URL".into()))
        });
        assert!(found, "{bad}: {errors}");
    }
    for good in [
        "https://api.digitalocean.com",
        "http://localhost:9000",
        "http://[::1]:9000",
    ] {
        load(&ConfigSources {
            env: env(&[("DIGITALOCEAN_API_URL", good)]),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digitalocean_provider_talks_to_the_configured_api_url() {
    let Some(spec_path) =
        dofake::spec_or_skip("the_digitalocean_provider_talks_to_the_configured_api_url")
    else {
        return;
    };
    let fake = doks_fake::FakeDoks::start(doks_fake::FakeOptions {
        spec_path,
        token: TOKEN.to_owned(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let cluster = fake.add_cluster("games");
    fake.add_pool(
        &cluster,
        doks_fake::PoolSpec::new("game-servers", "s-4vcpu-8gb", 3),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let config = load(&ConfigSources {
        env: env(&[("DIGITALOCEAN_API_URL", fake.base_url())]),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let provider = digitalocean::build(&config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        provider
            .target_size()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        3
    );
    assert!(fake.requests().iter().all(|r| r.passed_validation()));
    fake.shutdown().await;
}
