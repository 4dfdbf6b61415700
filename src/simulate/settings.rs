//! The configuration of a simulation: the daemon's own loader (same file, env vars and flags,
//! same validation), with the keys a simulation has no use for filled in when they are set
//! nowhere, and a few daemon defaults replaced by ones that suit a simulated pool.

use crate::config::{
    self, Config, ConfigError, ConfigErrors, ConfigSources, SecretToken, ValueSource, TOKEN_KEY,
};

/// Keys the daemon requires but a simulation does not use (nothing is sent to a cloud or a
/// cluster, and the simulated server pods are known without a label), with the value used when
/// a key is set nowhere. A value that is set is still validated.
pub const FILLED_WHEN_MISSING: &[(&str, &str)] = &[
    ("cluster-name", "simulated"),
    ("node-pool-name", "simulated"),
    ("node-selector", "kubescaler.io/simulated=true"),
    ("server-pod-label-name", "app"),
    ("server-pod-label-value", "game-server"),
];

/// Placeholder for a missing `cloud-provider-token`: the simulated cloud needs none.
const TOKEN_PLACEHOLDER: &str = "simulated-no-token";

/// `maximum-node-pool-size` of a simulation when none is given: the daemon's default (3) would
/// cap the built-in scenario far below its peak.
pub const SIMULATED_MAX_NODES: u32 = 100;

/// `log-level` of a simulation when none is given: every pass logs at info, which would drown
/// the summary. `--log-level info` shows each pass with its simulated time.
pub const SIMULATED_LOG_LEVEL: &str = "error";

/// A loaded simulation configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// The effective configuration.
    pub config: Config,
    /// Keys whose value the simulation chose (filled in or replacing a daemon default), with
    /// that value, in key order.
    pub simulation_values: Vec<(&'static str, String)>,
}

/// Loads the configuration as the daemon does, filling in what a simulation does not need.
pub fn load(sources: &ConfigSources) -> Result<SimConfig, ConfigErrors> {
    let mut sources = sources.clone();
    let mut simulation_values = Vec::new();
    if let Err(errors) = config::load_with_origins(&sources) {
        for e in errors.errors() {
            match e {
                ConfigError::Missing { key, .. } => {
                    if let Some((key, value)) = FILLED_WHEN_MISSING.iter().find(|(k, _)| k == key) {
                        // Every key of FILLED_WHEN_MISSING is a text flag.
                        if sources.flags.set(key, value).is_ok() {
                            simulation_values.push((*key, (*value).to_string()));
                        }
                    }
                }
                ConfigError::TokenMissing { .. } => {
                    sources.flags.set_token(SecretToken::new(TOKEN_PLACEHOLDER));
                    simulation_values.push((TOKEN_KEY, "<none needed>".to_string()));
                }
                _ => {}
            }
        }
    }
    let loaded = config::load_with_origins(&sources)?;
    let mut config = loaded.config;
    let is_default = |key: &str| matches!(loaded.origins.get(key), Some(ValueSource::Default));
    if is_default("maximum-node-pool-size") {
        config.maximum_node_pool_size = SIMULATED_MAX_NODES.max(config.minimum_node_pool_size);
        simulation_values.push((
            "maximum-node-pool-size",
            config.maximum_node_pool_size.to_string(),
        ));
    }
    if is_default("log-level") {
        config.log_level = SIMULATED_LOG_LEVEL.to_string();
        simulation_values.push(("log-level", SIMULATED_LOG_LEVEL.to_string()));
    }
    simulation_values.sort_by_key(|(k, _)| config::KEYS.iter().position(|key| key == k));
    Ok(SimConfig {
        config,
        simulation_values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sources(env: &[(&str, &str)]) -> ConfigSources {
        ConfigSources {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..ConfigSources::default()
        }
    }

    #[test]
    fn simulate_runs_without_the_keys_only_the_daemon_needs() {
        let c = load(&sources(&[])).expect("loads");
        assert_eq!(c.config.cluster_name, "simulated");
        assert_eq!(c.config.maximum_node_pool_size, SIMULATED_MAX_NODES);
        assert_eq!(c.config.log_level, SIMULATED_LOG_LEVEL);
        // The daemon's defaults for what the simulation models.
        assert_eq!(c.config.buffer_slot_size, 4);
        assert_eq!(c.config.minimum_node_pool_size, 2);
        let keys: Vec<&str> = c.simulation_values.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "cloud-provider-token",
                "cluster-name",
                "node-pool-name",
                "node-selector",
                "maximum-node-pool-size",
                "server-pod-label-name",
                "server-pod-label-value",
                "log-level"
            ]
        );
    }

    #[test]
    fn simulate_honours_the_keys_that_are_given() {
        let c = load(&sources(&[
            ("BUFFER_SLOT_SIZE", "9"),
            ("MAXIMUM_NODE_POOL_SIZE", "7"),
            ("CLUSTER_NAME", "prod"),
            ("LOG_LEVEL", "warn"),
        ]))
        .expect("loads");
        assert_eq!(c.config.buffer_slot_size, 9);
        assert_eq!(c.config.maximum_node_pool_size, 7);
        assert_eq!(c.config.cluster_name, "prod");
        assert_eq!(c.config.log_level, "warn");
        assert!(!c
            .simulation_values
            .iter()
            .any(|(k, _)| *k == "cluster-name"));
    }

    #[test]
    fn simulate_still_refuses_invalid_values() {
        let e = load(&sources(&[("BUFFER_SLOT_SIZE", "lots")])).expect_err("invalid");
        assert_eq!(e.len(), 1);
        assert!(e.to_string().contains("buffer-slot-size"));
    }
}
