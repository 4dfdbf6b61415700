//! The fake finds DigitalOcean's API description at run time, never through a path fixed
//! when it was built, and says in one line when it is missing.

use std::path::Path;
use std::process::Command;

use doks_fake::{locate_spec_from, SPEC_ENV};

/// A kubescaler-shaped tree: `<root>/repo/hack/doks-fake/Cargo.toml`, and the description
/// beside it when `with_shared`.
fn layout(root: &Path, with_shared: bool) -> std::path::PathBuf {
    let repo = root.join("repo");
    std::fs::create_dir_all(repo.join("hack/doks-fake/src")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(repo.join("hack/doks-fake/Cargo.toml"), "").unwrap_or_else(|e| panic!("{e}"));
    if with_shared {
        let dir = root.join("shared/digitalocean");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("doks-node-pools.openapi.yaml"), "openapi: 3.0.0\n")
            .unwrap_or_else(|e| panic!("{e}"));
    }
    repo
}

#[test]
fn the_description_is_found_beside_the_repository_holding_the_current_directory() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let repo = layout(tmp.path(), true);
    // From the repository root and from deep inside it.
    for start in [repo.clone(), repo.join("hack/doks-fake/src")] {
        let found = locate_spec_from(None, &start).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            found.ends_with("shared/digitalocean/doks-node-pools.openapi.yaml"),
            "{}",
            found.display()
        );
        assert!(found.starts_with(tmp.path().canonicalize().unwrap_or_default()));
    }
}

#[test]
fn an_explicit_path_wins_over_the_search_and_must_exist() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let repo = layout(tmp.path(), true);
    let own = tmp.path().join("mine.yaml");
    std::fs::write(&own, "openapi: 3.0.0\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(locate_spec_from(Some(own.clone()), &repo), Ok(own));
    let missing = tmp.path().join("nope.yaml");
    let err = locate_spec_from(Some(missing.clone()), &repo).expect_err("missing file");
    assert_eq!(err.tried, vec![missing]);
}

#[test]
fn a_clone_alone_gets_an_error_naming_the_path_and_how_to_give_it() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let repo = layout(tmp.path(), false);
    let err = locate_spec_from(None, &repo).expect_err("nothing beside the clone");
    let text = err.to_string();
    assert!(
        text.contains("shared/digitalocean/doks-node-pools.openapi.yaml"),
        "{text}"
    );
    assert!(text.contains("--spec") && text.contains(SPEC_ENV), "{text}");
    // Outside any repository: says so rather than guessing a path.
    let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = locate_spec_from(None, outside.path())
        .expect_err("no repository")
        .to_string();
    assert!(text.contains("no kubescaler repository"), "{text}");
}

#[test]
fn the_fake_exits_2_with_one_line_when_the_description_is_missing() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let repo = layout(tmp.path(), false);
    let cases: [(&str, Option<&str>, Vec<&str>); 3] = [
        ("searched", None, vec![]),
        ("env", Some("/nonexistent/doks.yaml"), vec![]),
        ("flag", None, vec!["--spec", "/nonexistent/doks.yaml"]),
    ];
    for (case, env, args) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_doks-fake"));
        cmd.current_dir(&repo).args(&args).env_remove(SPEC_ENV);
        if let Some(v) = env {
            cmd.env(SPEC_ENV, v);
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("run doks-fake: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{case}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{case}: {stderr}");
        assert!(
            stderr.contains("doks-node-pools.openapi.yaml") || stderr.contains("doks.yaml"),
            "{case}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{case}");
    }
}
