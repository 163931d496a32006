//! The numbered types of the ABI (`proxy_status_t`, `proxy_map_type_t`, ...).

macro_rules! abi_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:expr),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value),+
        }

        impl $name {
            /// The value for `raw`, or `None` if the ABI has no such value.
            pub fn from_u32(raw: u32) -> Option<Self> {
                match raw {
                    $($value => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

abi_enum! {
    /// `proxy_status_t`: what every hostcall returns (with Envoy's extra codes 5, 9, 11).
    Status {
        /// Success.
        Ok = 0,
        /// The thing asked for does not exist.
        NotFound = 1,
        /// An argument was wrong, or the thing is not available in this phase.
        BadArgument = 2,
        /// A value could not be serialized.
        SerializationFailure = 3,
        /// A value could not be parsed.
        ParseFailure = 4,
        /// An expression was bad (Envoy only).
        BadExpression = 5,
        /// A pointer or length points outside the guest's memory.
        InvalidMemoryAccess = 6,
        /// A queue is empty.
        Empty = 7,
        /// A compare-and-swap found another value.
        CasMismatch = 8,
        /// A result did not match (Envoy only).
        ResultMismatch = 9,
        /// The host failed.
        InternalFailure = 10,
        /// A connection broke (Envoy only).
        BrokenConnection = 11,
        /// The host does not implement this.
        Unimplemented = 12,
    }
}

abi_enum! {
    /// `proxy_log_level_t`.
    LogLevel {
        /// Trace.
        Trace = 0,
        /// Debug.
        Debug = 1,
        /// Info.
        Info = 2,
        /// Warn.
        Warn = 3,
        /// Error.
        Error = 4,
        /// Critical.
        Critical = 5,
    }
}

abi_enum! {
    /// `proxy_buffer_type_t`.
    BufferType {
        /// The HTTP request body.
        HttpRequestBody = 0,
        /// The HTTP response body.
        HttpResponseBody = 1,
        /// Bytes read from the downstream connection.
        DownstreamData = 2,
        /// Bytes read from the upstream connection.
        UpstreamData = 3,
        /// The body of an `http_call` response.
        HttpCallResponseBody = 4,
        /// A gRPC message received.
        GrpcReceiveBuffer = 5,
        /// The VM configuration.
        VmConfiguration = 6,
        /// The plugin configuration.
        PluginConfiguration = 7,
        /// The arguments of a foreign function call.
        ForeignFunctionArguments = 8,
    }
}

abi_enum! {
    /// `proxy_map_type_t`.
    MapType {
        /// HTTP request headers.
        HttpRequestHeaders = 0,
        /// HTTP request trailers.
        HttpRequestTrailers = 1,
        /// HTTP response headers.
        HttpResponseHeaders = 2,
        /// HTTP response trailers.
        HttpResponseTrailers = 3,
        /// gRPC initial metadata received.
        GrpcReceiveInitialMetadata = 4,
        /// gRPC trailing metadata received.
        GrpcReceiveTrailingMetadata = 5,
        /// The headers of an `http_call` response.
        HttpCallResponseHeaders = 6,
        /// The trailers of an `http_call` response.
        HttpCallResponseTrailers = 7,
    }
}

abi_enum! {
    /// `proxy_stream_type_t` (0.2.x).
    StreamType {
        /// The HTTP request direction.
        HttpRequest = 0,
        /// The HTTP response direction.
        HttpResponse = 1,
        /// The downstream side of a TCP connection.
        Downstream = 2,
        /// The upstream side of a TCP connection.
        Upstream = 3,
    }
}

abi_enum! {
    /// `proxy_peer_type_t`: who closed a connection.
    PeerType {
        /// Unknown.
        Unknown = 0,
        /// This proxy.
        Local = 1,
        /// The other end.
        Remote = 2,
    }
}

abi_enum! {
    /// `proxy_metric_type_t`.
    MetricType {
        /// A monotonically increasing counter.
        Counter = 0,
        /// A gauge.
        Gauge = 1,
        /// A histogram.
        Histogram = 2,
    }
}

impl Status {
    /// The raw value returned to the guest.
    pub fn raw(self) -> u32 {
        self as u32
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}({})", self, *self as u32)
    }
}

impl LogLevel {
    /// The level's lower-case name, as Envoy prints it.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }
}

/// The ABI version a module declares with its `proxy_abi_version_*` export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AbiVersion {
    /// `proxy_abi_version_0_1_0`: 2-argument header callbacks, `proxy_get_configuration`.
    V0_1_0,
    /// `proxy_abi_version_0_2_0`.
    V0_2_0,
    /// `proxy_abi_version_0_2_1`: adds `proxy_get_log_level`.
    V0_2_1,
}

impl AbiVersion {
    /// Every version, with the export that marks it.
    pub const MARKERS: [(&'static str, AbiVersion); 3] = [
        ("proxy_abi_version_0_1_0", AbiVersion::V0_1_0),
        ("proxy_abi_version_0_2_0", AbiVersion::V0_2_0),
        ("proxy_abi_version_0_2_1", AbiVersion::V0_2_1),
    ];

    /// The version marked by an export name, if it is one.
    pub fn from_export(name: &str) -> Option<AbiVersion> {
        Self::MARKERS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

impl std::fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AbiVersion::V0_1_0 => "0.1.0",
            AbiVersion::V0_2_0 => "0.2.0",
            AbiVersion::V0_2_1 => "0.2.1",
        })
    }
}

/// What the host does after a header callback, as Envoy maps the guest's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterHeadersStatus {
    /// Go on to the next filter.
    Continue,
    /// Stop this filter's headers only (kept only with `allow_on_headers_stop_iteration`).
    StopIteration,
    /// Stop headers and buffer the body until the plugin continues.
    StopAllIterationAndBuffer,
    /// Stop headers and the body, with watermarks (what a plain `Pause` becomes).
    StopAllIterationAndWatermark,
}

impl FilterHeadersStatus {
    /// Envoy's mapping of a header callback's return value (cpp-host `convertVmCallResultToFilterHeadersStatus`).
    pub fn from_guest(raw: u32, allow_stop_iteration: bool) -> Self {
        match raw {
            0 | 2 => Self::Continue,
            1 if allow_stop_iteration => Self::StopIteration,
            1 => Self::StopAllIterationAndWatermark,
            3 => Self::StopAllIterationAndBuffer,
            _ => Self::StopAllIterationAndWatermark,
        }
    }

    /// True unless the filter continues.
    pub fn is_stop(self) -> bool {
        self != Self::Continue
    }
}

/// What the host does after a body callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterDataStatus {
    /// Pass this chunk on.
    Continue,
    /// Keep this chunk and the ones after it until the plugin continues (Rust/Go `Pause`).
    StopIterationAndBuffer,
    /// Buffer with watermarks.
    StopIterationAndWatermark,
    /// Hold back without buffering.
    StopIterationNoBuffer,
}

impl FilterDataStatus {
    /// Envoy's mapping of a body callback's return value.
    pub fn from_guest(raw: u32) -> Self {
        match raw {
            0 => Self::Continue,
            1 => Self::StopIterationAndBuffer,
            2 => Self::StopIterationAndWatermark,
            _ => Self::StopIterationNoBuffer,
        }
    }

    /// True unless the filter continues.
    pub fn is_stop(self) -> bool {
        self != Self::Continue
    }
}

/// What the host does after a trailer or TCP data callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterStatus {
    /// Go on.
    Continue,
    /// Stop until the plugin continues.
    StopIteration,
}

impl FilterStatus {
    /// Envoy's mapping: 0 continues, anything else stops.
    pub fn from_guest(raw: u32) -> Self {
        if raw == 0 { Self::Continue } else { Self::StopIteration }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_status_mapping_matches_envoy() {
        assert_eq!(FilterHeadersStatus::from_guest(0, false), FilterHeadersStatus::Continue);
        assert_eq!(FilterHeadersStatus::from_guest(1, false), FilterHeadersStatus::StopAllIterationAndWatermark);
        assert_eq!(FilterHeadersStatus::from_guest(1, true), FilterHeadersStatus::StopIteration);
        assert_eq!(FilterHeadersStatus::from_guest(2, false), FilterHeadersStatus::Continue);
        assert_eq!(FilterHeadersStatus::from_guest(3, false), FilterHeadersStatus::StopAllIterationAndBuffer);
        assert_eq!(FilterHeadersStatus::from_guest(99, false), FilterHeadersStatus::StopAllIterationAndWatermark);
        assert_eq!(FilterDataStatus::from_guest(1), FilterDataStatus::StopIterationAndBuffer);
        assert_eq!(FilterDataStatus::from_guest(7), FilterDataStatus::StopIterationNoBuffer);
        assert_eq!(FilterStatus::from_guest(5), FilterStatus::StopIteration);
    }

    #[test]
    fn enums_round_trip() {
        for raw in 0..=12 {
            if let Some(s) = Status::from_u32(raw) {
                assert_eq!(s.raw(), raw);
            }
        }
        assert_eq!(Status::from_u32(13), None);
        assert_eq!(MapType::from_u32(7), Some(MapType::HttpCallResponseTrailers));
        assert_eq!(BufferType::from_u32(9), None);
        assert_eq!(AbiVersion::from_export("proxy_abi_version_0_2_0"), Some(AbiVersion::V0_2_0));
        assert_eq!(AbiVersion::from_export("proxy_abi_version_0_3_0"), None);
    }
}
