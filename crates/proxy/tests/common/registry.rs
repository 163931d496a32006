//! Debian's `docker-registry`, started on port 0 for a test, and pushing images to it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::fresh_dir;

/// A registry on a port of its own, its storage in a directory of its own; stopped on drop.
pub struct Registry {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Registry {
    /// Started with `auth` (YAML for the `auth:` key of its configuration; empty for none).
    pub fn start(name: &str, auth: &str) -> Registry {
        let dir = fresh_dir(&format!("registry-{name}"));
        let config = format!(
            "version: 0.1\nlog: {{ level: info }}\nstorage: {{ filesystem: {{ rootdirectory: {} }} }}\n\
             http: {{ addr: 127.0.0.1:0, secret: wasmproxy-test }}\n{auth}",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker-registry (Debian's package, installed by scripts/setup.sh)");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.split("listening on ").nth(1).and_then(|rest| rest.split('"').next()?.parse().ok()))
            .expect("the registry says where it listens");
        // Keep reading its log, so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Registry { child, addr, dir }
    }

    /// `registry/repository` for this registry.
    pub fn reference(&self, repository: &str) -> String {
        format!("{}/{repository}", self.addr)
    }

    /// Pushes an image (with `auth`) and answers its manifest's digest.
    pub fn push(
        &self,
        repository: &str,
        layers: Vec<ImageLayer>,
        config: Config,
        docker: bool,
        auth: &RegistryAuth,
    ) -> String {
        let reference: Reference = self.reference(repository).parse().unwrap();
        let client = Client::new(ClientConfig { protocol: ClientProtocol::Http, ..Default::default() });
        let mut manifest = OciImageManifest::build(&layers, &config, None);
        if docker {
            // Docker's own format, as `docker push` of a `FROM scratch` image writes it.
            manifest.media_type = Some("application/vnd.docker.distribution.manifest.v2+json".into());
            manifest.config.media_type = "application/vnd.docker.container.image.v1+json".into();
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            client.push(&reference, &layers, config, auth, Some(manifest)).await.unwrap();
            client.fetch_manifest_digest(&reference, auth).await.unwrap()
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
