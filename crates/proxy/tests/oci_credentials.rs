//! A module pulled from a real OCI registry that wants credentials (Debian's
//! `docker-registry` with htpasswd), with those Docker keeps in `$DOCKER_CONFIG`; without
//! them the pull is refused. (A test binary of its own: it sets the environment.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use oci_client::client::{Config, ImageLayer};
use oci_client::secrets::RegistryAuth;

use wasmproxy_conformance::upstream::hex_sha256;

use common::registry::Registry;
use common::{fresh_dir, get, http_listener, plugin, remote_module_config, start_cached, stat, upstream};

/// `puller`'s password, `secret`, hashed with bcrypt as htpasswd keeps it.
const HTPASSWD: &str = "puller:$2b$05$DSe1fcOI/5CSvbB5r72vuu8/B.1n4LPhg8kYCby07f7DRTsD1XE3u";

#[test]
fn a_registry_that_wants_credentials_gets_dockers() {
    let dir = fresh_dir("credentials");
    std::fs::write(dir.join("htpasswd"), format!("{HTPASSWD}\n")).unwrap();
    let auth = format!("auth: {{ htpasswd: {{ realm: test, path: {} }} }}\n", dir.join("htpasswd").display());
    let registry = Registry::start("credentials", &auth);
    let addr = registry.addr;

    // Pushed with the credentials.
    let module = std::fs::read(plugin("talk_demo.wasm")).unwrap();
    let layer = ImageLayer::new(module.clone(), "application/vnd.module.wasm.content.layer.v1+wasm".into(), None);
    let image_config = Config::new(b"{}".to_vec(), "application/vnd.module.wasm.config.v1+json".into(), None);
    let auth = RegistryAuth::Basic("puller".into(), "secret".into());
    registry.push("private/demo:v1", vec![layer], image_config, false, &auth);

    let docker = dir.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    // SAFETY: set before any server starts, in a test binary with this one test.
    unsafe { std::env::set_var("DOCKER_CONFIG", &docker) };
    let uri = format!("oci://{addr}/private/demo:v1");
    let yaml = remote_module_config(
        &format!("{{ uri: \"{uri}\", timeout: 5s }}"),
        &hex_sha256(&module),
        "private",
        upstream("b"),
        "",
    );

    // Without credentials: refused.
    let server = start_cached(&yaml, &fresh_dir("credentials-none"));
    assert!(http_listener(&server).is_none(), "not served without credentials");
    assert_eq!(stat(&server, "wasm.remote_load_fetch_failures"), 1);
    server.stop();

    // With Docker's (`auth`: base64 of puller:secret).
    let auths = format!(r#"{{"auths": {{"{addr}": {{"auth": "cHVsbGVyOnNlY3JldA=="}}}}}}"#);
    std::fs::write(docker.join("config.json"), auths).unwrap();
    let server = start_cached(&yaml, &fresh_dir("credentials-docker"));
    let answer = get(http_listener(&server).expect("served once pulled"), "/x");
    assert!(answer.contains("x-demo: private"), "{answer}");
    server.stop();
}
