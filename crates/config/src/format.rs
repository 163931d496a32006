//! Envoy's substitution formats (`%REQ(:PATH)%`, `%START_TIME(%s)%`, ...): parsed once, where
//! the configuration is read, for access logs and for header values.

/// A command operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `%REQ(A?B)%`: a request header (lower-cased), or the second if the first is absent.
    RequestHeader(String, Option<String>),
    /// `%RESP(A?B)%`.
    ResponseHeader(String, Option<String>),
    /// `%START_TIME%` or `%START_TIME(strftime)%`.
    StartTime(Option<String>),
    /// `%RESPONSE_CODE%`.
    ResponseCode,
    /// `%RESPONSE_FLAGS%`.
    ResponseFlags,
    /// `%RESPONSE_CODE_DETAILS%`.
    ResponseCodeDetails,
    /// `%BYTES_RECEIVED%`.
    BytesReceived,
    /// `%BYTES_SENT%`.
    BytesSent,
    /// `%DURATION%`.
    Duration,
    /// `%REQUEST_DURATION%`.
    RequestDuration,
    /// `%RESPONSE_DURATION%`.
    ResponseDuration,
    /// `%PROTOCOL%`.
    Protocol,
    /// `%UPSTREAM_HOST%`.
    UpstreamHost,
    /// `%UPSTREAM_CLUSTER%`.
    UpstreamCluster,
    /// `%UPSTREAM_LOCAL_ADDRESS%`.
    UpstreamLocalAddress,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    UpstreamTransportFailureReason,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%` (and `_WITHOUT_PORT`): the client as the connection
    /// manager found it (from `x-forwarded-for`, or the peer).
    DownstreamRemoteAddress {
        /// With the port.
        port: bool,
    },
    /// `%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%` (and `_WITHOUT_PORT`): the peer.
    DownstreamDirectRemoteAddress {
        /// With the port.
        port: bool,
    },
    /// `%DOWNSTREAM_LOCAL_ADDRESS%` (and `_WITHOUT_PORT`).
    DownstreamLocalAddress {
        /// With the port.
        port: bool,
    },
    /// `%ROUTE_NAME%`.
    RouteName,
    /// `%CONNECTION_ID%`.
    ConnectionId,
    /// `%HOSTNAME%`.
    Hostname,
    /// `%REQUESTED_SERVER_NAME%`.
    RequestedServerName,
}

/// A part of a format.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// An operator, and the length its value is cut to (`%REQ(X):10%`).
    Op(Op, Option<usize>),
}

/// Parses a format. `%%` is a literal `%`, as in Envoy; a `%` that starts no operator is an
/// error.
pub fn parse(format: &str) -> Result<Vec<Piece>, String> {
    let bytes = format.as_bytes();
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let next = format[i..].find('%').map_or(format.len(), |n| i + n);
            text.push_str(&format[i..next]);
            i = next;
            continue;
        }
        if bytes.get(i + 1) == Some(&b'%') {
            text.push('%');
            i += 2;
            continue;
        }
        // `%NAME%`, `%NAME(ARG)%`, `%NAME(ARG):N%`.
        let start = i + 1;
        let mut j = start;
        while j < bytes.len() && (bytes[j].is_ascii_uppercase() || bytes[j].is_ascii_digit() || bytes[j] == b'_') {
            j += 1;
        }
        let name = &format[start..j];
        if name.is_empty() {
            return Err(format!("no command operator at byte {i} (a literal % is written %%)"));
        }
        let mut arg = None;
        if bytes.get(j) == Some(&b'(') {
            let close = format[j..].find(')').ok_or_else(|| format!("%{name}( has no closing parenthesis"))?;
            arg = Some(format[j + 1..j + close].to_string());
            j += close + 1;
        }
        let mut max_len = None;
        if bytes.get(j) == Some(&b':') {
            let digits_end = format[j + 1..].find(|c: char| !c.is_ascii_digit()).map_or(format.len(), |n| j + 1 + n);
            max_len = Some(format[j + 1..digits_end].parse().map_err(|_| format!("%{name}: bad length"))?);
            j = digits_end;
        }
        if bytes.get(j) != Some(&b'%') {
            return Err(format!("%{name} is not closed by %"));
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(Piece::Op(operator(name, arg)?, max_len));
        i = j + 1;
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

fn operator(name: &str, arg: Option<String>) -> Result<Op, String> {
    let header = |arg: Option<String>| -> Result<(String, Option<String>), String> {
        let arg = arg.ok_or(format!("%{name}% needs a header name: %{name}(X)%"))?;
        let (main, alt) = match arg.split_once('?') {
            Some((a, b)) => (a.to_ascii_lowercase(), Some(b.to_ascii_lowercase())),
            None => (arg.to_ascii_lowercase(), None),
        };
        Ok((main, alt))
    };
    Ok(match name {
        "REQ" | "REQUEST_HEADER" => {
            let (a, b) = header(arg)?;
            Op::RequestHeader(a, b)
        }
        "RESP" | "RESPONSE_HEADER" => {
            let (a, b) = header(arg)?;
            Op::ResponseHeader(a, b)
        }
        "START_TIME" => Op::StartTime(arg.filter(|a| !a.is_empty())),
        "RESPONSE_CODE" => Op::ResponseCode,
        "RESPONSE_FLAGS" => Op::ResponseFlags,
        "RESPONSE_CODE_DETAILS" => Op::ResponseCodeDetails,
        "BYTES_RECEIVED" => Op::BytesReceived,
        "BYTES_SENT" => Op::BytesSent,
        "DURATION" => Op::Duration,
        "REQUEST_DURATION" => Op::RequestDuration,
        "RESPONSE_DURATION" => Op::ResponseDuration,
        "PROTOCOL" => Op::Protocol,
        "UPSTREAM_HOST" => Op::UpstreamHost,
        "UPSTREAM_CLUSTER" => Op::UpstreamCluster,
        "UPSTREAM_LOCAL_ADDRESS" => Op::UpstreamLocalAddress,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => Op::UpstreamTransportFailureReason,
        "DOWNSTREAM_REMOTE_ADDRESS" => Op::DownstreamRemoteAddress { port: true },
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamRemoteAddress { port: false },
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => Op::DownstreamDirectRemoteAddress { port: true },
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamDirectRemoteAddress { port: false },
        "DOWNSTREAM_LOCAL_ADDRESS" => Op::DownstreamLocalAddress { port: true },
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Op::DownstreamLocalAddress { port: false },
        "ROUTE_NAME" => Op::RouteName,
        "CONNECTION_ID" => Op::ConnectionId,
        "HOSTNAME" => Op::Hostname,
        "REQUESTED_SERVER_NAME" => Op::RequestedServerName,
        other => return Err(format!("the command operator %{other}% is not supported by wasmproxy")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_parse_with_arguments_and_lengths() {
        let p = parse("a %REQ(X-A?Y):3% %START_TIME(%s)% b").expect("parses");
        assert_eq!(
            p,
            [
                Piece::Text("a ".into()),
                Piece::Op(Op::RequestHeader("x-a".into(), Some("y".into())), Some(3)),
                Piece::Text(" ".into()),
                Piece::Op(Op::StartTime(Some("%s".into())), None),
                Piece::Text(" b".into()),
            ]
        );
        let e = parse("%NOPE%").expect_err("unknown");
        assert!(e.contains("%NOPE% is not supported"), "{e}");
        assert!(parse("%REQ(X%").is_err());
        assert_eq!(parse("50%% off"), Ok(vec![Piece::Text("50% off".into())]));
        assert!(parse("50% off").is_err());
    }
}
