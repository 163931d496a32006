//! Modules in OCI registries (`oci://registry/repository[:tag][@sha256:digest]`), in the
//! image formats Istio's WasmPlugin takes: a Wasm artifact (a layer of a Wasm media type) or
//! an image of one layer, a tar (gzipped or not) holding `plugin.wasm`. The registry
//! protocol, its token dance and its digest checks are oci-client's; credentials are
//! Docker's (`config.json`).

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use wasmproxy_config::model::OCI_SCHEME;

use crate::limits::MAX_REMOTE_MODULE_BYTES;

/// Layer media types that are the module itself: Istio's (the Solo spec's "oci" variant),
/// the CNCF Wasm artifact's, and the plain one.
const WASM_LAYERS: &[&str] = &[
    "application/vnd.module.wasm.content.layer.v1+wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/wasm",
];

/// Layer media types of an image's file system, gzipped or not.
const TAR_LAYERS: &[(&str, bool)] = &[
    ("application/vnd.oci.image.layer.v1.tar+gzip", true),
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", true),
    ("application/vnd.oci.image.layer.v1.tar", false),
    ("application/vnd.docker.image.rootfs.diff.tar", false),
];

/// The file an image layer holds the module in.
const PLUGIN_FILE: &str = "plugin.wasm";

/// Why a pull failed: `Retry` may go better next time, `Final` will not.
#[derive(Debug)]
pub enum PullError {
    Retry(String),
    Final(String),
}

/// One image in one registry.
pub struct Image {
    client: Client,
    reference: Reference,
}

impl Image {
    /// The image an `oci://` URI names. A registry on a loopback address is spoken to in
    /// plain HTTP, as Docker does; any other in HTTPS, verified against the system's roots.
    pub fn new(uri: &str) -> Result<Image, String> {
        let text = uri.strip_prefix(OCI_SCHEME).ok_or_else(|| format!("{uri}: not an oci:// URI"))?;
        let reference: Reference = text.parse().map_err(|e| format!("{uri}: {e}"))?;
        let config = ClientConfig {
            protocol: protocol(reference.registry()),
            user_agent: "wasmproxy",
            ..ClientConfig::default()
        };
        Ok(Image { client: Client::new(config), reference })
    }

    /// Pulls the module: the manifest (the platform's, from an index), then its layer.
    pub async fn pull(&self) -> Result<Vec<u8>, PullError> {
        let auth = credentials(self.reference.registry()).map_err(PullError::Final)?;
        let (manifest, _) = self.client.pull_manifest(&self.reference, &auth).await.map_err(retry)?;
        let manifest = match manifest {
            OciManifest::Image(manifest) => manifest,
            OciManifest::ImageIndex(index) => {
                let entry = pick_platform(&index.manifests).ok_or_else(|| final_("the image index is empty"))?;
                let reference = self.reference.clone_with_digest(entry.digest.clone());
                match self.client.pull_manifest(&reference, &auth).await.map_err(retry)? {
                    (OciManifest::Image(manifest), _) => manifest,
                    (OciManifest::ImageIndex(_), _) => return Err(final_("an image index names another index")),
                }
            }
        };
        let (layer, format) = module_layer(&manifest).map_err(PullError::Final)?;
        if layer.size < 0 || layer.size as u64 > MAX_REMOTE_MODULE_BYTES as u64 {
            return Err(final_(format!("its layer is {} bytes, over {MAX_REMOTE_MODULE_BYTES}", layer.size)));
        }
        // Room for what the descriptor says, up to 16 MiB at first: the bytes must come.
        let room = (layer.size as usize).min(16 << 20);
        let mut blob = Bounded { bytes: Vec::with_capacity(room), limit: layer.size as usize };
        self.client.pull_blob(&self.reference, layer, &mut blob).await.map_err(retry)?;
        match format {
            Layer::Module => Ok(blob.bytes),
            Layer::Tar { gzip } => plugin_file(&blob.bytes, gzip).map_err(PullError::Final),
        }
    }
}

/// The credentials Docker keeps for a registry: `auths.<registry>` (or with `https://` or
/// `http://` before it) of `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, as
/// `auth` (base64 of `user:password`) or `username` and `password` (an `identitytoken` is
/// refused); anonymous if there is no file or no entry. Read at each pull, so new ones are
/// used.
fn credentials(registry: &str) -> Result<RegistryAuth, String> {
    let dir = match (std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME")) {
        (Some(dir), _) => std::path::PathBuf::from(dir),
        (None, Some(home)) => std::path::Path::new(&home).join(".docker"),
        (None, None) => return Ok(RegistryAuth::Anonymous),
    };
    let path = dir.join("config.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => docker_credentials(&text, registry).map_err(|why| format!("{}: {why}", path.display())),
        Err(_) => Ok(RegistryAuth::Anonymous),
    }
}

/// A registry's credentials in the text of Docker's `config.json`.
fn docker_credentials(text: &str, registry: &str) -> Result<RegistryAuth, String> {
    use base64::Engine;
    let config: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let keys = [registry.to_string(), format!("https://{registry}"), format!("http://{registry}")];
    let Some(entry) = keys.iter().find_map(|k| config["auths"].get(k)) else { return Ok(RegistryAuth::Anonymous) };
    if entry["identitytoken"].as_str().is_some_and(|t| !t.is_empty()) {
        return Err(format!(
            "the identity token for {registry} is not supported (only auth, or username and password)"
        ));
    }
    if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD.decode(auth).map_err(|e| format!("auth: {e}"))?;
        let text = String::from_utf8(decoded).map_err(|_| "auth is not text")?;
        let (user, password) = text.split_once(':').ok_or("auth is not user:password")?;
        return Ok(RegistryAuth::Basic(user.to_string(), password.to_string()));
    }
    match (entry["username"].as_str(), entry["password"].as_str()) {
        (Some(user), Some(password)) => Ok(RegistryAuth::Basic(user.to_string(), password.to_string())),
        _ => Ok(RegistryAuth::Anonymous),
    }
}

/// Plain HTTP for a registry on a loopback address, HTTPS for any other.
fn protocol(registry: &str) -> ClientProtocol {
    let host = match registry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback { ClientProtocol::HttpsExcept(vec![registry.to_string()]) } else { ClientProtocol::Https }
}

/// How a layer holds the module.
enum Layer {
    /// It is the module.
    Module,
    /// A tar of files, `plugin.wasm` among them.
    Tar { gzip: bool },
}

/// The layer the module is in: the one of a Wasm media type, or the only layer of an image.
fn module_layer(manifest: &OciImageManifest) -> Result<(&OciDescriptor, Layer), String> {
    let wasm: Vec<&OciDescriptor> =
        manifest.layers.iter().filter(|l| WASM_LAYERS.contains(&l.media_type.as_str())).collect();
    match wasm.as_slice() {
        [layer] => return Ok((layer, Layer::Module)),
        [] => {}
        _ => return Err(format!("the manifest has {} Wasm layers, not one", wasm.len())),
    }
    let [layer] = manifest.layers.as_slice() else {
        return Err(format!(
            "the manifest has no Wasm layer and {} layers, not the one an image of {PLUGIN_FILE} has",
            manifest.layers.len()
        ));
    };
    match TAR_LAYERS.iter().find(|(media, _)| *media == layer.media_type) {
        Some(&(_, gzip)) => Ok((layer, Layer::Tar { gzip })),
        None => Err(format!("its layer is of type {:?}, neither Wasm nor a tar", layer.media_type)),
    }
}

/// From an index: the only image, else one for Wasm, else one for this machine's Linux
/// (an image built for several platforms holds the same module in each), else the first.
fn pick_platform(entries: &[ImageIndexEntry]) -> Option<&ImageIndexEntry> {
    let platform = |e: &ImageIndexEntry| e.platform.as_ref().map(|p| (p.os.to_string(), p.architecture.to_string()));
    let wasm = |e: &&ImageIndexEntry| platform(e).is_some_and(|(os, arch)| arch == "wasm" || os.starts_with("wasi"));
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let here = |e: &&ImageIndexEntry| platform(e).is_some_and(|(os, a)| os == "linux" && a == arch);
    entries.iter().find(wasm).or_else(|| entries.iter().find(here)).or_else(|| entries.first())
}

/// `plugin.wasm` from a layer's tar, read no further than the size bound.
fn plugin_file(layer: &[u8], gzip: bool) -> Result<Vec<u8>, String> {
    let reader: Box<dyn Read + '_> = if gzip { Box::new(flate2::read::GzDecoder::new(layer)) } else { Box::new(layer) };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| format!("its layer is not a tar: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("its layer is not a tar: {e}"))?;
        let path = entry.path().map_err(|e| format!("its layer is not a tar: {e}"))?;
        let path = path.to_string_lossy();
        if path.trim_start_matches("./").trim_start_matches('/') != PLUGIN_FILE {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .take(MAX_REMOTE_MODULE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("its layer's {PLUGIN_FILE} cannot be read: {e}"))?;
        if bytes.len() > MAX_REMOTE_MODULE_BYTES {
            return Err(format!("its {PLUGIN_FILE} is over {MAX_REMOTE_MODULE_BYTES} bytes"));
        }
        return Ok(bytes);
    }
    Err(format!("its layer holds no {PLUGIN_FILE}"))
}

/// A blob's bytes, refused past the size its descriptor gave (the digest is checked after).
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.bytes.len() + buf.len() > self.limit {
            return Poll::Ready(Err(std::io::Error::other("the blob is longer than its descriptor says")));
        }
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A registry's error, worth another attempt.
fn retry(e: oci_client::errors::OciDistributionError) -> PullError {
    PullError::Retry(e.to_string())
}

fn final_(why: impl Into<String>) -> PullError {
    PullError::Final(why.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        if !gzip {
            return tar;
        }
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &tar).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn plugin_file_is_found_in_a_layer() {
        let layer = tar_of(&[("runtime-config.json", b"{}"), ("./plugin.wasm", b"\0asm")], true);
        assert_eq!(plugin_file(&layer, true).unwrap(), b"\0asm");
        let layer = tar_of(&[("plugin.wasm", b"\0asm1")], false);
        assert_eq!(plugin_file(&layer, false).unwrap(), b"\0asm1");
        let layer = tar_of(&[("other.wasm", b"\0asm")], true);
        assert_eq!(plugin_file(&layer, true).unwrap_err(), "its layer holds no plugin.wasm");
        assert!(plugin_file(b"not a gzip", true).unwrap_err().starts_with("its layer is not a tar"));
    }

    fn descriptor(media_type: &str) -> OciDescriptor {
        OciDescriptor { media_type: media_type.into(), ..OciDescriptor::default() }
    }

    #[test]
    fn the_module_layer_is_chosen_as_istio_does() {
        let mut manifest = OciImageManifest {
            layers: vec![descriptor("application/vnd.oci.image.layer.v1.tar+gzip")],
            ..OciImageManifest::default()
        };
        assert!(matches!(module_layer(&manifest), Ok((_, Layer::Tar { gzip: true }))));
        manifest.layers.push(descriptor("application/vnd.module.wasm.content.layer.v1+wasm"));
        assert!(matches!(module_layer(&manifest), Ok((_, Layer::Module))));
        manifest.layers.push(descriptor("application/wasm"));
        assert_eq!(module_layer(&manifest).err().unwrap(), "the manifest has 2 Wasm layers, not one");
        manifest.layers = vec![descriptor("application/json")];
        assert_eq!(
            module_layer(&manifest).err().unwrap(),
            "its layer is of type \"application/json\", neither Wasm nor a tar"
        );
    }

    #[test]
    fn dockers_credentials_are_read() {
        let basic = |auth: Result<RegistryAuth, String>| match auth {
            Ok(RegistryAuth::Basic(user, password)) => format!("{user}:{password}"),
            Ok(RegistryAuth::Anonymous) => "anonymous".into(),
            Ok(_) => "other".into(),
            Err(e) => e,
        };
        let config = r#"{"auths": {"r.test:5000": {"auth": "cHVsbGVyOnNlY3JldA=="},
            "https://s.test": {"username": "u", "password": "p"}, "t.test": {"identitytoken": "x"},
            "bad.test": {"auth": "bm8gY29sb24="}}}"#;
        assert_eq!(basic(docker_credentials(config, "r.test:5000")), "puller:secret");
        assert_eq!(basic(docker_credentials(config, "s.test")), "u:p");
        assert_eq!(basic(docker_credentials(config, "other.test")), "anonymous");
        assert_eq!(basic(docker_credentials(config, "bad.test")), "auth is not user:password");
        assert!(basic(docker_credentials(config, "t.test")).contains("identity token"));
        assert!(docker_credentials("{", "r.test").is_err());
    }

    #[test]
    fn only_a_loopback_registry_is_plain_http() {
        let plain = |registry: &str| matches!(protocol(registry), ClientProtocol::HttpsExcept(r) if r == [registry]);
        assert!(plain("127.0.0.1:5000"));
        assert!(plain("[::1]:5000"));
        assert!(plain("localhost"));
        assert!(!plain("registry.example.com:5000"));
        assert!(!plain("10.0.0.1"));
        assert!(Image::new("http://127.0.0.1/a").is_err());
    }
}
