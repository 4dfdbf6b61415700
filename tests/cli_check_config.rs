//! The built binary: `check-config` exit codes and output, `--version`, flags for every key.

use std::path::Path;
use std::process::{Command, Output};

use clap::Parser;
use kubescaler::cli::{Cli, Command as Subcommand, FlagValue, Override};
use kubescaler::config::KEYS;

const TOKEN: &str = "dop_v1_CLI_secret_0123456789abcdef0123456789";

/// The binary with an empty env (plus `vars`) in `cwd`.
fn run_bin(cwd: &Path, vars: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubescaler"))
        .current_dir(cwd)
        .env_clear()
        .envs(vars.iter().copied())
        .args(args)
        .output()
        .expect("run kubescaler")
}

const VALID: &[(&str, &str)] = &[
    ("CLUSTER_NAME", "game-cluster"),
    ("NODE_POOL_NAME", "game-pool"),
    ("NODE_SELECTOR", "role=game-servers"),
    ("SERVER_POD_LABEL_NAME", "app"),
    ("SERVER_POD_LABEL_VALUE", "game-server"),
    ("CLOUD_PROVIDER_TOKEN", TOKEN),
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_config_valid_exits_0_and_prints_redacted_yaml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_bin(
        dir.path(),
        VALID,
        &["check-config", "--buffer-slot-size", "6"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(
        !stdout.contains(TOKEN) && !stderr.contains(TOKEN),
        "token leaked"
    );
    assert!(
        stdout.contains("buffer-slot-size: 6  # flag --buffer-slot-size"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cluster-name: game-cluster  # env var CLUSTER_NAME"),
        "{stdout}"
    );
    let parsed: serde_yaml::Value = serde_yaml::from_str(&stdout).expect("stdout is YAML");
    assert_eq!(parsed["buffer-slot-size"], serde_yaml::Value::from(6));
}

#[test]
fn check_config_invalid_exits_2_and_lists_every_error_on_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vars = VALID.to_vec();
    vars.push(("BUFFER_SLOT_SIZE", "abc"));
    vars.push(("CLOUD_PROVIDER", "gcp"));
    let out = run_bin(
        dir.path(),
        &vars,
        &["check-config", "--scale-loop-tick-sec", "0"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("3 problems"), "{stderr}");
    assert!(
        stderr.contains("buffer-slot-size \"abc\" from env var BUFFER_SLOT_SIZE"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cloud-provider \"gcp\" from env var CLOUD_PROVIDER"),
        "{stderr}"
    );
    assert!(
        stderr.contains("scale-loop-tick-sec \"0\" from flag --scale-loop-tick-sec"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN), "token leaked");
}

#[test]
fn check_config_reads_config_yaml_from_the_working_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.yaml"), "buffer-slot-size: 8\n").expect("write");
    let out = run_bin(dir.path(), VALID, &["check-config"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("buffer-slot-size: 8  # config file config.yaml"),
        "{stdout}"
    );
}

#[test]
fn unknown_key_in_config_yaml_suggests_nearest_valid_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.yaml"), "bufer-slot-size: 5\n").expect("write");
    let out = run_bin(dir.path(), VALID, &["check-config"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "unknown key \"bufer-slot-size\" in config.yaml (did you mean \"buffer-slot-size\"?)"
        ),
        "{stderr}"
    );
}

#[test]
fn explicit_missing_config_file_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_bin(
        dir.path(),
        VALID,
        &["--config", "nope.yaml", "check-config"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("nope.yaml does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_yaml_with_token_exits_2_without_showing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!("cloud-provider-token: \"{TOKEN}\nbuffer-slot-size: [\n");
    std::fs::write(dir.path().join("config.yaml"), yaml).expect("write");
    let out = run_bin(dir.path(), &VALID[..5], &["check-config"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not valid YAML"), "{stderr}");
    assert!(
        !stdout.contains(TOKEN) && !stderr.contains(TOKEN),
        "token leaked: {stderr}"
    );
}

#[test]
fn run_with_invalid_config_exits_2_before_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [&[][..], &["run"][..]] {
        let out = run_bin(dir.path(), &[], args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("cluster-name is required"));
    }
}

#[test]
fn version_flag_prints_name_and_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_bin(dir.path(), &[], &["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("kubescaler {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_command_line_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &["--no-such-flag"][..],
        &["--dry-run=maybe", "check-config"][..],
        &["frobnicate"][..],
    ] {
        let out = run_bin(dir.path(), VALID, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn every_key_is_a_flag() {
    for key in KEYS {
        let flag = format!("--{key}");
        let args: Vec<&str> = if ["dry-run", "leader-election"].contains(key) {
            vec!["kubescaler", &flag]
        } else {
            vec!["kubescaler", &flag, "x"]
        };
        let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{flag}: {e}"));
        let set = cli.overrides.set_flags();
        assert_eq!(set.len(), 1, "{flag}");
        assert_eq!(set[0].0, *key, "{flag} maps to its key");
    }
}

#[test]
fn no_subcommand_means_run_and_flags_may_follow_the_subcommand() {
    let cli = Cli::try_parse_from(["kubescaler", "--buffer-slot-size", "6"]).expect("parses");
    assert_eq!(cli.command(), Subcommand::Run);
    assert_eq!(
        cli.overrides.get("buffer-slot-size"),
        Some(&Override::Text("6".into()))
    );

    let cli = Cli::try_parse_from([
        "kubescaler",
        "check-config",
        "--buffer-slot-size",
        "6",
        "--config",
        "c.yaml",
    ])
    .expect("parses");
    assert_eq!(cli.command(), Subcommand::CheckConfig);
    assert_eq!(
        cli.overrides.get("buffer-slot-size"),
        Some(&Override::Text("6".into()))
    );
    assert_eq!(cli.config.as_deref(), Some(Path::new("c.yaml")));
}

#[test]
fn dry_run_flag_is_a_bool_that_can_be_negated() {
    let cli = Cli::try_parse_from(["kubescaler", "--dry-run", "run"]).expect("parses");
    assert_eq!(cli.overrides.get("dry-run"), Some(&Override::Switch(true)));
    assert_eq!(cli.command(), Subcommand::Run);
    let cli = Cli::try_parse_from(["kubescaler", "--dry-run=false"]).expect("parses");
    assert_eq!(cli.overrides.get("dry-run"), Some(&Override::Switch(false)));
    assert!(cli
        .overrides
        .set_flags()
        .contains(&("dry-run", FlagValue::Bool(false))));
    let cli = Cli::try_parse_from(["kubescaler"]).expect("parses");
    assert_eq!(
        cli.overrides.get("dry-run"),
        None,
        "absent flag leaves the key to env/file/default"
    );
}
