//! Layering of defaults < file < env < flags, file discovery, and where values come from.

use std::collections::BTreeMap;

use kubescaler::cli::Overrides;
use kubescaler::config::{
    env_from_process, env_var_name, load, load_with_origins, ConfigError, ConfigSources, LogFormat,
    ValueSource, KEYS,
};

mod config_support;

const TOKEN: &str = "dop_v1_precedence_token_0123456789";

fn required_env() -> BTreeMap<String, String> {
    config_support::required_env(TOKEN)
}

#[test]
fn flag_overrides_env_overrides_file_overrides_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_support::write(dir.path(), "c.yaml", "buffer-slot-size: 5\n");

    // Default only.
    let mut sources = ConfigSources {
        env: required_env(),
        ..Default::default()
    };
    let loaded = load_with_origins(&sources).expect("defaults load");
    assert_eq!(loaded.config.buffer_slot_size, 4);
    assert_eq!(loaded.origins["buffer-slot-size"], ValueSource::Default);

    // File beats default.
    sources.file = Some(file.clone());
    let loaded = load_with_origins(&sources).expect("file loads");
    assert_eq!(loaded.config.buffer_slot_size, 5);
    assert_eq!(
        loaded.origins["buffer-slot-size"],
        ValueSource::File(file.clone())
    );

    // Env beats file.
    sources.env.insert("BUFFER_SLOT_SIZE".into(), "6".into());
    let loaded = load_with_origins(&sources).expect("env loads");
    assert_eq!(loaded.config.buffer_slot_size, 6);
    assert_eq!(
        loaded.origins["buffer-slot-size"],
        ValueSource::Env("BUFFER_SLOT_SIZE".into())
    );

    // Flag beats env.
    sources
        .flags
        .set("buffer-slot-size", "7")
        .unwrap_or_else(|e| panic!("{e}"));
    let loaded = load_with_origins(&sources).expect("flag loads");
    assert_eq!(loaded.config.buffer_slot_size, 7);
    assert_eq!(
        loaded.origins["buffer-slot-size"],
        ValueSource::Flag("--buffer-slot-size".into())
    );
}

#[test]
fn precedence_holds_for_every_kind_of_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_support::write(
        dir.path(),
        "c.yaml",
        "dry-run: true\nlog-format: json\nserver-pod-tolerations: [a]\ncluster-name: from-file\n",
    );
    let mut env = required_env();
    env.insert("SERVER_POD_TOLERATIONS".into(), "b,c:NoSchedule".into());
    env.insert("LOG_FORMAT".into(), "text".into());
    let flags = Overrides::from_pairs(&[("dry-run", "false")]).unwrap_or_else(|e| panic!("{e}"));
    let config = load(&ConfigSources {
        file: Some(file),
        env,
        flags,
        ..Default::default()
    })
    .expect("loads");
    assert!(!config.dry_run, "flag --dry-run=false beats file true");
    assert_eq!(config.log_format, LogFormat::Text, "env beats file");
    let tolerations: Vec<String> = config
        .server_pod_tolerations
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(
        tolerations,
        ["b", "c:NoSchedule"],
        "env list replaces the file list"
    );
    assert_eq!(config.cluster_name, "game-cluster", "env beats file");
}

#[test]
fn defaults_match_the_go_program() {
    let config = load(&ConfigSources {
        env: required_env(),
        ..Default::default()
    })
    .expect("defaults load");
    assert_eq!(config.cloud_provider, "digitalocean");
    assert_eq!(config.minimum_node_pool_size, 2);
    assert_eq!(config.maximum_node_pool_size, 3);
    assert_eq!(config.buffer_slot_size, 4);
    assert_eq!(config.scale_loop_tick_sec, 10);
    assert_eq!(config.empty_node_expiration_sec, 120);
    assert_eq!(config.server_cpu_resource_request, 1000);
    assert_eq!(config.node_boot_timeout_sec, 600);
    assert!(!config.dry_run);
    assert_eq!(config.log_format, LogFormat::Text);
    assert_eq!(config.log_level, "info");
    assert!(config.server_pod_tolerations.is_empty());
    assert_eq!(config.node_template, None);
    assert_eq!(config.server_memory_resource_request, None);
    assert_eq!(config.cluster_kube_config_master_url, None);
    assert_eq!(config.cluster_kube_config_path, None);
}

#[test]
fn default_config_file_is_read_only_when_present() {
    let dir = tempfile::tempdir().expect("tempdir");
    let default = dir.path().join("config.yaml");
    let sources = ConfigSources {
        default_file: Some(default.clone()),
        env: required_env(),
        ..Default::default()
    };
    // Absent: not an error.
    assert_eq!(
        load(&sources).expect("loads without file").buffer_slot_size,
        4
    );
    // Present: read.
    std::fs::write(&default, "buffer-slot-size: 9\n").expect("write");
    assert_eq!(load(&sources).expect("loads with file").buffer_slot_size, 9);
}

#[test]
fn explicit_config_path_that_does_not_exist_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.yaml");
    let sources = ConfigSources {
        file: Some(missing.clone()),
        env: required_env(),
        ..Default::default()
    };
    let errors = load(&sources).expect_err("missing --config file");
    assert!(errors.errors().contains(&ConfigError::FileNotFound {
        path: missing.clone()
    }));
    assert!(errors.to_string().contains(&missing.display().to_string()));
}

#[test]
fn explicit_config_path_wins_over_default_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let default = config_support::write(dir.path(), "config.yaml", "buffer-slot-size: 1\n");
    let explicit = config_support::write(dir.path(), "other.yaml", "buffer-slot-size: 2\n");
    let sources = ConfigSources {
        file: Some(explicit),
        default_file: Some(default),
        env: required_env(),
        ..Default::default()
    };
    assert_eq!(load(&sources).expect("loads").buffer_slot_size, 2);
}

#[test]
fn empty_file_and_null_values_leave_keys_unset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = config_support::write(dir.path(), "empty.yaml", "");
    let sources = ConfigSources {
        file: Some(empty),
        env: required_env(),
        ..Default::default()
    };
    assert_eq!(
        load(&sources).expect("empty file loads").buffer_slot_size,
        4
    );

    let nulls = config_support::write(
        dir.path(),
        "nulls.yaml",
        "buffer-slot-size:\nserver-pod-tolerations: ~\nserver-memory-resource-request:\n",
    );
    let sources = ConfigSources {
        file: Some(nulls),
        env: required_env(),
        ..Default::default()
    };
    let config = load(&sources).expect("nulls load");
    assert_eq!(config.buffer_slot_size, 4);
    assert!(config.server_pod_tolerations.is_empty());
    assert_eq!(config.server_memory_resource_request, None);
}

#[test]
fn env_from_process_reads_only_known_keys() {
    // PATH and HOME are set in any test process; they must not be picked up.
    let known: Vec<String> = KEYS.iter().map(|k| env_var_name(k)).collect();
    for name in env_from_process().keys() {
        assert!(known.contains(name), "{name} is not a config key");
    }
    assert!(!env_from_process().contains_key("PATH"));
}

#[test]
fn env_vars_of_unknown_names_are_ignored() {
    let mut env = required_env();
    env.insert("BUFFER_SLOTS".into(), "not even a number".into());
    env.insert("buffer_slot_size".into(), "also ignored".into());
    env.insert("KUBESCALER_BUFFER_SLOT_SIZE".into(), "x".into());
    let config = load(&ConfigSources {
        env,
        ..Default::default()
    })
    .expect("loads");
    assert_eq!(config.buffer_slot_size, 4);
}

#[test]
fn env_var_names_are_upper_snake_without_prefix() {
    assert_eq!(env_var_name("buffer-slot-size"), "BUFFER_SLOT_SIZE");
    assert_eq!(env_var_name("cloud-provider-token"), "CLOUD_PROVIDER_TOKEN");
    assert_eq!(
        env_var_name("cluster-kube-config-master-url"),
        "CLUSTER_KUBE_CONFIG_MASTER_URL"
    );
}

#[test]
fn cpu_request_accepts_millicores_and_quantities() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("server-cpu-resource-request: 1500\n", 1500),
        ("server-cpu-resource-request: \"1.5\"\n", 1500),
        ("server-cpu-resource-request: \"1\"\n", 1000),
        ("server-cpu-resource-request: 500m\n", 500),
        ("server-cpu-resource-request: 1.5\n", 1500),
        ("server-cpu-resource-request: \"0.0001\"\n", 1),
    ];
    for (yaml, want) in cases {
        let file = config_support::write(dir.path(), "cpu.yaml", yaml);
        let sources = ConfigSources {
            file: Some(file),
            env: required_env(),
            ..Default::default()
        };
        assert_eq!(
            load(&sources).expect(yaml).server_cpu_resource_request,
            want,
            "{yaml}"
        );
    }
    // Env vars and flags carry no type: a bare integer is millicores, as for the Go program.
    for (value, want) in [
        ("1000", 1000),
        ("250", 250),
        ("500m", 500),
        ("1.5", 1500),
        ("2.0", 2000),
    ] {
        let mut env = required_env();
        env.insert("SERVER_CPU_RESOURCE_REQUEST".into(), value.into());
        let config = load(&ConfigSources {
            env,
            ..Default::default()
        })
        .expect(value);
        assert_eq!(config.server_cpu_resource_request, want, "env {value}");
        let flags = Overrides::from_pairs(&[("server-cpu-resource-request", value)])
            .unwrap_or_else(|e| panic!("{e}"));
        let config = load(&ConfigSources {
            env: required_env(),
            flags,
            ..Default::default()
        })
        .expect(value);
        assert_eq!(config.server_cpu_resource_request, want, "flag {value}");
    }
}

#[test]
fn memory_values_accept_quantities() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (yaml, want) in [
        ("server-memory-resource-request: 512Mi\n", 512 << 20),
        ("server-memory-resource-request: 1Gi\n", 1 << 30),
        ("server-memory-resource-request: 1e9\n", 1_000_000_000),
        ("server-memory-resource-request: 2G\n", 2_000_000_000),
        ("server-memory-resource-request: 1048576\n", 1 << 20),
        ("server-memory-resource-request: \"1048576\"\n", 1 << 20),
    ] {
        let file = config_support::write(dir.path(), "mem.yaml", yaml);
        let sources = ConfigSources {
            file: Some(file),
            env: required_env(),
            ..Default::default()
        };
        let config = load(&sources).expect(yaml);
        assert_eq!(config.server_memory_resource_request, Some(want), "{yaml}");
        assert_eq!(config.slot_request().memory_bytes, want);
    }
}

#[test]
fn tolerations_from_yaml_list_or_comma_separated_string() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_support::write(
        dir.path(),
        "t.yaml",
        "server-pod-tolerations:\n  - dedicated=game:NoSchedule\n  - \"spot:NoExecute\"\n  - gpu\n",
    );
    let sources = ConfigSources {
        file: Some(file),
        env: required_env(),
        ..Default::default()
    };
    let config = load(&sources).expect("list loads");
    let got: Vec<String> = config
        .server_pod_tolerations
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(got, ["dedicated=game:NoSchedule", "spot:NoExecute", "gpu"]);

    let mut env = required_env();
    env.insert(
        "SERVER_POD_TOLERATIONS".into(),
        " a=b:NoExecute , c ,".into(),
    );
    let config = load(&ConfigSources {
        env,
        ..Default::default()
    })
    .expect("string loads");
    let got: Vec<String> = config
        .server_pod_tolerations
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(got, ["a=b:NoExecute", "c"]);
}

#[test]
fn node_template_from_all_three_keys() {
    let mut env = required_env();
    env.insert("NODE_TEMPLATE_CPU".into(), "3.9".into());
    env.insert("NODE_TEMPLATE_MEMORY".into(), "6Gi".into());
    env.insert("NODE_TEMPLATE_PODS".into(), "110".into());
    let config = load(&ConfigSources {
        env,
        ..Default::default()
    })
    .expect("loads");
    let template = config.node_template.expect("template set");
    assert_eq!(template.cpu_millis, 3900);
    assert_eq!(template.memory_bytes, 6 << 30);
    assert_eq!(template.pods, 110);
}

#[test]
fn node_selector_is_stored_in_canonical_form() {
    let mut env = required_env();
    env.insert(
        "NODE_SELECTOR".into(),
        "tier in (b,a), role == game-servers".into(),
    );
    let config = load(&ConfigSources {
        env,
        ..Default::default()
    })
    .expect("loads");
    assert_eq!(config.node_selector, "role=game-servers,tier in (a,b)");
}

#[test]
fn example_config_file_is_valid_and_documents_every_key() {
    let example = std::path::absolute("config.yaml.example").expect("current dir");
    let text = std::fs::read_to_string(&example).expect("read config.yaml.example");
    for key in KEYS {
        assert!(
            text.contains(&format!("{key}:")),
            "{key} is not in config.yaml.example"
        );
        assert!(
            text.contains(&env_var_name(key)),
            "env var of {key} is not documented"
        );
    }
    let env: BTreeMap<String, String> =
        [("CLOUD_PROVIDER_TOKEN".to_string(), TOKEN.to_string())].into();
    let config = load(&ConfigSources {
        file: Some(example),
        env,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("config.yaml.example must load: {e}"));
    assert_eq!(config.node_selector, "role=game-servers");
    assert_eq!(config.server_pod_label_name, "app");
    assert_eq!(config.server_pod_label_value, "game-server");
}

#[test]
fn origins_name_the_token_file_when_the_token_is_read_from_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = config_support::write(dir.path(), "token", &format!("  {TOKEN}\n"));
    let mut env = required_env();
    env.remove("CLOUD_PROVIDER_TOKEN");
    env.insert(
        "CLOUD_PROVIDER_TOKEN_FILE".into(),
        token_file.display().to_string(),
    );
    let loaded = load_with_origins(&ConfigSources {
        env,
        ..Default::default()
    })
    .expect("loads");
    assert_eq!(
        loaded.origins["cloud-provider-token"],
        ValueSource::TokenFile(token_file)
    );
    assert_eq!(
        loaded
            .config
            .cloud_provider_token
            .as_ref()
            .map(|t| t.expose()),
        Some(TOKEN),
        "the file's content is trimmed"
    );
    let annotated = loaded.to_annotated_yaml();
    assert!(
        annotated.contains("buffer-slot-size: 4  # default"),
        "{annotated}"
    );
    assert!(
        annotated.contains("cluster-name: game-cluster  # env var CLUSTER_NAME"),
        "{annotated}"
    );
    assert!(!annotated.contains(TOKEN));
}

#[test]
fn provider_settings_are_keys_env_vars_flags_and_docs_derived_from_the_registry() {
    let readme = std::fs::read_to_string("README.md").expect("read README.md");
    let loaded = load_with_origins(&ConfigSources {
        env: required_env(),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let mut count = 0;
    for (spec, setting) in kubescaler::provider::settings() {
        count += 1;
        assert!(KEYS.contains(&setting.key), "{} is not a key", setting.key);
        let row = format!(
            "| `{}` | `{}` | `{}` | `{}` |",
            setting.key,
            spec.name,
            setting.default,
            env_var_name(setting.key)
        );
        assert!(readme.contains(&row), "README.md lacks {row}");
        // The selected provider's settings are defaulted, stored generically, and printed.
        if spec.name == loaded.config.cloud_provider {
            assert_eq!(
                loaded.config.provider_setting(setting.key),
                Some(setting.default)
            );
            assert_eq!(loaded.origins[setting.key], ValueSource::Default);
            assert!(loaded
                .to_annotated_yaml()
                .contains(&format!("{}: {}  # default", setting.key, setting.default)));
        }
        // The env var (the key's UPPER_SNAKE form) and the flag reach it, the flag winning
        // (the default is a valid value of every setting).
        // A provider's setting is refused under another provider: select its own.
        let mut env = required_env();
        env.insert("CLOUD_PROVIDER".into(), spec.name.into());
        env.insert(env_var_name(setting.key), setting.default.into());
        let flags = Overrides::from_pairs(&[(setting.key, setting.default)])
            .unwrap_or_else(|e| panic!("{e}"));
        let from_env = load_with_origins(&ConfigSources {
            env: env.clone(),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            from_env.origins[setting.key],
            ValueSource::Env(env_var_name(setting.key))
        );
        let from_flag = load_with_origins(&ConfigSources {
            env,
            flags,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            from_flag.origins[setting.key],
            ValueSource::Flag(format!("--{}", setting.key))
        );
    }
    assert!(
        count >= 1,
        "the digitalocean provider declares digitalocean-api-url"
    );
}
