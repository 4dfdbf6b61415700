//! One declaration per configuration key (`config::core_keys`): the flags, their help, the
//! env vars, the defaults, the ranges, the README's table and `config.yaml.example` follow
//! from it, and these tests fail when one of them drifts. `KUBESCALER_BLESS=1 cargo test
//! --test config_keys` rewrites the README's table from the declarations.

use std::collections::BTreeMap;

use clap::CommandFactory;
use kubescaler::cli::Cli;
use kubescaler::config::{
    core_keys, env_var_name, load_with_origins, readme_table, ConfigSources, KeyDefault, KeyKind,
    ValueSource, KEYS,
};

mod config_support;

const TOKEN: &str = "dop_v1_keys_token_0123456789";

/// The README's table of the core keys, as it stands.
fn readme_block(readme: &str) -> Option<(usize, usize)> {
    let start = readme.find("| key | default | env var | meaning |")?;
    let end = readme[start..]
        .find("\n\n")
        .map_or(readme.len(), |i| start + i + 1);
    Some((start, end))
}

#[test]
fn readme_config_table_is_the_keys_declarations() {
    let readme = std::fs::read_to_string("README.md").expect("read README.md");
    let (start, end) = readme_block(&readme).expect("README.md has the key table");
    let wanted = readme_table();
    if std::env::var("KUBESCALER_BLESS").as_deref() == Ok("1") {
        let blessed = format!("{}{wanted}{}", &readme[..start], &readme[end..]);
        std::fs::write("README.md", blessed).expect("write README.md");
        return;
    }
    assert_eq!(
        &readme[start..end],
        wanted,
        "README.md's key table differs from the declarations in src/config/keys.rs \
         (KUBESCALER_BLESS=1 cargo test --test config_keys rewrites it)"
    );
}

#[test]
fn every_declared_key_is_a_flag_with_its_help_env_var_and_default() {
    let help = <Cli as CommandFactory>::command()
        .render_long_help()
        .to_string();
    for key in core_keys() {
        let flag = format!("--{}", key.name);
        let at = help
            .find(&format!("{flag} "))
            .or_else(|| help.find(&format!("{flag}[")))
            .unwrap_or_else(|| panic!("--help lacks {flag}"));
        let text = &help[at..];
        let text = &text[..text[2..].find("\n      --").map_or(text.len(), |i| i + 2)];
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains(&format!("[env: {}]", env_var_name(key.name))),
            "{flag}: {flat}"
        );
        match key.default {
            KeyDefault::Required => assert!(flat.contains("(required)"), "{flat}"),
            KeyDefault::Number(n) => assert!(flat.contains(&format!("[default: {n}]")), "{flat}"),
            KeyDefault::Text(t) if !t.is_empty() => {
                assert!(flat.contains(&format!("[default: {t}]")), "{flat}")
            }
            _ => {}
        }
    }
}

#[test]
fn declared_defaults_are_the_loaders_defaults() {
    // Agones mode, so that the agones-* keys are in force (printed) too.
    let mut env: BTreeMap<String, String> = config_support::required_env(TOKEN);
    env.insert("SERVER_SOURCE".into(), "agones".into());
    let loaded = load_with_origins(&ConfigSources {
        env,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let yaml = loaded.config.to_redacted_yaml();
    let printed: serde_yaml::Mapping = serde_yaml::from_str(&yaml).expect("check-config YAML");
    for key in core_keys() {
        let value = &printed[key.name];
        let defaulted = loaded.origins.get(key.name) == Some(&ValueSource::Default);
        match key.default {
            KeyDefault::Number(n) => {
                assert!(defaulted, "{}", key.name);
                assert_eq!(value.as_u64(), Some(n), "{}: {value:?}", key.name);
            }
            KeyDefault::Switch(b) => {
                assert!(defaulted, "{}", key.name);
                assert_eq!(value.as_bool(), Some(b), "{}", key.name);
            }
            KeyDefault::Share(s) => {
                assert!(defaulted, "{}", key.name);
                assert_eq!(value.as_f64(), Some(s), "{}", key.name);
            }
            KeyDefault::Text(t) if !t.is_empty() && key.name != "server-source" => {
                assert!(defaulted, "{}", key.name);
                assert_eq!(value.as_str(), Some(t), "{}", key.name);
            }
            _ => {}
        }
        if let Some(range) = key.range() {
            assert_eq!(kubescaler::config::range_of(key.name), Some(range));
        }
        assert_eq!(key.is_secret(), key.kind == KeyKind::Secret);
    }
    // check-config prints every key, in the declared order.
    let order: Vec<&str> = printed.keys().filter_map(|k| k.as_str()).collect();
    assert_eq!(order, KEYS);
}

/// `config.yaml.example` names every key with its env var, and where it states a default
/// (`Default: 120.`), that is the declared one.
#[test]
fn example_config_states_the_declared_env_vars_and_defaults() {
    let text = std::fs::read_to_string("config.yaml.example").expect("read config.yaml.example");
    let lines: Vec<&str> = text.lines().collect();
    let key_line = |line: &str, name: &str| {
        let line = line.strip_prefix('#').unwrap_or(line).trim_start();
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(':'))
    };
    let is_any_key = |line: &str| core_keys().any(|k| key_line(line, k.name));
    for key in core_keys() {
        let at = lines
            .iter()
            .position(|l| key_line(l, key.name))
            .unwrap_or_else(|| panic!("config.yaml.example lacks {}", key.name));
        // The comment lines right above it (a group's comment stands above its first key).
        let mut first = at;
        while first > 0 && lines[first - 1].starts_with('#') && !is_any_key(lines[first - 1]) {
            first -= 1;
        }
        let comment = lines[first..at]
            .iter()
            .map(|l| l.trim_start_matches('#').trim())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            text.contains(&env_var_name(key.name)),
            "config.yaml.example does not name {}",
            env_var_name(key.name)
        );
        let Some(stated) = comment.split("Default: ").nth(1) else {
            continue;
        };
        let stated = stated
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_end_matches(['.', ';', ',']);
        let declared = match key.default {
            KeyDefault::Number(n) => n.to_string(),
            KeyDefault::Share(s) => s.to_string(),
            KeyDefault::Switch(b) => b.to_string(),
            KeyDefault::Text(t) if !t.is_empty() => t.to_string(),
            _ => key
                .default_doc
                .map(|d| d.trim_matches('`').to_string())
                .unwrap_or_else(|| "none".to_string()),
        };
        assert_eq!(
            stated, declared,
            "config.yaml.example says {}'s default is {stated}; declared: {declared}",
            key.name
        );
    }
}
