//! Every validation rule, each reported with key, value, source and what is allowed, and all
//! problems collected in one pass.

use std::collections::BTreeMap;

use kubescaler::cli::Overrides;
use kubescaler::config::{
    env_var_name, load, range_of, ranges, ConfigError, ConfigErrors, ConfigSources, Range,
    ValueSource, KEYS,
};
use kubescaler::provider;

mod config_support;

const TOKEN: &str = "dop_v1_validation_token_0123456789";

fn required_env() -> BTreeMap<String, String> {
    config_support::required_env(TOKEN)
}

fn env_with(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env = required_env();
    for (k, v) in pairs {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

fn errors_for(env: BTreeMap<String, String>) -> ConfigErrors {
    load(&ConfigSources {
        env,
        ..Default::default()
    })
    .expect_err("should be invalid")
}

/// The single `Invalid` error of `key`.
fn invalid_of<'a>(errors: &'a ConfigErrors, key: &str) -> &'a ConfigError {
    let matching: Vec<&ConfigError> = errors
        .errors()
        .iter()
        .filter(|e| matches!(e, ConfigError::Invalid { key: k, .. } if *k == key))
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one error for {key} in {errors}"
    );
    matching[0]
}

fn assert_invalid(
    errors: &ConfigErrors,
    key: &str,
    value: &str,
    origin: ValueSource,
    reason: &str,
) {
    match invalid_of(errors, key) {
        ConfigError::Invalid {
            value: v,
            origin: o,
            reason: r,
            allowed,
            ..
        } => {
            assert_eq!(v, value, "{errors}");
            assert_eq!(o, &origin, "{errors}");
            assert!(r.contains(reason), "reason {r:?} should contain {reason:?}");
            assert!(!allowed.is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn missing_required_keys_are_each_reported_with_why() {
    let env: BTreeMap<String, String> =
        [("CLOUD_PROVIDER_TOKEN".to_string(), TOKEN.to_string())].into();
    let errors = errors_for(env);
    let missing: Vec<&str> = errors
        .errors()
        .iter()
        .filter_map(|e| match e {
            ConfigError::Missing { key, .. } => Some(*key),
            _ => None,
        })
        .collect();
    assert_eq!(
        missing,
        [
            "cluster-name",
            "node-pool-name",
            "node-selector",
            "server-pod-label-name",
            "server-pod-label-value"
        ]
    );
    let text = errors.to_string();
    assert!(text.contains("select every node"), "{text}");
    assert!(text.contains("busy nodes are empty"), "{text}");
    assert!(text.contains("env var NODE_SELECTOR"), "{text}");
    assert!(text.contains("flag --cluster-name"), "{text}");
}

#[test]
fn all_errors_are_collected_not_just_the_first() {
    let errors = errors_for(env_with(&[
        ("BUFFER_SLOT_SIZE", "abc"),
        ("SCALE_LOOP_TICK_SEC", "0"),
        ("LOG_FORMAT", "xml"),
        ("DRY_RUN", "maybe"),
    ]));
    assert_eq!(errors.len(), 4, "{errors}");
    assert!(errors
        .to_string()
        .starts_with("invalid configuration (4 problems):"));
}

#[test]
fn wrong_type_is_reported_per_key_with_source() {
    let errors = errors_for(env_with(&[
        ("BUFFER_SLOT_SIZE", "abc"),
        ("EMPTY_NODE_EXPIRATION_SEC", "1.5"),
        ("MINIMUM_NODE_POOL_SIZE", "two"),
    ]));
    assert_invalid(
        &errors,
        "buffer-slot-size",
        "\"abc\"",
        ValueSource::Env("BUFFER_SLOT_SIZE".into()),
        "not an integer",
    );
    assert_invalid(
        &errors,
        "empty-node-expiration-sec",
        "\"1.5\"",
        ValueSource::Env("EMPTY_NODE_EXPIRATION_SEC".into()),
        "not an integer",
    );
    assert_invalid(
        &errors,
        "minimum-node-pool-size",
        "\"two\"",
        ValueSource::Env("MINIMUM_NODE_POOL_SIZE".into()),
        "not an integer",
    );
    let text = errors.to_string();
    assert!(
        text.contains("invalid buffer-slot-size \"abc\" from env var BUFFER_SLOT_SIZE: not an integer (allowed: 0..=1000000 slots)"),
        "{text}"
    );
}

#[test]
fn wrong_type_in_file_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_support::write(
        dir.path(),
        "c.yaml",
        "buffer-slot-size: [1, 2]\nscale-loop-tick-sec: {a: 1}\nmaximum-node-pool-size: 2.5\n",
    );
    let errors = load(&ConfigSources {
        file: Some(file.clone()),
        env: required_env(),
        ..Default::default()
    })
    .expect_err("invalid");
    assert_invalid(
        &errors,
        "buffer-slot-size",
        "[1, 2]",
        ValueSource::File(file.clone()),
        "list",
    );
    assert_invalid(
        &errors,
        "scale-loop-tick-sec",
        "<a mapping>",
        ValueSource::File(file.clone()),
        "mapping",
    );
    assert_invalid(
        &errors,
        "maximum-node-pool-size",
        "2.5",
        ValueSource::File(file.clone()),
        "not an integer",
    );
    assert!(errors
        .to_string()
        .contains(&format!("from config file {}", file.display())));
}

#[test]
fn negative_integers_are_rejected() {
    let errors = errors_for(env_with(&[
        ("BUFFER_SLOT_SIZE", "-1"),
        ("EMPTY_NODE_EXPIRATION_SEC", "-5"),
    ]));
    assert_invalid(
        &errors,
        "buffer-slot-size",
        "\"-1\"",
        ValueSource::Env("BUFFER_SLOT_SIZE".into()),
        "negative",
    );
    assert_invalid(
        &errors,
        "empty-node-expiration-sec",
        "\"-5\"",
        ValueSource::Env("EMPTY_NODE_EXPIRATION_SEC".into()),
        "negative",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_support::write(dir.path(), "c.yaml", "buffer-slot-size: -3\n");
    let errors = load(&ConfigSources {
        file: Some(file.clone()),
        env: required_env(),
        ..Default::default()
    })
    .expect_err("invalid");
    assert_invalid(
        &errors,
        "buffer-slot-size",
        "-3",
        ValueSource::File(file),
        "negative",
    );
}

#[test]
fn integer_out_of_range_is_rejected() {
    let errors = errors_for(env_with(&[("BUFFER_SLOT_SIZE", "4294967296")]));
    assert_invalid(
        &errors,
        "buffer-slot-size",
        "\"4294967296\"",
        ValueSource::Env("BUFFER_SLOT_SIZE".into()),
        "out of range: must be at most 1000000",
    );
}

#[test]
fn minimum_greater_than_maximum_is_rejected() {
    let flags =
        Overrides::from_pairs(&[("minimum-node-pool-size", "5")]).unwrap_or_else(|e| panic!("{e}"));
    let errors = load(&ConfigSources {
        env: required_env(),
        flags,
        ..Default::default()
    })
    .expect_err("min > max");
    assert_invalid(
        &errors,
        "minimum-node-pool-size",
        "5",
        ValueSource::Flag("--minimum-node-pool-size".into()),
        "greater than maximum-node-pool-size 3 (from default)",
    );
    // Equal is fine.
    let mut env = env_with(&[("MINIMUM_NODE_POOL_SIZE", "3")]);
    assert!(load(&ConfigSources {
        env: env.clone(),
        ..Default::default()
    })
    .is_ok());
    env.insert("MINIMUM_NODE_POOL_SIZE".into(), "0".into());
    assert!(
        load(&ConfigSources {
            env,
            ..Default::default()
        })
        .is_ok(),
        "min 0 is allowed"
    );
}

#[test]
fn maximum_below_one_is_rejected() {
    let errors = errors_for(env_with(&[
        ("MAXIMUM_NODE_POOL_SIZE", "0"),
        ("MINIMUM_NODE_POOL_SIZE", "0"),
    ]));
    assert_invalid(
        &errors,
        "maximum-node-pool-size",
        "\"0\"",
        ValueSource::Env("MAXIMUM_NODE_POOL_SIZE".into()),
        "at least 1",
    );
}

#[test]
fn requests_must_be_greater_than_zero() {
    let errors = errors_for(env_with(&[
        ("SERVER_CPU_RESOURCE_REQUEST", "0"),
        ("SERVER_MEMORY_RESOURCE_REQUEST", "0Mi"),
    ]));
    assert_invalid(
        &errors,
        "server-cpu-resource-request",
        "\"0\"",
        ValueSource::Env("SERVER_CPU_RESOURCE_REQUEST".into()),
        "out of range: must be at least 1",
    );
    assert_invalid(
        &errors,
        "server-memory-resource-request",
        "\"0Mi\"",
        ValueSource::Env("SERVER_MEMORY_RESOURCE_REQUEST".into()),
        "out of range: must be at least 1",
    );
}

#[test]
fn bad_quantities_are_rejected() {
    let errors = errors_for(env_with(&[
        ("SERVER_CPU_RESOURCE_REQUEST", "1 core"),
        ("SERVER_MEMORY_RESOURCE_REQUEST", "512MB"),
        ("NODE_TEMPLATE_CPU", "-1"),
        ("NODE_TEMPLATE_MEMORY", "1Gi"),
        ("NODE_TEMPLATE_PODS", "110"),
    ]));
    assert_invalid(
        &errors,
        "server-cpu-resource-request",
        "\"1 core\"",
        ValueSource::Env("SERVER_CPU_RESOURCE_REQUEST".into()),
        "suffix",
    );
    assert_invalid(
        &errors,
        "server-memory-resource-request",
        "\"512MB\"",
        ValueSource::Env("SERVER_MEMORY_RESOURCE_REQUEST".into()),
        "suffix",
    );
    assert_invalid(
        &errors,
        "node-template-cpu",
        "\"-1\"",
        ValueSource::Env("NODE_TEMPLATE_CPU".into()),
        "negative",
    );
}

#[test]
fn tick_must_be_at_least_one_second() {
    let errors = errors_for(env_with(&[("SCALE_LOOP_TICK_SEC", "0")]));
    assert_invalid(
        &errors,
        "scale-loop-tick-sec",
        "\"0\"",
        ValueSource::Env("SCALE_LOOP_TICK_SEC".into()),
        "at least 1",
    );
}

#[test]
fn expiration_zero_is_allowed() {
    let config = load(&ConfigSources {
        env: env_with(&[("EMPTY_NODE_EXPIRATION_SEC", "0")]),
        ..Default::default()
    })
    .expect("0 is allowed");
    assert_eq!(config.empty_node_expiration_sec, 0);
}

#[test]
fn empty_node_selector_is_rejected() {
    for empty in ["", "   "] {
        let errors = errors_for(env_with(&[("NODE_SELECTOR", empty)]));
        let text = errors.to_string();
        assert!(text.contains("node-selector"), "{text}");
        assert!(text.contains("every node"), "{text}");
    }
}

#[test]
fn invalid_node_selector_is_rejected_with_the_parser_message() {
    let errors = errors_for(env_with(&[("NODE_SELECTOR", "role=game servers")]));
    assert_invalid(
        &errors,
        "node-selector",
        "\"role=game servers\"",
        ValueSource::Env("NODE_SELECTOR".into()),
        "\"servers\"",
    );
    let errors = errors_for(env_with(&[("NODE_SELECTOR", "Bad_Prefix.com/x=y")]));
    assert_invalid(
        &errors,
        "node-selector",
        "\"Bad_Prefix.com/x=y\"",
        ValueSource::Env("NODE_SELECTOR".into()),
        "prefix",
    );
}

#[test]
fn server_pod_label_name_and_value_must_be_valid_label_syntax() {
    let errors = errors_for(env_with(&[
        ("SERVER_POD_LABEL_NAME", "-app"),
        ("SERVER_POD_LABEL_VALUE", "game server"),
    ]));
    assert_invalid(
        &errors,
        "server-pod-label-name",
        "\"-app\"",
        ValueSource::Env("SERVER_POD_LABEL_NAME".into()),
        "alphanumeric",
    );
    assert_invalid(
        &errors,
        "server-pod-label-value",
        "\"game server\"",
        ValueSource::Env("SERVER_POD_LABEL_VALUE".into()),
        "alphanumeric",
    );
    let ok = load(&ConfigSources {
        env: env_with(&[("SERVER_POD_LABEL_NAME", "app.kubernetes.io/name")]),
        ..Default::default()
    });
    assert!(ok.is_ok(), "prefixed label names are fine");
}

#[test]
fn empty_server_pod_label_value_is_rejected() {
    let errors = errors_for(env_with(&[("SERVER_POD_LABEL_VALUE", "")]));
    assert_invalid(
        &errors,
        "server-pod-label-value",
        "\"\"",
        ValueSource::Env("SERVER_POD_LABEL_VALUE".into()),
        "must not be empty",
    );
}

#[test]
fn unregistered_cloud_provider_is_rejected_listing_registered_names() {
    let errors = errors_for(env_with(&[("CLOUD_PROVIDER", "gcp")]));
    assert_invalid(
        &errors,
        "cloud-provider",
        "\"gcp\"",
        ValueSource::Env("CLOUD_PROVIDER".into()),
        "not a registered",
    );
    let text = errors.to_string();
    for name in provider::names() {
        assert!(text.contains(name), "{text} should list {name}");
    }
    if provider::names().is_empty() {
        assert!(text.contains("none are registered"), "{text}");
    }
}

#[test]
fn token_is_required_when_the_provider_needs_one() {
    let Some(spec) = provider::REGISTRY.iter().find(|p| p.needs_token) else {
        return; // no provider needing a token is registered in this build
    };
    let mut env = env_with(&[("CLOUD_PROVIDER", spec.name)]);
    env.remove("CLOUD_PROVIDER_TOKEN");
    let errors = errors_for(env);
    assert!(
        errors.errors().contains(&ConfigError::TokenMissing {
            provider: spec.name.to_string()
        }),
        "{errors}"
    );
    assert!(errors.to_string().contains("CLOUD_PROVIDER_TOKEN"));
}

#[test]
fn token_and_token_file_both_set_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = config_support::write(dir.path(), "token", TOKEN);
    let flags = Overrides::from_pairs(&[(
        "cloud-provider-token-file",
        &token_file.display().to_string(),
    )])
    .unwrap_or_else(|e| panic!("{e}"));
    let errors = load(&ConfigSources {
        env: required_env(),
        flags,
        ..Default::default()
    })
    .expect_err("both set");
    assert!(
        errors.errors().contains(&ConfigError::TokenConflict {
            token_origin: ValueSource::Env("CLOUD_PROVIDER_TOKEN".into()),
            file_origin: ValueSource::Flag("--cloud-provider-token-file".into()),
        }),
        "{errors}"
    );
    assert_eq!(errors.len(), 1, "no 'token missing' on top: {errors}");
}

#[test]
fn token_file_that_cannot_be_read_or_is_empty_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-token");
    let empty = config_support::write(dir.path(), "empty-token", " \n");
    for (path, reason) in [(missing, "cannot read"), (empty, "empty")] {
        let mut env = env_with(&[("CLOUD_PROVIDER_TOKEN_FILE", &path.display().to_string())]);
        env.remove("CLOUD_PROVIDER_TOKEN");
        let errors = errors_for(env);
        assert_invalid(
            &errors,
            "cloud-provider-token-file",
            &format!("{:?}", path.display().to_string()),
            ValueSource::Env("CLOUD_PROVIDER_TOKEN_FILE".into()),
            reason,
        );
        assert_eq!(errors.len(), 1, "no 'token missing' on top: {errors}");
    }
}

#[test]
fn token_with_whitespace_inside_is_rejected_without_showing_it() {
    let errors = errors_for(env_with(&[(
        "CLOUD_PROVIDER_TOKEN",
        "Bearer dop_v1_secretpart",
    )]));
    assert_invalid(
        &errors,
        "cloud-provider-token",
        "<redacted>",
        ValueSource::Env("CLOUD_PROVIDER_TOKEN".into()),
        "space",
    );
    assert!(!errors.to_string().contains("secretpart"));
}

#[test]
fn token_surrounding_whitespace_is_trimmed() {
    let config = load(&ConfigSources {
        env: env_with(&[("CLOUD_PROVIDER_TOKEN", &format!(" {TOKEN}\n"))]),
        ..Default::default()
    })
    .expect("loads");
    assert_eq!(
        config.cloud_provider_token.as_ref().map(|t| t.expose()),
        Some(TOKEN)
    );
}

#[test]
fn log_format_must_be_text_or_json() {
    let errors = errors_for(env_with(&[("LOG_FORMAT", "xml")]));
    assert_invalid(
        &errors,
        "log-format",
        "\"xml\"",
        ValueSource::Env("LOG_FORMAT".into()),
        "unknown log format",
    );
    assert!(errors.to_string().contains("text or json"));
}

#[test]
fn log_level_must_be_a_valid_filter() {
    for bad in ["warning", "verbose", "info,kubescaler=loud", ""] {
        let errors = errors_for(env_with(&[("LOG_LEVEL", bad)]));
        invalid_of(&errors, "log-level");
    }
    let errors = errors_for(env_with(&[("LOG_LEVEL", "warning")]));
    assert!(
        errors.to_string().contains("did you mean \"warn\""),
        "{errors}"
    );
    for ok in [
        "debug",
        "WARN",
        "info,kubescaler=debug",
        "kubescaler::planner=trace",
        "off",
    ] {
        let config = load(&ConfigSources {
            env: env_with(&[("LOG_LEVEL", ok)]),
            ..Default::default()
        });
        assert!(config.is_ok(), "{ok}: {config:?}");
    }
}

#[test]
fn dry_run_must_be_a_boolean() {
    let errors = errors_for(env_with(&[("DRY_RUN", "maybe")]));
    assert_invalid(
        &errors,
        "dry-run",
        "\"maybe\"",
        ValueSource::Env("DRY_RUN".into()),
        "not a boolean",
    );
    let config = load(&ConfigSources {
        env: env_with(&[("DRY_RUN", "TRUE")]),
        ..Default::default()
    })
    .expect("loads");
    assert!(config.dry_run);
}

#[test]
fn tolerations_must_parse() {
    let errors = errors_for(env_with(&[("SERVER_POD_TOLERATIONS", "a:Sometimes")]));
    assert_invalid(
        &errors,
        "server-pod-tolerations",
        "\"a:Sometimes\"",
        ValueSource::Env("SERVER_POD_TOLERATIONS".into()),
        "unknown taint effect",
    );
    let errors = errors_for(env_with(&[("SERVER_POD_TOLERATIONS", "=v:NoSchedule")]));
    invalid_of(&errors, "server-pod-tolerations");
}

#[test]
fn node_template_is_all_or_none() {
    let errors = errors_for(env_with(&[("NODE_TEMPLATE_CPU", "4")]));
    match errors.errors() {
        [ConfigError::PartialNodeTemplate { set, missing }] => {
            assert_eq!(
                set,
                &["node-template-cpu (from env var NODE_TEMPLATE_CPU)".to_string()]
            );
            assert_eq!(missing, &["node-template-memory", "node-template-pods"]);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn node_template_values_must_be_positive() {
    let errors = errors_for(env_with(&[
        ("NODE_TEMPLATE_CPU", "0"),
        ("NODE_TEMPLATE_MEMORY", "0"),
        ("NODE_TEMPLATE_PODS", "0"),
    ]));
    for key in [
        "node-template-cpu",
        "node-template-memory",
        "node-template-pods",
    ] {
        invalid_of(&errors, key);
    }
}

#[test]
fn master_url_must_be_http_or_https() {
    let errors = errors_for(env_with(&[(
        "CLUSTER_KUBE_CONFIG_MASTER_URL",
        "kube.example:6443",
    )]));
    assert_invalid(
        &errors,
        "cluster-kube-config-master-url",
        "\"kube.example:6443\"",
        ValueSource::Env("CLUSTER_KUBE_CONFIG_MASTER_URL".into()),
        "http",
    );
    let config = load(&ConfigSources {
        env: env_with(&[(
            "CLUSTER_KUBE_CONFIG_MASTER_URL",
            "https://kube.example:6443",
        )]),
        ..Default::default()
    })
    .expect("loads");
    assert_eq!(
        config.cluster_kube_config_master_url.as_deref(),
        Some("https://kube.example:6443")
    );
}

#[test]
fn unknown_key_in_file_suggests_nearest_valid_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_support::write(
        dir.path(),
        "config.yaml",
        "bufer-slot-size: 5\nbuffer_slot_size: 6\nmin-node-pool-size: 1\ntotally-unrelated: x\n",
    );
    let errors = load(&ConfigSources {
        file: Some(file.clone()),
        env: required_env(),
        ..Default::default()
    })
    .expect_err("unknown keys");
    let text = errors.to_string();
    let shown = file.display();
    assert!(
        text.contains(&format!(
            "unknown key \"bufer-slot-size\" in {shown} (did you mean \"buffer-slot-size\"?)"
        )),
        "{text}"
    );
    assert!(text.contains("unknown key \"buffer_slot_size\""), "{text}");
    assert!(errors.errors().contains(&ConfigError::UnknownKey {
        key: "buffer_slot_size".into(),
        path: file.clone(),
        suggestion: Some("buffer-slot-size"),
    }));
    assert!(errors.errors().contains(&ConfigError::UnknownKey {
        key: "min-node-pool-size".into(),
        path: file.clone(),
        suggestion: Some("minimum-node-pool-size"),
    }));
    assert!(errors.errors().contains(&ConfigError::UnknownKey {
        key: "totally-unrelated".into(),
        path: file.clone(),
        suggestion: None,
    }));
}

#[test]
fn invalid_yaml_and_non_mapping_file_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = config_support::write(dir.path(), "bad.yaml", "buffer-slot-size: [1\n");
    let errors = load(&ConfigSources {
        file: Some(bad.clone()),
        env: required_env(),
        ..Default::default()
    })
    .expect_err("bad yaml");
    assert!(
        matches!(&errors.errors()[0], ConfigError::FileSyntax { path, .. } if *path == bad),
        "{errors}"
    );

    let list = config_support::write(dir.path(), "list.yaml", "- a\n- b\n");
    let errors = load(&ConfigSources {
        file: Some(list.clone()),
        env: required_env(),
        ..Default::default()
    })
    .expect_err("not a mapping");
    assert_eq!(
        errors.errors(),
        &[ConfigError::FileNotMapping {
            path: list,
            found: "a list"
        }]
    );

    let dup = config_support::write(
        dir.path(),
        "dup.yaml",
        "buffer-slot-size: 1\nbuffer-slot-size: 2\n",
    );
    let errors = load(&ConfigSources {
        file: Some(dup),
        env: required_env(),
        ..Default::default()
    })
    .expect_err("duplicate key");
    assert!(errors.to_string().contains("duplicate"), "{errors}");
}

#[test]
fn tolerations_that_let_servers_onto_cordoned_nodes_are_refused() {
    for bad in [
        "*",
        "node.kubernetes.io/unschedulable",
        "node.kubernetes.io/not-ready:NoSchedule",
    ] {
        let errors = load(&ConfigSources {
            env: env_with(&[("SERVER_POD_TOLERATIONS", bad)]),
            ..ConfigSources::default()
        })
        .expect_err(bad);
        let text = errors.to_string();
        assert!(text.contains("server-pod-tolerations"), "{text}");
        assert!(text.contains("cordoned"), "{text}");
    }
    // A NoExecute-only toleration of not-ready does not open the fence.
    load(&ConfigSources {
        env: env_with(&[(
            "SERVER_POD_TOLERATIONS",
            "node.kubernetes.io/not-ready:NoExecute,dedicated=games:NoSchedule",
        )]),
        ..ConfigSources::default()
    })
    .expect("valid");
}

/// The `Invalid` error of `key` as (value, origin, reason, allowed).
fn range_error_of<'a>(
    errors: &'a ConfigErrors,
    key: &str,
) -> (&'a str, &'a ValueSource, &'a str, &'a str) {
    match invalid_of(errors, key) {
        ConfigError::Invalid {
            value,
            origin,
            reason,
            allowed,
            ..
        } => (value, origin, reason, allowed),
        other => panic!("unexpected {other:?}"),
    }
}

/// Valid values for the keys that constrain others (node template all-or-none, min <= max),
/// wide enough for every boundary of every range.
fn boundary_env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env = env_with(&[
        ("NODE_TEMPLATE_CPU", "4000"),
        ("NODE_TEMPLATE_MEMORY", "8Gi"),
        ("NODE_TEMPLATE_PODS", "110"),
        ("MINIMUM_NODE_POOL_SIZE", "0"),
        ("MAXIMUM_NODE_POOL_SIZE", "10000"),
        // The agones-* keys are taken only in Agones mode.
        ("SERVER_SOURCE", "agones"),
    ]);
    for (k, v) in pairs {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

const DURATION_KEYS: [&str; 4] = [
    "scale-loop-tick-sec",
    "empty-node-expiration-sec",
    "node-boot-timeout-sec",
    "leader-election-lease-duration-sec",
];

#[test]
fn huge_durations_are_a_named_range_error_not_a_wrap() {
    // u64::MAX and 2^63 wrapped negative through `as i64` (a "never" expired at once) or
    // overflowed the clock (a panic); beyond u64 was "too large" with no range.
    for key in DURATION_KEYS {
        let range = range_of(key).unwrap_or_else(|| panic!("{key} has no range"));
        let env_name = env_var_name(key);
        for value in [
            u64::MAX.to_string(),
            (1u64 << 63).to_string(),
            (range.max + 1).to_string(),
            "99999999999999999999999".to_string(),
        ] {
            let errors = errors_for(env_with(&[(&env_name, &value)]));
            let (shown, origin, reason, allowed) = range_error_of(&errors, key);
            assert_eq!(shown, format!("{value:?}"), "{errors}");
            assert_eq!(origin, &ValueSource::Env(env_name.clone()), "{errors}");
            assert!(
                reason.starts_with("out of range"),
                "{key} = {value}: {reason}"
            );
            assert_eq!(allowed, range.to_string(), "{errors}");
            assert!(
                errors.to_string().contains(&format!(
                    "invalid {key} \"{value}\" from env var {env_name}: out of range: must be at \
                     most {} (allowed: {range})",
                    range.max
                )),
                "{errors}"
            );
        }
    }
}

#[test]
fn huge_durations_in_the_file_or_a_flag_are_range_errors_naming_that_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_support::write(
        dir.path(),
        "c.yaml",
        "empty-node-expiration-sec: 18446744073709551615\n\
         node-boot-timeout-sec: 9223372036854775808\n\
         leader-election-lease-duration-sec: 18446744073709551615\n",
    );
    let errors = load(&ConfigSources {
        file: Some(file.clone()),
        env: required_env(),
        flags: Overrides::from_pairs(&[("scale-loop-tick-sec", "9223372036854775808")])
            .unwrap_or_else(|e| panic!("{e}")),
        ..Default::default()
    })
    .expect_err("out of range");
    for key in DURATION_KEYS {
        let (_, origin, reason, allowed) = range_error_of(&errors, key);
        let expected = if key == "scale-loop-tick-sec" {
            ValueSource::Flag("--scale-loop-tick-sec".into())
        } else {
            ValueSource::File(file.clone())
        };
        assert_eq!(origin, &expected, "{errors}");
        assert!(reason.starts_with("out of range"), "{errors}");
        assert_eq!(
            Some(allowed.to_string()),
            range_of(key).map(|r| r.to_string())
        );
    }
    let text = errors.to_string();
    assert!(
        text.contains(&format!(
            "invalid empty-node-expiration-sec 18446744073709551615 from config file {}: out of \
             range: must be at most 315360000 (allowed: 0..=315360000 seconds)",
            file.display()
        )),
        "{text}"
    );
    // Beyond 64 bits the YAML parser itself refuses the file, naming the key and line.
    let file = config_support::write(
        dir.path(),
        "beyond.yaml",
        "empty-node-expiration-sec: 18446744073709551616\n",
    );
    let errors = load(&ConfigSources {
        file: Some(file),
        env: required_env(),
        ..Default::default()
    })
    .expect_err("beyond 64 bits");
    assert!(
        matches!(errors.errors(), [ConfigError::FileSyntax { reason, .. }]
            if reason.contains("empty-node-expiration-sec")),
        "{errors}"
    );
}

#[test]
fn durations_up_to_ten_years_are_accepted_and_one_second_more_is_not() {
    let ten_years = (10 * 365 * 24 * 3600u64).to_string();
    let config = load(&ConfigSources {
        env: env_with(&[
            ("EMPTY_NODE_EXPIRATION_SEC", &ten_years),
            ("NODE_BOOT_TIMEOUT_SEC", &ten_years),
            ("SCALE_LOOP_TICK_SEC", "3600"),
        ]),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.empty_node_expiration_sec, 315_360_000);
    assert_eq!(config.node_boot_timeout_sec, 315_360_000);
    assert_eq!(config.scale_loop_tick_sec, 3600);
    let errors = errors_for(env_with(&[
        ("EMPTY_NODE_EXPIRATION_SEC", "315360001"),
        ("NODE_BOOT_TIMEOUT_SEC", "315360001"),
        ("SCALE_LOOP_TICK_SEC", "3601"),
    ]));
    assert_eq!(errors.len(), 3, "{errors}");
}

#[test]
fn every_range_boundary_is_accepted_and_one_past_it_refused() {
    for (key, range) in ranges() {
        let env_name = env_var_name(key);
        for inside in [range.min, range.max] {
            load(&ConfigSources {
                env: boundary_env(&[(&env_name, &inside.to_string())]),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("{key} = {inside} is in {range}: {e}"));
        }
        let mut outside = vec![(range.max + 1, format!("must be at most {}", range.max))];
        if range.min > 0 {
            outside.push((range.min - 1, format!("must be at least {}", range.min)));
        }
        for (value, why) in outside {
            let errors = errors_for(boundary_env(&[(&env_name, &value.to_string())]));
            let (_, origin, reason, allowed) = range_error_of(&errors, key);
            assert_eq!(origin, &ValueSource::Env(env_name.clone()), "{errors}");
            assert_eq!(reason, format!("out of range: {why}"), "{key} = {value}");
            assert!(allowed.starts_with(&range.to_string()), "{key}: {allowed}");
        }
    }
}

#[test]
fn huge_quantities_are_range_errors_too() {
    let errors = errors_for(boundary_env(&[
        ("SERVER_CPU_RESOURCE_REQUEST", "1000001"),
        ("SERVER_MEMORY_RESOURCE_REQUEST", "65Ti"),
        ("NODE_TEMPLATE_CPU", "100000000000000000E"),
        ("NODE_TEMPLATE_MEMORY", "16Ei"),
    ]));
    for key in [
        "server-cpu-resource-request",
        "server-memory-resource-request",
        "node-template-cpu",
        "node-template-memory",
    ] {
        let (_, _, reason, allowed) = range_error_of(&errors, key);
        assert!(
            reason.starts_with("out of range: must be at most"),
            "{key}: {reason}"
        );
        assert!(allowed.starts_with(&range_of(key).expect("range").to_string()));
    }
}

#[test]
fn every_numeric_key_has_a_declared_range() {
    // A key is numeric when a word is refused as "not an integer" or not a quantity: then it
    // must have a range, and every key with a range must be numeric.
    for key in KEYS {
        let errors = load(&ConfigSources {
            env: env_with(&[(&env_var_name(key), "abc")]),
            ..Default::default()
        })
        .err();
        let numeric = errors.as_ref().is_some_and(|errors| {
            errors.errors().iter().any(|e| {
                matches!(e, ConfigError::Invalid { key: k, reason, .. }
                    if k == key && (reason.contains("integer") || reason.contains("quantity")))
            })
        });
        let by_name = key.ends_with("-sec")
            || key.ends_with("-size")
            || key.ends_with("-resource-request")
            || key.starts_with("node-template-");
        assert_eq!(
            range_of(key).is_some(),
            numeric,
            "{key}: numeric {numeric}, range {:?}",
            range_of(key)
        );
        assert!(!by_name || range_of(key).is_some(), "{key} has no range");
    }
    for (key, range) in ranges() {
        assert!(KEYS.contains(&key), "{key} is not a key");
        assert!(range.min <= range.max, "{key}: {range}");
    }
}

#[test]
fn readme_lists_every_range_as_declared() {
    let readme = std::fs::read_to_string("README.md").expect("read README.md");
    for (key, range) in ranges() {
        let row = format!("| `{key}` | `{range}` |");
        assert!(readme.contains(&row), "README.md lacks the row {row}");
    }
    let Range { min, max, unit } = range_of("empty-node-expiration-sec").expect("range");
    assert_eq!((min, max, unit), (0, 315_360_000, "seconds"));
}

#[test]
fn a_bad_buffer_schedule_window_is_named_with_what_is_allowed() {
    let errors = errors_for(env_with(&[(
        "BUFFER_SCHEDULE",
        "Mon-Fri 18:00-23:00 Europe/Berlin buffer=12; Mon-Fry 18:00-23:00 UTC buffer=3",
    )]));
    assert_invalid(
        &errors,
        "buffer-schedule",
        "\"Mon-Fri 18:00-23:00 Europe/Berlin buffer=12; Mon-Fry 18:00-23:00 UTC buffer=3\"",
        ValueSource::Env("BUFFER_SCHEDULE".into()),
        "window 2 \"Mon-Fry 18:00-23:00 UTC buffer=3\": day \"Fry\"",
    );
    let errors = errors_for(env_with(&[(
        "BUFFER_SCHEDULE",
        "* 18:00-23:00 Europe/Berlinn buffer=12",
    )]));
    let text = errors.to_string();
    assert!(text.contains("Europe/Berlinn"), "{text}");
    assert!(text.contains("IANA"), "{text}");
}

#[test]
fn a_buffer_schedule_is_refused_in_agones_mode() {
    let errors = errors_for(env_with(&[
        ("SERVER_SOURCE", "agones"),
        ("BUFFER_SCHEDULE", "* 18:00-23:00 UTC buffer=12"),
    ]));
    assert_invalid(
        &errors,
        "buffer-schedule",
        "\"* 18:00-23:00 UTC buffer=12\"",
        ValueSource::Env("BUFFER_SCHEDULE".into()),
        "agones-buffer",
    );
}

#[test]
fn a_valid_buffer_schedule_loads_in_its_canonical_form() {
    let c = load(&ConfigSources {
        env: env_with(&[(
            "BUFFER_SCHEDULE",
            "fri,sat 18:00-02:00 europe/berlin buffer=20;",
        )]),
        ..Default::default()
    })
    .expect("valid");
    assert_eq!(
        c.buffer_schedule.to_string(),
        "Fri,Sat 18:00-02:00 Europe/Berlin buffer=20"
    );
}
