//! The one gate for what a test needs from outside the repository (the local control plane,
//! the DigitalOcean API description in `../shared/`).
//!
//! A plain clone lacks them: such a test skips, saying on stderr (past libtest's capture, so
//! it shows in a plain `cargo test`) what is missing and how to run it, and appends the same
//! to the file `KUBESCALER_SKIP_LOG` names, from which `hack/test.sh` prints the run's skip
//! count. With `KUBESCALER_TESTS_REQUIRED=1` (CI) a skip is a failure instead.
#![allow(dead_code)]

use std::io::Write;

/// Set to `1` to turn every skip into a failure.
pub const REQUIRED_ENV: &str = "KUBESCALER_TESTS_REQUIRED";
/// A file each skip appends one line to: `test<TAB>what is missing<TAB>how to run it`.
pub const SKIP_LOG_ENV: &str = "KUBESCALER_SKIP_LOG";

/// Whether skips are failures in this run.
pub fn required() -> bool {
    std::env::var(REQUIRED_ENV).as_deref() == Ok("1")
}

/// Reports that `test` cannot run because `missing` is absent (`how`: what gets it), then
/// returns so the caller can skip; panics instead when [`required`].
pub fn skip(test: &str, missing: &str, how: &str) {
    assert!(
        !required(),
        "{test}: {REQUIRED_ENV}=1 but it needs {missing}, which is missing ({how})"
    );
    // Formatted first and written in one call: unbuffered stderr writes each piece of a
    // `writeln!` separately, and parallel tests' output then lands inside the line.
    let said = format!("SKIPPED {test}: needs {missing}; {how}\n");
    let _ = std::io::stderr().write_all(said.as_bytes());
    if let Some(log) = std::env::var_os(SKIP_LOG_ENV).filter(|p| !p.is_empty()) {
        // One short append per skip: concurrent test binaries do not interleave within it.
        let line = format!("{test}\t{missing}\t{how}\n");
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            let _ = writeln!(
                std::io::stderr(),
                "cannot append to {}: {e}",
                log.to_string_lossy()
            );
        }
    }
}

/// DigitalOcean's API description, found at run time, or `None` (after saying what is missing
/// and how to get it) to skip `test`.
pub fn spec_or_skip(test: &str) -> Option<std::path::PathBuf> {
    match doks_fake::locate_spec() {
        Ok(path) => Some(path),
        Err(e) => {
            let tried = e.tried.first().map_or_else(
                || "../shared/digitalocean/".to_owned(),
                |p| p.display().to_string(),
            );
            skip(
                test,
                "DigitalOcean's API description (shared/digitalocean/doks-node-pools.openapi.yaml)",
                &format!(
                    "not at {tried}: set {}=PATH to the file, or put shared/ beside the \
                     repository as CI does (README, Tests)",
                    doks_fake::SPEC_ENV
                ),
            );
            None
        }
    }
}

/// Environment variable naming Agones' CRD file (overrides `../shared/agones/agones-crds.yaml`).
pub const AGONES_CRDS_ENV: &str = "KUBESCALER_AGONES_CRDS";

/// Agones' CustomResourceDefinitions (`shared/agones/agones-crds.yaml` beside the
/// repository), or `None` (after saying what is missing and how to get it) to skip `test`.
#[allow(dead_code)]
pub fn agones_crds_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let path = match std::env::var_os(AGONES_CRDS_ENV) {
        Some(p) => std::path::PathBuf::from(p),
        None => std::env::current_dir()
            .unwrap_or_default()
            .join("../shared/agones/agones-crds.yaml"),
    };
    if path.is_file() {
        return Some(path);
    }
    skip(
        test,
        "Agones' CRDs (shared/agones/agones-crds.yaml)",
        &format!(
            "not at {}: set {AGONES_CRDS_ENV}=PATH to the file, or put shared/ beside the \
             repository as CI does (README, Tests)",
            path.display()
        ),
    );
    None
}

/// Environment variable naming the directory of Cluster API's CRDs (hack/capi-crds.sh prints
/// it; `.ci/run` sets it).
pub const CAPI_CRDS_ENV: &str = "KUBESCALER_CAPI_CRDS";

/// Cluster API's CRD directory, or `None` (after saying how to get it) to skip `test`.
#[allow(dead_code)]
pub fn capi_crds_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os(CAPI_CRDS_ENV).map(std::path::PathBuf::from);
    if let Some(dir) = dir.as_ref().filter(|d| d.is_dir()) {
        return Some(dir.clone());
    }
    skip(
        test,
        "Cluster API's CRDs (KUBESCALER_CAPI_CRDS)",
        &format!(
            "{}: run `export {CAPI_CRDS_ENV}=$(bash hack/capi-crds.sh | tail -n1)` (it fetches \
             sigs.k8s.io/cluster-api through the Go module proxy) then the tests again (.ci/run \
             does)",
            match &dir {
                Some(d) => format!("{} is not a directory", d.display()),
                None => format!("{CAPI_CRDS_ENV} is not set"),
            }
        ),
    );
    None
}

/// Environment variable naming the `helm` binary (hack/helm.sh builds it and prints its path;
/// `.ci/run` sets it).
pub const HELM_ENV: &str = "KUBESCALER_HELM";

/// The `helm` binary of [`HELM_ENV`], or `None` (after saying how to get it) to skip `test`.
#[allow(dead_code)]
pub fn helm_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os(HELM_ENV)
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from);
    if let Some(path) = path.as_ref().filter(|p| p.is_file()) {
        return Some(path.clone());
    }
    skip(
        test,
        "helm (KUBESCALER_HELM)",
        &format!(
            "{}: run `export {HELM_ENV}=$(bash hack/helm.sh | tail -n1)` (it builds helm.sh/helm/v4 \
             from the Go module proxy into a cache outside the repo) then the tests again (.ci/run \
             does)",
            match &path {
                Some(p) => format!("{} is not a file", p.display()),
                None => format!("{HELM_ENV} is not set"),
            }
        ),
    );
    None
}
