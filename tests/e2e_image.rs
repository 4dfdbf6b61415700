//! The container image, built without a container daemon (`hack/image.sh`: an OCI image
//! layout assembled by umoci), run for real by an OCI runtime (Debian's `runc`):
//!
//! * its config is the Dockerfile's final stage (user, entrypoint, exposed port, labels) and
//!   its root filesystem holds what that stage holds (the static binary, the nonroot user,
//!   CA certificates, tzdata); `kubescaler --version` runs in it as the image's user on a
//!   read-only root, as the Dockerfile's `RUN` does;
//! * unpacked into a runtime bundle (`umoci unpack`) and started by `runc run` as uid/gid
//!   65532, root filesystem read-only, no capabilities, no new privileges, with only what a
//!   pod of `deploy/` would have mounted: the ServiceAccount's token (TokenRequest for
//!   `deploy/`'s ServiceAccount, with ca.crt and namespace) at
//!   `/var/run/secrets/kubernetes.io/serviceaccount`, the config file and the cloud token
//!   file, all read-only; no kubeconfig, kube's in-cluster configuration from
//!   `KUBERNETES_SERVICE_HOST`/`_PORT`. It shares the host's network namespace (the local API
//!   server and the DOKS fake listen on 127.0.0.1). `/readyz` answers 200, and pending game
//!   servers make the pool grow (a scale-up) through the DOKS fake (`hack/doks-fake`), whose
//!   nodes the real kube-scheduler binds them to; SIGTERM (`runc kill`) ends it with exit 0.
//!
//! Needs `KUBESCALER_IMAGE` and `KUBESCALER_UMOCI` (`eval "$(bash hack/image.sh)"` sets both),
//! runc on PATH (or `KUBESCALER_RUNC`), root, and for the second test the local control plane
//! (`KUBESCALER_E2E_KUBECONFIG`) and DigitalOcean's API description; each missing piece is a
//! visible skip (`tests/prereq`), a failure with `KUBESCALER_TESTS_REQUIRED=1` (CI).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use doks_fake::FakeOptions;
use serde_json::{json, Value};

mod cluster;
use cluster::cloud::unique_id;
use cluster::{client_or_skip, kubeconfig_or_skip, prereq};
mod deploy_support;
use deploy_support::{
    assert_no_rejected_requests, create_server, delete_server, forbidden_lines, free_port,
    http_get, kubectl_ok, print_log_tail, repo, servers_bound, service_account_token,
    start_fake_with_pool, NAMESPACE, POOL_LABEL, SA_USER, SERVICE_ACCOUNT, WAIT, WHOAMI,
};

/// `<layout dir>:<tag>`, printed by `hack/image.sh`.
const IMAGE_ENV: &str = "KUBESCALER_IMAGE";
/// The umoci binary `hack/image.sh` built (it caches it outside the repo).
const UMOCI_ENV: &str = "KUBESCALER_UMOCI";
/// The OCI runtime, when not `runc` on PATH.
const RUNC_ENV: &str = "KUBESCALER_RUNC";
/// The uid and gid of distroless' `nonroot`, which the Dockerfile's `USER` names.
const NONROOT: u32 = 65532;
/// Where a pod has its ServiceAccount token, and where `deploy/` mounts the config and the
/// cloud token.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const CONFIG_DIR: &str = "/etc/kubescaler";
const CLOUD_TOKEN_DIR: &str = "/var/run/secrets/kubescaler";

// --- prerequisites ---------------------------------------------------------------------------

/// What running the image needs: the layout, umoci, runc and root.
struct Tools {
    /// `<layout>:<tag>`.
    image: String,
    layout: PathBuf,
    tag: String,
    umoci: PathBuf,
    runc: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn tools_or_skip(test: &str) -> Option<Tools> {
    const HOW: &str = "run `eval \"$(bash hack/image.sh)\"` (it builds umoci from its Go module \
                       and the OCI image layout; needs root) then the tests again (.ci/run does)";
    let image = std::env::var(IMAGE_ENV).ok().filter(|s| !s.is_empty());
    let parsed = image.as_deref().and_then(|i| {
        let (layout, tag) = i.rsplit_once(':')?;
        Some((PathBuf::from(layout), tag.to_owned()))
    });
    let Some((layout, tag)) = parsed.filter(|(l, _)| l.join("index.json").is_file()) else {
        let why = match &image {
            Some(i) => format!("{IMAGE_ENV}={i} is not <OCI layout dir>:<tag>"),
            None => format!("{IMAGE_ENV} is not set"),
        };
        prereq::skip(
            test,
            "the OCI image layout (KUBESCALER_IMAGE)",
            &format!("{why}: {HOW}"),
        );
        return None;
    };
    let umoci = std::env::var_os(UMOCI_ENV).map(PathBuf::from);
    let Some(umoci) = umoci.filter(|p| p.is_file()) else {
        prereq::skip(test, "umoci (KUBESCALER_UMOCI)", HOW);
        return None;
    };
    let runc = std::env::var_os(RUNC_ENV)
        .map(PathBuf::from)
        .or_else(|| on_path("runc"));
    let Some(runc) = runc.filter(|p| p.is_file()) else {
        prereq::skip(
            test,
            "an OCI runtime (runc)",
            "install it (Debian: apt-get install runc) or set KUBESCALER_RUNC=PATH",
        );
        return None;
    };
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if uid != "0" {
        prereq::skip(
            test,
            "root (runc runs the container)",
            "run the tests as root (CI does)",
        );
        return None;
    }
    Some(Tools {
        image: image.unwrap_or_default(),
        layout,
        tag,
        umoci,
        runc,
    })
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The files a pod's ServiceAccount volume holds, written to `dir`.
struct ServiceAccountFiles {
    dir: PathBuf,
    token: String,
    /// The API server's URL and port, as the admin kubeconfig has them.
    server: String,
    api_port: String,
}

/// What the kubelet mounts for `deploy/`'s ServiceAccount: a token (TokenRequest), the
/// cluster's CA, the namespace.
fn service_account_files(admin: &Path, dir: &Path) -> ServiceAccountFiles {
    std::fs::create_dir(dir).unwrap();
    let token = service_account_token(admin, NAMESPACE, SERVICE_ACCOUNT, "1h");
    let ca_b64 = kubectl_ok(
        admin,
        &[
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority-data}",
        ],
    );
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("base64");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ca_b64.trim().as_bytes())
        .unwrap();
    let ca = child.wait_with_output().unwrap();
    assert!(ca.status.success(), "decode the cluster CA");
    let server = kubectl_ok(
        admin,
        &[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ],
    );
    let server = server.trim().to_owned();
    let api_port = server
        .strip_prefix("https://127.0.0.1:")
        .unwrap_or_else(|| panic!("the API server is not on https://127.0.0.1:<port>: {server}"))
        .to_owned();
    std::fs::write(dir.join("token"), &token).unwrap();
    std::fs::write(dir.join("ca.crt"), &ca.stdout).unwrap();
    std::fs::write(dir.join("namespace"), NAMESPACE).unwrap();
    ServiceAccountFiles {
        dir: dir.to_path_buf(),
        token,
        server,
        api_port,
    }
}

// --- the image --------------------------------------------------------------------------------

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (algo, hex) = digest
        .split_once(':')
        .unwrap_or_else(|| panic!("digest {digest}"));
    layout.join("blobs").join(algo).join(hex)
}

/// The manifest and the image config of `tag` in the layout.
fn manifest_and_config(layout: &Path, tag: &str) -> (Value, Value) {
    let index = read_json(&layout.join("index.json"));
    let descriptor = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        })
        .unwrap_or_else(|| panic!("no manifest tagged {tag} in {index}"));
    let manifest = read_json(&blob(layout, descriptor["digest"].as_str().unwrap()));
    let config = read_json(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    (manifest, config)
}

/// The Dockerfile's final stage (after the last `FROM`): instructions, continuation lines
/// joined, comments dropped.
fn dockerfile_final_stage() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut stage = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        if pending.is_empty() && line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let full = full.trim();
        if full.is_empty() {
            continue;
        }
        let (word, rest) = full.split_once(char::is_whitespace).unwrap_or((full, ""));
        if word == "FROM" {
            stage.clear();
        } else {
            stage.push((word.to_owned(), rest.trim().to_owned()));
        }
    }
    stage
}

/// `key="value" key2="value2"` of a LABEL instruction.
fn label_pairs(text: &str) -> BTreeMap<String, String> {
    let mut pairs = BTreeMap::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once("=\"") {
        let (value, tail) = after
            .split_once('"')
            .unwrap_or_else(|| panic!("unterminated LABEL value in {text}"));
        pairs.insert(key.trim().to_owned(), value.to_owned());
        rest = tail.trim();
    }
    pairs
}

/// A runtime bundle of the image (`umoci unpack`) in `dir`/bundle; its config.json.
fn unpack(tools: &Tools, dir: &Path) -> (PathBuf, Value) {
    let bundle = dir.join("bundle");
    run_ok(
        Command::new(&tools.umoci)
            .args(["unpack", "--image", &tools.image])
            .arg(&bundle),
    );
    let config = read_json(&bundle.join("config.json"));
    (bundle, config)
}

/// Makes the bundle's runtime config what the test runs: `args`, read-only root, no
/// capabilities, no new privileges, the host's network namespace, `mounts` (host dir →
/// container dir, read-only) and `env` added to the image's.
fn harden(config: &mut Value, args: &[&str], mounts: &[(&Path, &str)], env: &[(&str, String)]) {
    config["root"]["readonly"] = json!(true);
    let process = &mut config["process"];
    process["terminal"] = json!(false);
    process["args"] = json!(args);
    process["noNewPrivileges"] = json!(true);
    process["capabilities"] = json!({
        "bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []
    });
    let mut environment: Vec<Value> = process["env"].as_array().cloned().unwrap_or_default();
    environment.extend(env.iter().map(|(k, v)| json!(format!("{k}={v}"))));
    process["env"] = json!(environment);
    // Host network: the API server and the fake listen on the host's 127.0.0.1.
    let namespaces = config["linux"]["namespaces"].as_array_mut().unwrap();
    namespaces.retain(|n| n["type"] != "network");
    let list = config["mounts"].as_array_mut().unwrap();
    for (source, destination) in mounts {
        list.push(json!({
            "destination": destination,
            "type": "bind",
            "source": source,
            "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
        }));
    }
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A container run by `runc run` (foreground, its output to a log file); killed and deleted
/// when dropped, its log printed if the test is failing.
struct Container {
    runc: PathBuf,
    /// runc's state directory (`--root`), the test's own.
    state: PathBuf,
    id: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Container {
    fn run(runc: &Path, dir: &Path, bundle: &Path, id: &str) -> Container {
        let state = dir.join("runc-state");
        std::fs::create_dir_all(&state).unwrap();
        let log = dir.join(format!("{id}.log"));
        let out = File::create(&log).unwrap();
        let child = Command::new(runc)
            .arg("--root")
            .arg(&state)
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", runc.display()));
        Container {
            runc: runc.to_path_buf(),
            state,
            id: id.to_owned(),
            child: Some(child),
            log,
        }
    }

    fn runc(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.runc)
            .arg("--root")
            .arg(&self.state)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("runc {args:?}: {e}"))
    }

    /// The container's init process as the host sees it (`runc state`).
    fn pid(&self) -> Option<u32> {
        let out = self.runc(&["state", &self.id]);
        let state: Value = serde_json::from_slice(&out.stdout).ok()?;
        (state["status"] == "running")
            .then(|| state["pid"].as_u64())
            .flatten()
            .and_then(|p| u32::try_from(p).ok())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let _ = self.runc(&["kill", &self.id, signal]);
    }

    /// Waits up to `limit` for `runc run` (and so the container) to end.
    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("KILL");
            if self.wait(Duration::from_secs(10)).is_none() {
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        let _ = self.runc(&["delete", "--force", &self.id]);
        if std::thread::panicking() {
            print_log_tail(&format!("container {}", self.id), &self.log_text());
        }
    }
}

/// `Uid:`/`Gid:` (real, effective, saved, fs) and `CapEff:` of a host process.
fn proc_status(pid: u32) -> BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect()
}

/// The mount options of `target` in a process's mount namespace.
fn mount_options(pid: u32, target: &str) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    // id parent major:minor root mount-point options ...: the last mount there wins.
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(4) == Some(&target)).then(|| f.get(5).map(|o| (*o).to_owned()))?
    })
}

// --- the tests --------------------------------------------------------------------------------

/// The image's config and files are the Dockerfile's final stage; `kubescaler --version` runs
/// in it as the image's user on a read-only root (the Dockerfile's `RUN`).
#[test]
fn image_is_the_dockerfiles_final_stage_and_starts_as_nonroot() {
    let test = "image_is_the_dockerfiles_final_stage_and_starts_as_nonroot";
    let Some(tools) = tools_or_skip(test) else {
        return;
    };
    let stage = dockerfile_final_stage();
    let of = |word: &str| -> Vec<String> {
        stage
            .iter()
            .filter(|(w, _)| w == word)
            .map(|(_, r)| r.clone())
            .collect()
    };
    let (manifest, image) = manifest_and_config(&tools.layout, &tools.tag);
    let config = &image["config"];
    assert_eq!(image["os"], "linux");
    assert_eq!(image["architecture"], "amd64");
    assert_eq!(
        config["User"].as_str(),
        of("USER").last().map(String::as_str),
        "USER"
    );
    assert_eq!(config["User"], "65532:65532");
    let entrypoint: Value = serde_json::from_str(of("ENTRYPOINT").last().unwrap()).unwrap();
    assert_eq!(config["Entrypoint"], entrypoint, "ENTRYPOINT");
    assert_eq!(config["Entrypoint"], json!(["/kubescaler"]));
    assert!(config["Cmd"].is_null(), "no Cmd: {}", config["Cmd"]);
    let exposed: Vec<String> = of("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace().map(|p| format!("{p}/tcp")))
        .collect();
    assert_eq!(
        config["ExposedPorts"]
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(exposed),
        "EXPOSE"
    );
    let labels: BTreeMap<String, String> =
        of("LABEL").iter().flat_map(|l| label_pairs(l)).collect();
    assert!(
        labels.contains_key("org.opencontainers.image.source"),
        "{labels:?}"
    );
    let image_labels: BTreeMap<String, String> =
        serde_json::from_value(config["Labels"].clone()).unwrap();
    assert_eq!(image_labels, labels, "LABEL");
    // Two layers, as the Dockerfile's: the base, then COPY of the binary.
    assert_eq!(
        manifest["layers"].as_array().map(Vec::len),
        Some(2),
        "{manifest}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (bundle, mut runtime) = unpack(&tools, dir.path());
    // umoci turned the image config into the runtime config: user, entrypoint.
    assert_eq!(runtime["process"]["user"]["uid"], NONROOT);
    assert_eq!(runtime["process"]["user"]["gid"], NONROOT);
    assert_eq!(runtime["process"]["args"], json!(["/kubescaler"]));
    let rootfs = bundle.join(runtime["root"]["path"].as_str().unwrap());
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l == "nonroot:x:65532:"), "{group}");
    let ca = std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(
        ca.matches("BEGIN CERTIFICATE").count() > 50,
        "CA certificates"
    );
    if Path::new("/usr/share/zoneinfo/UTC").exists() {
        assert!(rootfs.join("usr/share/zoneinfo/UTC").exists(), "tzdata");
    }
    let mut top: Vec<String> = std::fs::read_dir(&rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["etc", "home", "kubescaler", "root", "tmp", "usr"],
        "the image's / holds more than the Dockerfile's final stage"
    );
    for shell in ["bin/sh", "usr/bin/sh", "bin/bash"] {
        assert!(
            !rootfs.join(shell).exists(),
            "a shell in the image: {shell}"
        );
    }

    // The Dockerfile's `RUN ["/kubescaler", "--version"]`, as the final user.
    harden(&mut runtime, &["/kubescaler", "--version"], &[], &[]);
    write_json(&bundle.join("config.json"), &runtime);
    let mut container = Container::run(&tools.runc, dir.path(), &bundle, &unique_id("ks-version"));
    let status = container
        .wait(Duration::from_secs(60))
        .expect("kubescaler --version in the container to end");
    let out = container.log_text();
    assert!(status.success(), "kubescaler --version: {status}\n{out}");
    assert_eq!(
        out.trim(),
        format!("kubescaler {}", tools.tag),
        "kubescaler --version in the image"
    );
}

/// The image, run by runc as 65532 on a read-only root with only the ServiceAccount token:
/// ready, and it scales the pool up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_under_runc_with_only_the_service_account_is_ready_and_scales_up() {
    let test = "image_under_runc_with_only_the_service_account_is_ready_and_scales_up";
    let Some(admin_path) = kubeconfig_or_skip(test) else {
        return;
    };
    let Some(tools) = tools_or_skip(test) else {
        return;
    };
    let Some(spec_path) = prereq::spec_or_skip(test) else {
        return;
    };
    let Some(admin) = client_or_skip(test).await else {
        return;
    };
    let id = unique_id("image");
    let dir = tempfile::tempdir().unwrap();
    // deploy/ as `kubectl apply -k` makes it (the same content tests/e2e_deploy.rs applies):
    // the ServiceAccount and its RBAC. Then what the kubelet would mount for it.
    kubectl_ok(
        &admin_path,
        &["apply", "-k", repo().join("deploy").to_str().unwrap()],
    );
    let sa = service_account_files(&admin_path, &dir.path().join("serviceaccount"));
    let (sa_dir, token, server, api_port) = (sa.dir, sa.token, sa.server, sa.api_port);

    // The cloud: a DOKS fake registering its nodes, one to start.
    let cloud_token = format!("image-token-{id}");
    let (fake, cluster_id, pool_id) = start_fake_with_pool(
        &admin,
        &id,
        FakeOptions {
            spec_path,
            token: cloud_token.clone(),
            ..FakeOptions::default()
        },
    )
    .await;

    // The Secret and the ConfigMap of deploy/, as files.
    let token_dir = dir.path().join("cloud-token");
    std::fs::create_dir(&token_dir).unwrap();
    std::fs::write(token_dir.join("token"), format!("{cloud_token}\n")).unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).unwrap();
    let port = free_port();
    std::fs::write(
        config_dir.join("config.yaml"),
        config_yaml(&id, fake.base_url(), port),
    )
    .unwrap();
    for (path, mode) in [
        (&sa_dir, 0o750),
        (&token_dir, 0o750),
        (&config_dir, 0o755),
        (&sa_dir.join("token"), 0o440),
        (&sa_dir.join("ca.crt"), 0o444),
        (&sa_dir.join("namespace"), 0o444),
        (&token_dir.join("token"), 0o440),
        (&config_dir.join("config.yaml"), 0o444),
    ] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        // Group 65532, as the pod's fsGroup; owner root: the container cannot change them.
        std::os::unix::fs::chown(path, Some(0), Some(NONROOT)).unwrap();
    }

    // The bundle: the image's runtime config, hardened as the Deployment's securityContext.
    let unpack_start = Instant::now();
    let (bundle, mut runtime) = unpack(&tools, dir.path());
    let unpacked_in = unpack_start.elapsed();
    assert_eq!(
        runtime["process"]["user"]["uid"], NONROOT,
        "the image's user"
    );
    assert_eq!(
        runtime["process"]["user"]["gid"], NONROOT,
        "the image's group"
    );
    let entrypoint: Vec<String> =
        serde_json::from_value(runtime["process"]["args"].clone()).unwrap();
    assert_eq!(entrypoint, ["/kubescaler"]);
    let config_file = format!("{CONFIG_DIR}/config.yaml");
    harden(
        &mut runtime,
        // The image's entrypoint and the Deployment's args.
        &["/kubescaler", "--config", &config_file],
        &[
            (&sa_dir, SA_DIR),
            (&config_dir, CONFIG_DIR),
            (&token_dir, CLOUD_TOKEN_DIR),
        ],
        &[
            // What a pod has: the API server's Service, and the Deployment's Downward API.
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_owned()),
            ("KUBERNETES_SERVICE_PORT", api_port.clone()),
            ("POD_NAMESPACE", NAMESPACE.to_owned()),
            ("HOSTNAME", id.clone()),
            ("LEADER_ELECTION_NAMESPACE", NAMESPACE.to_owned()),
            ("LEADER_ELECTION_IDENTITY", id.clone()),
        ],
    );
    runtime["hostname"] = json!(id.clone());
    write_json(&bundle.join("config.json"), &runtime);

    let started = Instant::now();
    let mut container = Container::run(&tools.runc, dir.path(), &bundle, &id);
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    cluster::eventually("/readyz 200 from the container", WAIT, || {
        let ended = container
            .child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
        assert!(!ended, "the container ended:\n{}", container.log_text());
        let readyz = readyz.clone();
        async move {
            let (status, _) = http_get(&readyz).await?;
            (status == 200).then_some(())
        }
    })
    .await;
    let ready_in = started.elapsed();
    let (status, _) = http_get(&format!("http://127.0.0.1:{port}/healthz"))
        .await
        .expect("/healthz answers");
    assert_eq!(status, 200, "/healthz");

    // It is the image's process, as 65532 with no capabilities, on a read-only root, with
    // only the ServiceAccount's files for Kubernetes and no kubeconfig.
    let pid = container.pid().expect("the container runs");
    let status = proc_status(pid);
    assert_eq!(
        status.get("Uid").map(String::as_str),
        Some("65532 65532 65532 65532"),
        "{status:?}"
    );
    assert_eq!(
        status.get("Gid").map(String::as_str),
        Some("65532 65532 65532 65532"),
        "{status:?}"
    );
    assert_eq!(
        status.get("CapEff").map(String::as_str),
        Some("0000000000000000")
    );
    assert_eq!(status.get("NoNewPrivs").map(String::as_str), Some("1"));
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        exe.ends_with("rootfs/kubescaler") || exe == Path::new("/kubescaler"),
        "the process runs {}, not the image's /kubescaler",
        exe.display()
    );
    let root_options = mount_options(pid, "/").expect("/ in the container's mounts");
    assert!(
        root_options.split(',').any(|o| o == "ro"),
        "the root filesystem is not read-only: {root_options}"
    );
    for target in [SA_DIR, CONFIG_DIR, CLOUD_TOKEN_DIR] {
        let options = mount_options(pid, target).unwrap_or_else(|| panic!("{target} not mounted"));
        assert!(options.split(',').any(|o| o == "ro"), "{target}: {options}");
    }
    let mut sa_files: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root{SA_DIR}"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    sa_files.sort();
    assert_eq!(sa_files, ["ca.crt", "namespace", "token"]);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.split('\0').any(|e| e.starts_with("KUBECONFIG=")),
        "KUBECONFIG in the container: {environ}"
    );
    let log = container.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("connecting to the Kubernetes API server")
                && l.contains(&format!("https://127.0.0.1:{api_port}"))),
        "kubescaler did not connect with the in-cluster config:\n{log}"
    );
    // The token is the ServiceAccount's.
    let whoami = run_ok(
        Command::new("kubectl")
            .arg("--server")
            .arg(&server)
            .arg("--certificate-authority")
            .arg(sa_dir.join("ca.crt"))
            .arg("--token")
            .arg(&token)
            .args(WHOAMI),
    );
    assert_eq!(whoami.trim(), SA_USER);

    // Scale up: 4 servers of 1 CPU need 4 + buffer 2 = 6 slots: two nodes of 3.
    let names: Vec<String> = (0..4).map(|i| format!("{id}-server-{i}")).collect();
    let servers_at = Instant::now();
    for name in &names {
        create_server(&admin, &id, name).await;
    }
    cluster::eventually("the pool to grow (a scale-up)", WAIT, || async {
        let pool = fake.pool(&cluster_id, &pool_id)?;
        (pool.count >= 2).then_some(())
    })
    .await;
    let scale_up_in = servers_at.elapsed();
    let placement = servers_bound(&admin, &id, 4, 2).await;
    let bound_in = servers_at.elapsed();
    assert_eq!(
        fake.pool(&cluster_id, &pool_id).map(|p| p.count),
        Some(2),
        "the pool's count after the scale-up"
    );
    assert_eq!(fake.lost_servers(), 0);
    assert_no_rejected_requests(&fake);
    let forbidden = forbidden_lines(&container.log_text());
    assert!(
        forbidden.is_empty(),
        "refused by RBAC:\n{}",
        forbidden.join("\n")
    );

    // SIGTERM, as the kubelet stops a pod: a clean exit.
    container.signal("TERM");
    let exit = container
        .wait(Duration::from_secs(20))
        .expect("the container to exit within 20 s of SIGTERM");
    assert!(
        exit.success(),
        "exit after SIGTERM: {exit}\n{}",
        container.log_text()
    );
    // KUBESCALER_E2E_VERBOSE=1 shows the container's log of a passing run too.
    if std::env::var_os("KUBESCALER_E2E_VERBOSE").is_some() {
        eprintln!("--- container {id} ---\n{}", container.log_text());
    }
    drop(container);

    // Past libtest's capture (as tests/prereq's SKIPPED lines), so that CI's log has the figures.
    let figures = format!(
        "{test}: image {}: unpacked in {:.1}s; /readyz 200 {:.1}s after `runc run`; the pool \
         grew {:.1}s after the servers were created, all 4 bound after {:.1}s on {:?}\n",
        tools.image,
        unpacked_in.as_secs_f64(),
        ready_in.as_secs_f64(),
        scale_up_in.as_secs_f64(),
        bound_in.as_secs_f64(),
        placement
            .values()
            .flatten()
            .collect::<std::collections::BTreeSet<_>>(),
    );
    let _ = std::io::stderr().write_all(figures.as_bytes());
    for name in &names {
        delete_server(&admin, name).await;
    }
    fake.shutdown().await;
}

/// The config file of the test (the ConfigMap's keys that matter, for the fake's pool): the
/// in-cluster config (no kubeconfig path), the token from the mounted Secret file, leader
/// election off (deploy/'s Role allows only the Lease `kubescaler`, which
/// tests/e2e_deploy.rs's replicas hold).
fn config_yaml(id: &str, api_url: &str, port: u16) -> String {
    format!(
        "\
cloud-provider: digitalocean
cloud-provider-token-file: {CLOUD_TOKEN_DIR}/token
digitalocean-api-url: {api_url}
cluster-name: {id}
node-pool-name: {id}-pool
cluster-kube-config-path: \"\"
node-selector: \"{POOL_LABEL}={id}\"
server-pod-label-name: app
server-pod-label-value: \"{id}\"
minimum-node-pool-size: 1
maximum-node-pool-size: 4
buffer-slot-size: 2
server-cpu-resource-request: 1000
scale-loop-tick-sec: 1
empty-node-expiration-sec: 120
node-boot-timeout-sec: 60
http-listen-address: \"127.0.0.1:{port}\"
leader-election: false
log-format: text
log-level: info
"
    )
}
