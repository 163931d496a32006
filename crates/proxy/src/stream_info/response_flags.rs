//! Envoy's response flags: what went wrong with a stream, in the order it was noted (for
//! `%RESPONSE_FLAGS%`) and as the bit mask plugins read as `response.flags`.

/// One of Envoy's core response flags; the discriminant is its bit in `response.flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ResponseFlag {
    /// `LH`: the health check filter answered that this proxy (or a cluster) is failing.
    FailedLocalHealthCheck = 0,
    /// `UH`: no healthy endpoint in the cluster.
    NoHealthyUpstream = 1,
    /// `UT`: the route's timeout passed.
    UpstreamRequestTimeout = 2,
    /// `UR`: the upstream reset the stream.
    UpstreamRemoteReset = 4,
    /// `UF`: the upstream connection failed.
    UpstreamConnectionFailure = 5,
    /// `UC`: the upstream connection closed before the response.
    UpstreamConnectionTermination = 6,
    /// `UO`: a circuit breaker of the cluster was open.
    UpstreamOverflow = 7,
    /// `NR`: no route matched.
    NoRouteFound = 8,
    /// `DI`: the fault filter delayed the request.
    DelayInjected = 9,
    /// `FI`: the fault filter aborted the request.
    FaultInjected = 10,
    /// `RL`: a rate limit refused the request.
    RateLimited = 11,
    /// `UAEX`: the external authorization service refused the request (or failed).
    UnauthorizedExternalService = 12,
    /// `RLSE`: the rate limit service failed, and the request was refused for it.
    RateLimitServiceError = 13,
    /// `DC`: the client went away.
    DownstreamConnectionTermination = 14,
    /// `URX`: the retries (or the TCP proxy's connect attempts) are used up.
    UpstreamRetryLimitExceeded = 15,
    /// `SI`: the stream idle timeout passed.
    StreamIdleTimeout = 16,
    /// `NFCF`: a discovered filter has no configuration.
    NoFilterConfigFound = 21,
    /// `NC`: the route's cluster does not exist.
    NoClusterFound = 24,
}

impl ResponseFlag {
    /// The short name `%RESPONSE_FLAGS%` prints.
    pub fn short_name(self) -> &'static str {
        match self {
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamRequestTimeout => "UT",
            ResponseFlag::UpstreamRemoteReset => "UR",
            ResponseFlag::UpstreamConnectionFailure => "UF",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::NoRouteFound => "NR",
            ResponseFlag::FailedLocalHealthCheck => "LH",
            ResponseFlag::DelayInjected => "DI",
            ResponseFlag::FaultInjected => "FI",
            ResponseFlag::RateLimited => "RL",
            ResponseFlag::UnauthorizedExternalService => "UAEX",
            ResponseFlag::RateLimitServiceError => "RLSE",
            ResponseFlag::DownstreamConnectionTermination => "DC",
            ResponseFlag::UpstreamRetryLimitExceeded => "URX",
            ResponseFlag::StreamIdleTimeout => "SI",
            ResponseFlag::NoFilterConfigFound => "NFCF",
            ResponseFlag::NoClusterFound => "NC",
        }
    }
}

/// A stream's response flags, each once, in the order they were set (as Envoy keeps them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFlags(Vec<ResponseFlag>);

impl ResponseFlags {
    /// Notes `flag` (again is a no-op).
    pub fn set(&mut self, flag: ResponseFlag) {
        if !self.has(flag) {
            self.0.push(flag);
        }
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: ResponseFlag) -> bool {
        self.0.contains(&flag)
    }

    /// `response.flags`: one bit per flag.
    pub fn bits(&self) -> u64 {
        self.0.iter().fold(0, |bits, flag| bits | 1 << *flag as u8)
    }

    /// `%RESPONSE_FLAGS%`: the short names joined by commas, `-` for none.
    pub fn short_string(&self) -> String {
        if self.0.is_empty() {
            return "-".into();
        }
        self.0.iter().map(|f| f.short_name()).collect::<Vec<_>>().join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_names_are_envoys() {
        let mut flags = ResponseFlags::default();
        assert_eq!((flags.bits(), flags.short_string().as_str()), (0, "-"));
        flags.set(ResponseFlag::UpstreamConnectionFailure);
        flags.set(ResponseFlag::UpstreamRetryLimitExceeded);
        flags.set(ResponseFlag::UpstreamConnectionFailure);
        // Envoy's UpstreamConnectionFailure = 0x20, UpstreamRetryLimitExceeded = 0x8000.
        assert_eq!((flags.bits(), flags.short_string().as_str()), (0x8020, "UF,URX"));
        let mut nr = ResponseFlags::default();
        nr.set(ResponseFlag::NoRouteFound);
        nr.set(ResponseFlag::NoClusterFound);
        nr.set(ResponseFlag::NoFilterConfigFound);
        assert_eq!(nr.bits(), 0x100 | 0x1000000 | 0x200000);
    }
}
