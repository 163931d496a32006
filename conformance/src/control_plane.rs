//! The test xDS control plane (`tools/xds/control-plane`, on go-control-plane, built into
//! `target/xds-control-plane` by `scripts/build-control-plane.sh`): started as a child
//! process, given snapshots over its HTTP API, asked what discovery requests it received.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

/// A running control plane, killed when dropped.
pub struct ControlPlane {
    child: Child,
    /// The port its ADS service listens on.
    pub xds_port: u16,
    api: SocketAddr,
}

impl ControlPlane {
    /// Starts it with ADS on `xds_port` (0: any free port).
    pub fn start(xds_port: u16) -> Result<ControlPlane, String> {
        let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/xds-control-plane");
        if !binary.exists() {
            return Err(format!("{} is missing: run scripts/build-control-plane.sh", binary.display()));
        }
        let mut child = Command::new(&binary)
            .arg(format!("--xds-port={xds_port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let port =
            |key: &str| -> Option<u16> { line.split_whitespace().find_map(|w| w.strip_prefix(key)?.parse().ok()) };
        match (port("xds="), port("api=")) {
            (Some(xds_port), Some(api)) => {
                Ok(ControlPlane { child, xds_port, api: SocketAddr::from(([127, 0, 0, 1], api)) })
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("the control plane did not start (it said {line:?})"))
            }
        }
    }

    fn http(&self, method: &str, path: &str, body: &str) -> Result<String, String> {
        let mut stream = TcpStream::connect(self.api).map_err(|e| format!("control plane: {e}"))?;
        let request =
            format!("{method} {path} HTTP/1.0\r\nhost: control-plane\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        stream.write_all(request.as_bytes()).map_err(|e| format!("control plane: {e}"))?;
        let mut text = String::new();
        stream.read_to_string(&mut text).map_err(|e| format!("control plane: {e}"))?;
        Ok(text)
    }

    /// Serves this snapshot to the node `node`: `resources` are `Any`s in proto JSON.
    pub fn set(&self, node: &str, version: &str, resources: &[Value]) -> Result<(), String> {
        let snapshot = json!({"version": version, "resources": resources}).to_string();
        let answer = self.http("PUT", &format!("/snapshot?node={node}"), &snapshot)?;
        if answer.starts_with("HTTP/1.0 204") { Ok(()) } else { Err(format!("snapshot refused: {answer}")) }
    }

    /// Every discovery request received so far, as JSON objects (`type_url`,
    /// `version_info`, `response_nonce`, `resource_names`, `error_detail`, `node`, `delta`,
    /// `initial_versions`).
    pub fn requests(&self) -> Vec<Value> {
        let text = self.http("GET", "/requests", "").unwrap_or_default();
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        body.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

impl ControlPlane {
    /// How many discovery streams are open now.
    pub fn streams(&self) -> usize {
        let text = self.http("GET", "/streams", "").unwrap_or_default();
        text.split_once("\r\n\r\n").and_then(|(_, b)| b.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
