//! Inputs shared by the configuration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The keys without a default, as env vars, with valid values.
pub const REQUIRED: &[(&str, &str)] = &[
    ("CLUSTER_NAME", "game-cluster"),
    ("NODE_POOL_NAME", "game-pool"),
    ("NODE_SELECTOR", "role=game-servers"),
    ("SERVER_POD_LABEL_NAME", "app"),
    ("SERVER_POD_LABEL_VALUE", "game-server"),
];

/// An environment holding every required key and `token` as `CLOUD_PROVIDER_TOKEN`.
pub fn required_env(token: &str) -> BTreeMap<String, String> {
    REQUIRED
        .iter()
        .copied()
        .chain([("CLOUD_PROVIDER_TOKEN", token)])
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Writes `text` to `dir/name`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}
