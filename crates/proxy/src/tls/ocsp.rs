//! OCSP stapling (`ocsp_staple`, `ocsp_staple_policy`) as Envoy does it: a DER OCSP
//! response read and checked as Envoy checks it when it loads one (a successful basic
//! response, for one certificate only, the one it is stapled to by serial number; its
//! signature is not checked, the operator being trusted with it), stapled while it is
//! current (until its `nextUpdate`), and the policy's answer when it is not.

use rustls::sign::CertifiedKey;
use wasmproxy_config::model::OcspStaplePolicy;
use x509_parser::asn1_rs::{Any, Class, FromDer, GeneralizedTime, Tag};

/// `id-pkix-ocsp-basic` (1.3.6.1.5.5.7.48.1.1), DER.
const BASIC_RESPONSE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
/// The TLS feature extension (1.3.6.1.5.5.7.1.24), which makes a certificate "must staple".
const TLS_FEATURE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x18];

/// An OCSP response, as stapled and as checked.
#[derive(Debug, Clone)]
pub struct OcspResponse {
    /// The response, DER, as it is stapled.
    pub der: Vec<u8>,
    /// The serial number of the certificate it is for (no leading zero bytes).
    serial: Vec<u8>,
    /// `thisUpdate`, in seconds since the Unix epoch.
    pub this_update: i64,
    /// `nextUpdate`, in seconds since the Unix epoch; none: never current, as in Envoy.
    pub next_update: Option<i64>,
}

/// What a handshake does about OCSP, as Envoy decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stapling {
    /// The client did not ask for a staple.
    NotAsked,
    /// The response is stapled (`ssl.ocsp_staple_responses`).
    Stapled,
    /// The client asked; no current response, and the policy lets that be
    /// (`ssl.ocsp_staple_omitted`).
    Omitted,
    /// The client asked; no current response, and the policy refuses the handshake
    /// (`ssl.ocsp_staple_failed`).
    Refused,
}

impl OcspResponse {
    /// Reads a DER OCSP response; an error in Envoy's words.
    pub fn parse(der: Vec<u8>) -> Result<OcspResponse, String> {
        let (serial, this_update, next_update) = read_response(&der)?;
        let serial = serial.iter().copied().skip_while(|b| *b == 0).collect();
        Ok(OcspResponse { der, serial, this_update, next_update })
    }

    /// Whether it is for the certificate with the serial number `serial` (DER integer
    /// bytes).
    pub fn matches(&self, serial: &[u8]) -> bool {
        self.serial.iter().eq(serial.iter().skip_while(|b| **b == 0))
    }

    /// Whether it is no longer current at `now` (seconds since the Unix epoch).
    pub fn expired(&self, now: i64) -> bool {
        self.next_update.is_none_or(|next| next < now)
    }
}

/// A DER certificate's serial number, and whether it has the TLS feature extension
/// (Envoy treats any such certificate as "must staple"); none for one that does not parse.
fn serial_and_must_staple(der: &[u8]) -> (Vec<u8>, bool) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return (Vec::new(), false) };
    let must_staple = cert.extensions().iter().any(|e| e.oid.as_bytes() == TLS_FEATURE);
    (cert.raw_serial().to_vec(), must_staple)
}

/// A certificate's OCSP response and what it must do, checked against the certificate
/// as Envoy checks it when it loads them.
#[derive(Debug, Clone)]
pub struct Staple {
    /// The certificate and key with the response, served when it is stapled.
    pub stapled: Option<(std::sync::Arc<CertifiedKey>, OcspResponse)>,
    /// The certificate has the TLS feature extension: its policy is `MUST_STAPLE`.
    pub must_staple: bool,
}

impl Staple {
    /// The staple for the certificate `key`, with the response `response` if there is one.
    pub fn new(key: &CertifiedKey, response: Option<Vec<u8>>) -> Result<Staple, String> {
        let leaf = key.cert.first().map(|c| c.as_ref()).unwrap_or_default();
        let (serial, must_staple) = serial_and_must_staple(leaf);
        let Some(der) = response else { return Ok(Staple { stapled: None, must_staple }) };
        let response = OcspResponse::parse(der)?;
        if !response.matches(&serial) {
            return Err("OCSP response does not match its TLS certificate".into());
        }
        let mut stapled = key.clone();
        stapled.ocsp = Some(response.der.clone());
        Ok(Staple { stapled: Some((std::sync::Arc::new(stapled), response)), must_staple })
    }

    /// Whether a listener's certificate may be served under `policy`: a must-staple
    /// certificate, or any under `MUST_STAPLE`, needs a response (Envoy's words if not).
    pub fn required(&self, policy: OcspStaplePolicy) -> Result<(), &'static str> {
        match self.stapled {
            Some(_) => Ok(()),
            None if self.must_staple => Err("OCSP response is required for must-staple certificate"),
            None if policy == OcspStaplePolicy::MustStaple => Err("Required OCSP response is missing from TLS context"),
            None => Ok(()),
        }
    }

    /// When its response starts and stops being current, for `/certs` (`thisUpdate` and
    /// `nextUpdate`, if it has one).
    pub fn validity(&self) -> Option<(i64, Option<i64>)> {
        self.stapled.as_ref().map(|(_, r)| (r.this_update, r.next_update))
    }

    /// What a handshake does under `policy` at `now`, for a client that `asked` for a
    /// staple.
    pub fn decide(&self, policy: OcspStaplePolicy, asked: bool, now: i64) -> Stapling {
        if !asked {
            return Stapling::NotAsked;
        }
        let policy = if self.must_staple { OcspStaplePolicy::MustStaple } else { policy };
        let response = self.stapled.as_ref().map(|(_, r)| r);
        match (response.map(|r| !r.expired(now)), policy) {
            (Some(true), _) => Stapling::Stapled,
            (None, OcspStaplePolicy::Lenient | OcspStaplePolicy::Strict) => Stapling::Omitted,
            (Some(false), OcspStaplePolicy::Lenient) => Stapling::Omitted,
            (Some(false), OcspStaplePolicy::Strict) | (_, OcspStaplePolicy::MustStaple) => Stapling::Refused,
        }
    }

    /// The certificate and key to serve at `now`: with the response while it is current
    /// (rustls staples it only for a client that asks).
    pub fn key_at(&self, plain: &std::sync::Arc<CertifiedKey>, now: i64) -> std::sync::Arc<CertifiedKey> {
        match &self.stapled {
            Some((stapled, response)) if !response.expired(now) => stapled.clone(),
            _ => plain.clone(),
        }
    }
}

/// The next DER element of `input`.
fn next<'a>(input: &mut &'a [u8], what: &str) -> Result<Any<'a>, String> {
    let (rest, any) = Any::from_der(input).map_err(|_| format!("OCSP {what} is not well-formed ASN.1"))?;
    *input = rest;
    Ok(any)
}

/// The next DER element of `input`, which must be a universal `tag`.
fn expect<'a>(input: &mut &'a [u8], tag: Tag, what: &str) -> Result<&'a [u8], String> {
    match next(input, what) {
        Ok(any) if any.class() == Class::Universal && any.tag() == tag => Ok(any.data),
        _ => Err(format!("OCSP {what} is not a well-formed ASN.1 {}", tag_name(tag))),
    }
}

/// The next DER element of `input` if it is context-specific `[number]`.
fn optional<'a>(input: &mut &'a [u8], number: u32) -> Option<&'a [u8]> {
    let mut look = *input;
    let any = next(&mut look, "").ok()?;
    (any.class() == Class::ContextSpecific && any.tag() == Tag(number)).then(|| {
        *input = look;
        any.data
    })
}

fn tag_name(tag: Tag) -> &'static str {
    match tag {
        Tag::Sequence => "SEQUENCE",
        Tag::Enumerated => "ENUMERATED",
        Tag::OctetString => "OCTETSTRING",
        Tag::Oid => "OBJECT IDENTIFIER",
        Tag::Integer => "INTEGER",
        Tag::GeneralizedTime => "GeneralizedTime",
        _ => "element",
    }
}

/// A `GeneralizedTime`, in seconds since the Unix epoch.
fn time(input: &mut &[u8], what: &str) -> Result<i64, String> {
    let any = next(input, what)?;
    GeneralizedTime::try_from(any)
        .ok()
        .and_then(|t| t.utc_datetime().ok())
        .map(|t| t.unix_timestamp())
        .ok_or_else(|| format!("OCSP {what} is not a well-formed ASN.1 GeneralizedTime"))
}

/// `OCSPResponse`: the serial number, `thisUpdate` and `nextUpdate` of its one
/// `SingleResponse`.
fn read_response(der: &[u8]) -> Result<(&[u8], i64, Option<i64>), String> {
    let mut input = der;
    let mut response = expect(&mut input, Tag::Sequence, "Response")?;
    if !input.is_empty() {
        return Err("Data contained more than a single OCSP response".into());
    }
    let status = expect(&mut response, Tag::Enumerated, "ResponseStatus")?;
    match status {
        [0] => {}
        [1 | 2 | 3 | 5 | 6] => return Err("OCSP response was unsuccessful".into()),
        other => {
            let value = other.first().copied().unwrap_or_default();
            return Err(format!("Unknown OCSP Response Status variant: {value}"));
        }
    }
    let Some(mut bytes) = optional(&mut response, 0) else { return Err("OCSP response has no body".into()) };
    let mut bytes = expect(&mut bytes, Tag::Sequence, "ResponseBytes")?;
    let oid = expect(&mut bytes, Tag::Oid, "ResponseBytes responseType")?;
    let mut basic = expect(&mut bytes, Tag::OctetString, "ResponseBytes response")?;
    if oid != BASIC_RESPONSE {
        let oid = x509_parser::asn1_rs::Oid::new(oid.into()).to_id_string();
        return Err(format!("Unknown OCSP Response type with OID: {oid}"));
    }
    let mut basic = expect(&mut basic, Tag::Sequence, "BasicOCSPResponse")?;
    let mut data = expect(&mut basic, Tag::Sequence, "ResponseData")?;
    if let Some(mut version) = optional(&mut data, 0) {
        let version = expect(&mut version, Tag::Integer, "ResponseData version")?;
        if version != [0] {
            let hex: String = version.iter().map(|b| format!("{b:02x}")).collect();
            return Err(format!("OCSP ResponseData version 0x{hex} is not supported"));
        }
    }
    // responderID: byName [1] or byKey [2].
    if optional(&mut data, 1).or_else(|| optional(&mut data, 2)).is_none() {
        return Err("OCSP ResponseData has an unknown choice for Responder ID".into());
    }
    expect(&mut data, Tag::GeneralizedTime, "ResponseData producedAt")?;
    let mut responses = expect(&mut data, Tag::Sequence, "ResponseData responses")?;
    let mut single = expect(&mut responses, Tag::Sequence, "SingleResponse")?;
    if !responses.is_empty() {
        return Err("OCSP Response must be for one certificate only".into());
    }
    let mut id = expect(&mut single, Tag::Sequence, "CertID")?;
    expect(&mut id, Tag::Sequence, "CertID hashAlgorithm")?;
    expect(&mut id, Tag::OctetString, "CertID issuerNameHash")?;
    expect(&mut id, Tag::OctetString, "CertID issuerKeyHash")?;
    let serial = expect(&mut id, Tag::Integer, "CertID serialNumber")?;
    // certStatus: good [0], revoked [1] or unknown [2]; Envoy staples each alike.
    let status = next(&mut single, "CertStatus")?;
    if status.class() != Class::ContextSpecific || status.tag().0 > 2 {
        return Err(format!("Unknown OcspCertStatus tag: {}", status.tag().0));
    }
    let this_update = time(&mut single, "SingleResponse thisUpdate")?;
    let next_update = match optional(&mut single, 0) {
        Some(mut next) => Some(time(&mut next, "SingleResponse nextUpdate")?),
        None => None,
    };
    Ok((serial, this_update, next_update))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A DER element: `tag`, then `content`.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            n if n < 128 => out.push(n as u8),
            n if n < 256 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    /// An OCSP response of `status` for the certificates with `serials`, current from
    /// `this_update` to `next_update` (`YYYYMMDDHHMMSSZ`).
    fn response(status: u8, serials: &[&[u8]], this_update: &str, next_update: Option<&str>) -> Vec<u8> {
        let singles: Vec<u8> = serials
            .iter()
            .flat_map(|serial| {
                let algorithm = tlv(0x30, &[tlv(0x06, &[0x2b, 0x0e, 0x03, 0x02, 0x1a]), tlv(0x05, &[])].concat());
                let id = tlv(0x30, &[algorithm, tlv(0x04, &[1; 20]), tlv(0x04, &[2; 20]), tlv(0x02, serial)].concat());
                let mut single = [id, tlv(0x80, &[]), tlv(0x18, this_update.as_bytes())].concat();
                if let Some(next) = next_update {
                    single.extend(tlv(0xa0, &tlv(0x18, next.as_bytes())));
                }
                tlv(0x30, &single)
            })
            .collect();
        let data = [tlv(0xa2, &tlv(0x04, &[3; 20])), tlv(0x18, b"20261201000000Z"), tlv(0x30, &singles)].concat();
        let algorithm = tlv(0x30, &tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]));
        let basic = tlv(0x30, &[tlv(0x30, &data), algorithm, tlv(0x03, &[0, 1, 2, 3])].concat());
        let bytes = tlv(0x30, &[tlv(0x06, BASIC_RESPONSE), tlv(0x04, &basic)].concat());
        tlv(0x30, &[tlv(0x0a, &[status]), tlv(0xa0, &bytes)].concat())
    }

    #[test]
    fn a_response_gives_its_serial_and_times() {
        let der = response(0, &[&[0x00, 0x9a, 0x01]], "20261201000000Z", Some("20261208000000Z"));
        let read = OcspResponse::parse(der.clone()).unwrap();
        assert!(read.matches(&[0x9a, 0x01]) && read.matches(&[0x00, 0x9a, 0x01]) && !read.matches(&[0x9a]));
        assert_eq!((read.this_update, read.next_update), (1_796_083_200, Some(1_796_688_000)));
        assert!(!read.expired(1_796_688_000) && read.expired(1_796_688_001));
        assert_eq!(read.der, der);
        // Without nextUpdate it is never current.
        let open = OcspResponse::parse(response(0, &[&[7]], "20261201000000Z", None)).unwrap();
        assert!(open.expired(0));
    }

    #[test]
    fn bad_responses_are_refused_in_envoys_words() {
        let refused = |der: Vec<u8>| OcspResponse::parse(der).unwrap_err();
        let now = "20261201000000Z";
        assert_eq!(refused(response(3, &[&[7]], now, None)), "OCSP response was unsuccessful");
        assert_eq!(refused(response(9, &[&[7]], now, None)), "Unknown OCSP Response Status variant: 9");
        assert_eq!(refused(response(0, &[&[7], &[8]], now, None)), "OCSP Response must be for one certificate only");
        assert_eq!(refused(tlv(0x30, &tlv(0x0a, &[0]))), "OCSP response has no body");
        let mut two = response(0, &[&[7]], now, None);
        two.extend(response(0, &[&[7]], now, None));
        assert_eq!(refused(two), "Data contained more than a single OCSP response");
        assert_eq!(refused(b"-----BEGIN".to_vec()), "OCSP Response is not a well-formed ASN.1 SEQUENCE");
        let good = response(0, &[&[7]], now, None);
        assert!(refused(good[..good.len() - 3].to_vec()).starts_with("OCSP "), "truncated");
    }

    #[test]
    fn each_policy_decides_as_envoys() {
        use OcspStaplePolicy::*;
        let der = response(0, &[&[7]], "20261201000000Z", Some("20261208000000Z"));
        let response = OcspResponse::parse(der).unwrap();
        let key = || Arc::new(CertifiedKey::new(vec![], test_key()));
        let staple =
            |with: bool, must_staple: bool| Staple { stapled: with.then(|| (key(), response.clone())), must_staple };
        let (current, expired) = (1_796_083_200, 1_796_700_000);
        let decide = |s: &Staple, p, now| s.decide(p, true, now);
        for policy in [Lenient, Strict, MustStaple] {
            assert_eq!(staple(true, false).decide(policy, false, expired), Stapling::NotAsked);
            assert_eq!(decide(&staple(true, false), policy, current), Stapling::Stapled);
        }
        assert_eq!(decide(&staple(true, false), Lenient, expired), Stapling::Omitted);
        assert_eq!(decide(&staple(true, false), Strict, expired), Stapling::Refused);
        assert_eq!(decide(&staple(true, false), MustStaple, expired), Stapling::Refused);
        assert_eq!(decide(&staple(false, false), Lenient, current), Stapling::Omitted);
        assert_eq!(decide(&staple(false, false), Strict, current), Stapling::Omitted);
        assert_eq!(decide(&staple(false, false), MustStaple, current), Stapling::Refused);
        // A must-staple certificate is held to MUST_STAPLE whatever the policy.
        assert_eq!(decide(&staple(true, true), Lenient, expired), Stapling::Refused);
    }

    use std::sync::Arc;

    fn test_key() -> Arc<dyn rustls::sign::SigningKey> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        crate::tls::pem::provider().key_provider.load_private_key(der).unwrap()
    }
}
