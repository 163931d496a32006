//! Envoy's filter-state objects a plugin may create with the `set_envoy_filter_state`
//! foreign function: the keys Envoy 1.40 has object factories for, what each accepts, and
//! what it reads back as through `filter_state.<key>`.

use std::net::{IpAddr, SocketAddr};

use wasmproxy_abi::Status;

/// The TCP proxy's per-connection cluster: set before the upstream is connected, it picks
/// the cluster instead of the configured one.
pub const TCP_PROXY_CLUSTER: &[u8] = b"envoy.tcp_proxy.cluster";

/// The object Envoy's factory for `key` makes of `value`: `Some(bytes)` as it reads back,
/// `None` for an object Envoy cannot serialize (it exists, but reads as NOT_FOUND).
/// NOT_FOUND for a key without a factory; BAD_ARGUMENT for a value the factory refuses.
pub fn envoy_object(key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    match key {
        TCP_PROXY_CLUSTER
        | b"envoy.string"
        | b"envoy.hashable_string"
        | b"envoy.network.upstream_server_name"
        | b"envoy.network.upstream_subject_alt_names"
        | b"envoy.upstream.dynamic_host" => Ok(Some(value.to_vec())),
        b"envoy.network.application_protocols" => Ok(None),
        // A 32-bit unsigned number (surrounding spaces allowed), read back in decimal.
        b"envoy.upstream.dynamic_port" => {
            let port: u32 = text(value)?.trim().parse().map_err(|_| Status::BadArgument)?;
            Ok(Some(port.to_string().into_bytes()))
        }
        // An IP address, read back as an address with port 0 (`[::1]:0`).
        b"envoy.network.ip" => {
            let ip: IpAddr = text(value)?.parse().map_err(|_| Status::BadArgument)?;
            Ok(Some(SocketAddr::new(ip, 0).to_string().into_bytes()))
        }
        _ => Err(Status::NotFound),
    }
}

fn text(value: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(value).map_err(|_| Status::BadArgument)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Envoy 1.40 answered for each key and value.
    #[test]
    fn objects_are_made_as_in_envoy() {
        let made = |k: &str, v: &str| envoy_object(k.as_bytes(), v.as_bytes());
        let some = |v: &str| Ok(Some(v.as_bytes().to_vec()));
        assert_eq!(made("envoy.tcp_proxy.cluster", "other"), some("other"));
        assert_eq!(made("envoy.upstream.dynamic_port", " 80"), some("80"));
        assert_eq!(made("envoy.upstream.dynamic_port", "4294967295"), some("4294967295"));
        assert_eq!(made("envoy.upstream.dynamic_port", "4294967296"), Err(Status::BadArgument));
        assert_eq!(made("envoy.upstream.dynamic_port", "-1"), Err(Status::BadArgument));
        assert_eq!(made("envoy.upstream.dynamic_port", "0x50"), Err(Status::BadArgument));
        assert_eq!(made("envoy.network.ip", "::1"), some("[::1]:0"));
        assert_eq!(made("envoy.network.ip", "10.0.0.1:80"), Err(Status::BadArgument));
        assert_eq!(made("envoy.network.application_protocols", "h2"), Ok(None));
        assert_eq!(made("my.key", "v"), Err(Status::NotFound));
        assert_eq!(made("wasm.x", "v"), Err(Status::NotFound));
    }
}
