//! The token never shows: not in Debug, Display, YAML output, nor in any error message, even
//! when it is the bad value or the file around it fails to parse.

use std::collections::BTreeMap;

use kubescaler::cli::{Cli, Overrides};
use kubescaler::config::{load, load_with_origins, ConfigSources, SecretToken, KEYS};

use clap::Parser;

mod config_support;

const TOKEN: &str = "dop_v1_REDACTION_secret_4f3c2b1a0987654321";

fn required_env() -> BTreeMap<String, String> {
    config_support::required_env(TOKEN)
}

/// Neither the token nor a long fragment of it appears in `text`.
fn assert_no_token(text: &str) {
    assert!(!text.contains(TOKEN), "token leaked: {text}");
    assert!(
        !text.contains("REDACTION_secret"),
        "token fragment leaked: {text}"
    );
}

#[test]
fn token_is_redacted_in_debug_display_and_redacted_yaml() {
    let sources = ConfigSources {
        env: required_env(),
        ..Default::default()
    };
    let loaded = load_with_origins(&sources).expect("loads");
    let config = &loaded.config;
    assert_eq!(
        config
            .cloud_provider_token
            .as_ref()
            .map(SecretToken::expose),
        Some(TOKEN)
    );

    let yaml = config.to_redacted_yaml();
    assert_no_token(&yaml);
    assert!(yaml.contains("cloud-provider-token: <redacted>"), "{yaml}");
    assert_no_token(&format!("{config:?}"));
    assert_no_token(&config.to_string());
    assert_no_token(&loaded.to_annotated_yaml());
    assert_no_token(&format!("{loaded:?}"));
    assert_no_token(&format!("{sources:?}"));
    let token = SecretToken::new(TOKEN);
    assert_eq!(format!("{token:?}"), "<redacted>");
    assert_eq!(format!("{token}"), "<redacted>");
    assert_eq!(
        serde_json::to_string(&token).expect("serialize"),
        "\"<redacted>\""
    );
}

#[test]
fn redacted_yaml_lists_every_key_in_kebab_case() {
    let config = load(&ConfigSources {
        env: required_env(),
        ..Default::default()
    })
    .expect("loads");
    let yaml = config.to_redacted_yaml();
    let keys: Vec<&str> = yaml
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('-'))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .collect();
    assert_eq!(keys, KEYS, "{yaml}");
}

#[test]
fn redacted_yaml_loads_back_to_the_same_config_apart_from_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = required_env();
    env.insert(
        "SERVER_POD_TOLERATIONS".into(),
        "dedicated=game:NoSchedule,spot:NoExecute".into(),
    );
    env.insert("SERVER_MEMORY_RESOURCE_REQUEST".into(), "1.5Gi".into());
    env.insert("SERVER_CPU_RESOURCE_REQUEST".into(), "0.5".into());
    env.insert("NODE_TEMPLATE_CPU".into(), "3900m".into());
    env.insert("NODE_TEMPLATE_MEMORY".into(), "6Gi".into());
    env.insert("NODE_TEMPLATE_PODS".into(), "110".into());
    env.insert("NODE_SELECTOR".into(), "tier in (b,a),role=x".into());
    let config = load(&ConfigSources {
        env,
        ..Default::default()
    })
    .expect("loads");
    let yaml = config.to_redacted_yaml().replace(
        "cloud-provider-token: <redacted>",
        "cloud-provider-token: null",
    );
    let file = config_support::write(dir.path(), "round-trip.yaml", &yaml);
    let token_only: BTreeMap<String, String> =
        [("CLOUD_PROVIDER_TOKEN".to_string(), TOKEN.to_string())].into();
    let reloaded = load(&ConfigSources {
        file: Some(file),
        env: token_only,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(reloaded, config);
}

#[test]
fn token_is_not_shown_when_yaml_fails_to_parse_near_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let texts = [
        format!("cloud-provider-token: \"{TOKEN}\nbuffer-slot-size: [1\n"),
        format!("cloud-provider-token: {TOKEN}\n  bad: indentation: here\n"),
        format!("cloud-provider-token: {TOKEN} : extra\n\tbuffer-slot-size: 1\n"),
        format!("cloud-provider-token: '{TOKEN}\n"),
        format!("cloud-provider-token: [{TOKEN}\n"),
        format!("cloud-provider-token: {{{TOKEN}\n"),
        format!("\"cloud-provider-token\": !!binary {TOKEN}\n"),
        format!("cloud-provider-token:\n  - {TOKEN}\n  - x\n"),
        format!("cloud-provider-token: {{a: {TOKEN}}}\n"),
        format!("cloud-provider-token: &anchor {TOKEN}\nx: *nope\n"),
        format!("{TOKEN}\n"),
        format!("- {TOKEN}\n"),
        format!("cloud-provider-tokn: {TOKEN}\n"),
        format!("{TOKEN}: 1\n"),
    ];
    for text in texts {
        let file = config_support::write(dir.path(), "config.yaml", &text);
        let sources = ConfigSources {
            file: Some(file),
            ..Default::default()
        };
        match load(&sources) {
            Err(errors) => {
                assert_no_token(&errors.to_string());
                assert_no_token(&format!("{errors:?}"));
            }
            Ok(config) => assert_no_token(&format!("{config:?}")),
        }
    }
}

#[test]
fn token_is_not_shown_in_errors_with_an_invalid_provider() {
    let mut env = required_env();
    env.insert("CLOUD_PROVIDER".into(), "gcp".into());
    let errors = load(&ConfigSources {
        env,
        ..Default::default()
    })
    .expect_err("invalid provider");
    assert_no_token(&errors.to_string());
    assert_no_token(&format!("{errors:?}"));

    // Also when it comes from a flag.
    let cli = Cli::try_parse_from([
        "kubescaler",
        "--cloud-provider",
        "gcp",
        "--cloud-provider-token",
        TOKEN,
        "check-config",
    ])
    .expect("parses");
    assert_no_token(&format!("{cli:?}"));
    let mut env = required_env();
    env.remove("CLOUD_PROVIDER_TOKEN");
    let errors = load(&ConfigSources {
        env,
        flags: cli.overrides,
        ..Default::default()
    })
    .expect_err("invalid provider");
    assert_no_token(&errors.to_string());
}

#[test]
fn token_is_scrubbed_when_pasted_into_another_key() {
    // A token pasted into the wrong key is echoed by that key's error: scrub it there too.
    let mut env = required_env();
    env.insert("NODE_SELECTOR".into(), format!("role={TOKEN}/x"));
    env.insert("LOG_LEVEL".into(), TOKEN.into());
    let errors = load(&ConfigSources {
        env,
        ..Default::default()
    })
    .expect_err("invalid");
    assert_eq!(errors.len(), 2, "{errors}");
    assert_no_token(&errors.to_string());
    assert!(errors.to_string().contains("<redacted>"));
}

#[test]
fn token_file_content_is_scrubbed_from_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file =
        config_support::write(dir.path(), "token", &format!("{TOKEN} trailing words\n"));
    let mut env = required_env();
    env.remove("CLOUD_PROVIDER_TOKEN");
    env.insert(
        "CLOUD_PROVIDER_TOKEN_FILE".into(),
        token_file.display().to_string(),
    );
    env.insert("CLUSTER_KUBE_CONFIG_MASTER_URL".into(), TOKEN.into());
    let errors = load(&ConfigSources {
        env,
        ..Default::default()
    })
    .expect_err("invalid");
    assert_no_token(&errors.to_string());
}

#[test]
fn token_as_wrong_type_in_file_is_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_support::write(
        dir.path(),
        "c.yaml",
        &format!("cloud-provider-token:\n  - {TOKEN}\n"),
    );
    let mut env = required_env();
    env.remove("CLOUD_PROVIDER_TOKEN");
    let errors = load(&ConfigSources {
        file: Some(file),
        env,
        ..Default::default()
    })
    .expect_err("list token");
    assert_no_token(&errors.to_string());
    assert!(
        errors
            .to_string()
            .contains("invalid cloud-provider-token <redacted>"),
        "{errors}"
    );
}

#[test]
fn token_given_in_file_env_and_flag_never_leaks_through_overrides_debug() {
    let flags =
        Overrides::from_pairs(&[("cloud-provider-token", TOKEN)]).unwrap_or_else(|e| panic!("{e}"));
    assert_no_token(&format!("{flags:?}"));
    assert_no_token(&format!("{:?}", flags.set_flags()));
}

#[test]
fn a_short_token_is_redacted_as_a_value_not_inside_the_words_of_the_message() {
    // Issue 14: with the token "x", "maximum-node-pool-size" read "ma<redacted>imum-...".
    let mut env = required_env();
    env.insert("CLOUD_PROVIDER_TOKEN".into(), "x".into());
    env.insert("MINIMUM_NODE_POOL_SIZE".into(), "9".into());
    env.insert("MAXIMUM_NODE_POOL_SIZE".into(), "3".into());
    // The token pasted into another key is still redacted there.
    env.insert("LOG_LEVEL".into(), "x".into());
    let errors = load(&ConfigSources {
        env,
        ..Default::default()
    })
    .expect_err("invalid");
    let text = errors.to_string();
    assert!(text.contains("maximum-node-pool-size"), "{text}");
    assert!(!text.contains("ma<redacted>"), "{text}");
    assert!(text.contains("invalid log-level \"<redacted>\""), "{text}");
}
