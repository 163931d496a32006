//! Modules pulled from a real OCI registry (Debian's `docker-registry`, started on port 0),
//! pushed to it by the test in the two formats Istio's WasmPlugin takes: a Wasm artifact,
//! and an image whose one layer holds `plugin.wasm`; by tag and by digest, checked against
//! their sha256; a tag the registry lacks and an image without a module are not served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use oci_client::client::{Config, ImageLayer};
use oci_client::secrets::RegistryAuth;

use wasmproxy_conformance::upstream::hex_sha256;

use common::registry::Registry;
use common::{body, fresh_dir, get, http_listener, plugin, remote_module_config, start_cached, stat, upstream};

/// The module as Istio's Wasm artifact: a config and one layer that is the module.
fn artifact(module: &[u8]) -> (Vec<ImageLayer>, Config) {
    let layer = ImageLayer::new(module.to_vec(), "application/vnd.module.wasm.content.layer.v1+wasm".into(), None);
    let config = Config::new(b"{}".to_vec(), "application/vnd.module.wasm.config.v1+json".into(), None);
    (vec![layer], config)
}

/// An image of one gzipped layer holding `files`.
fn image(files: &[(&str, &[u8])], docker: bool) -> (Vec<ImageLayer>, Config) {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, *data).unwrap();
    }
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gzip, &tar.into_inner().unwrap()).unwrap();
    let media = if docker {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    };
    let layer = ImageLayer::new(gzip.finish().unwrap(), media.into(), None);
    let config = Config::oci_v1(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec(),
        None,
    );
    (vec![layer], config)
}

/// Serves `uri` and answers whether the plugin ran, with the registry's fetch stats.
fn served_by(uri: &str, sha256: &str, name: &str) -> (Option<String>, u64, u64) {
    let cache = fresh_dir(&format!("oci-{name}"));
    let http_uri = format!("{{ uri: \"{uri}\", timeout: 5s }}");
    let server = start_cached(&remote_module_config(&http_uri, sha256, "oci", upstream("b"), ""), &cache);
    let answer = http_listener(&server).map(|addr| get(addr, "/x"));
    let counts = (stat(&server, "wasm.remote_load_fetch_successes"), stat(&server, "wasm.remote_load_fetch_failures"));
    server.stop();
    let cached = cache.join("remote").join(format!("{sha256}.wasm")).exists();
    assert_eq!(cached, answer.is_some(), "a module served is kept on disk, and only then");
    let _ = std::fs::remove_dir_all(&cache);
    (answer, counts.0, counts.1)
}

#[test]
fn a_wasm_artifact_is_pulled_by_tag_and_by_digest() {
    let registry = Registry::start("artifact", "");
    let module = std::fs::read(plugin("talk_demo.wasm")).unwrap();
    let sha = hex_sha256(&module);
    let (layers, config) = artifact(&module);
    let digest = registry.push("plugins/demo:v1", layers, config, false, &RegistryAuth::Anonymous);

    let (answer, fetched, failed) = served_by(&format!("oci://{}", registry.reference("plugins/demo:v1")), &sha, "tag");
    let answer = answer.expect("served once pulled");
    assert!(body(&answer) == "b /x" && answer.contains("x-demo: oci"), "{answer}");
    assert_eq!((fetched, failed), (1, 0));

    let by_digest = format!("oci://{}@{digest}", registry.reference("plugins/demo"));
    let (answer, _, _) = served_by(&by_digest, &sha, "digest");
    assert!(answer.expect("served by digest").contains("x-demo: oci"));
}

#[test]
fn an_image_holding_plugin_wasm_is_pulled_in_docker_and_oci_formats() {
    let registry = Registry::start("image", "");
    let module = std::fs::read(plugin("talk_demo.wasm")).unwrap();
    let sha = hex_sha256(&module);
    for docker in [true, false] {
        let (layers, config) = image(&[("runtime-config.json", b"{}"), ("plugin.wasm", &module)], docker);
        let repository = format!("plugins/image:{}", if docker { "docker" } else { "oci" });
        registry.push(&repository, layers, config, docker, &RegistryAuth::Anonymous);
        let uri = format!("oci://{}", registry.reference(&repository));
        let (answer, fetched, _) = served_by(&uri, &sha, if docker { "docker" } else { "oci" });
        assert!(answer.expect("served once pulled").contains("x-demo: oci"), "docker format: {docker}");
        assert_eq!(fetched, 1);
    }
}

#[test]
fn what_the_registry_lacks_or_does_not_match_is_not_served() {
    let registry = Registry::start("bad", "");
    let module = std::fs::read(plugin("talk_demo.wasm")).unwrap();
    let sha = hex_sha256(&module);
    let (layers, config) = image(&[("other.wasm", &module)], false);
    registry.push("plugins/empty:v1", layers, config, false, &RegistryAuth::Anonymous);
    let (layers, config) = artifact(&module);
    registry.push("plugins/demo:v1", layers, config, false, &RegistryAuth::Anonymous);

    let cases = [
        ("plugins/missing:v1", sha.clone(), "a tag the registry lacks"),
        ("plugins/empty:v1", sha.clone(), "an image without plugin.wasm"),
        ("plugins/demo:v1", "2".repeat(64), "a module of another sha256"),
    ];
    for (repository, sha256, what) in cases {
        let uri = format!("oci://{}", registry.reference(repository));
        let (answer, fetched, failed) = served_by(&uri, &sha256, repository.split('/').nth(1).unwrap());
        assert!(answer.is_none(), "{what}: not served");
        assert_eq!((fetched, failed), (0, 1), "{what}");
    }
}
