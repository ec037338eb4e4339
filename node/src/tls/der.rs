//! Just enough DER to read what the node checks in a leaf certificate before serving it: the
//! validity period and the names of the subjectAltName extension. Signatures and chains are
//! the client's business; rustls parses the rest.
//!
//! Every length is checked against the bytes at hand and every sub-structure must be consumed
//! exactly, so malformed or truncated input ends in a [`DerError`], never in a panic.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const SEQUENCE: u8 = 0x30;
/// `[0] EXPLICIT Version` of the TBSCertificate.
const VERSION: u8 = 0xa0;
/// `[1] IMPLICIT issuerUniqueID` and `[2] IMPLICIT subjectUniqueID` (primitive BIT STRINGs).
const ISSUER_UID: u8 = 0x81;
const SUBJECT_UID: u8 = 0x82;
/// `[3] EXPLICIT Extensions`.
const EXTENSIONS: u8 = 0xa3;
/// GeneralName `[2] IMPLICIT IA5String` and `[7] IMPLICIT OCTET STRING`.
const DNS_NAME: u8 = 0x82;
const IP_ADDRESS: u8 = 0x87;
/// 2.5.29.17, id-ce-subjectAltName, as encoded contents of an OBJECT IDENTIFIER.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// Why a certificate could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DerError(&'static str);

impl fmt::Display for DerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DerError {}

/// What the node needs to know about a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeafCertificate {
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
    /// dNSName entries of subjectAltName, lower-cased, as written (`*.example.com` included).
    pub(crate) dns_names: Vec<String>,
    /// iPAddress entries of subjectAltName.
    pub(crate) ip_addresses: Vec<IpAddr>,
}

/// Reads the validity and subjectAltName of a DER-encoded X.509 certificate.
pub(crate) fn parse_leaf(der: &[u8]) -> Result<LeafCertificate, DerError> {
    let mut outer = Reader::new(der);
    let certificate = outer.expect(SEQUENCE, "not a certificate: expected a SEQUENCE")?;
    outer.finish("trailing bytes after the certificate")?;

    let mut certificate = Reader::new(certificate);
    let tbs = certificate.expect(SEQUENCE, "tbsCertificate is missing")?;
    certificate.expect(SEQUENCE, "signatureAlgorithm is missing")?;
    certificate.expect(BIT_STRING, "signature is missing")?;
    certificate.finish("trailing bytes after the signature")?;

    let mut tbs = Reader::new(tbs);
    tbs.optional(VERSION)?;
    tbs.expect(INTEGER, "serialNumber is missing")?;
    tbs.expect(SEQUENCE, "signature algorithm is missing")?;
    tbs.expect(SEQUENCE, "issuer is missing")?;
    let mut validity = Reader::new(tbs.expect(SEQUENCE, "validity is missing")?);
    let not_before = read_time(&mut validity)?;
    let not_after = read_time(&mut validity)?;
    validity.finish("trailing bytes in validity")?;
    tbs.expect(SEQUENCE, "subject is missing")?;
    tbs.expect(SEQUENCE, "subjectPublicKeyInfo is missing")?;
    tbs.optional(ISSUER_UID)?;
    tbs.optional(SUBJECT_UID)?;

    let mut leaf = LeafCertificate {
        not_before,
        not_after,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
    };
    if let Some(explicit) = tbs.optional(EXTENSIONS)? {
        let mut explicit = Reader::new(explicit);
        let extensions = explicit.expect(SEQUENCE, "extensions are not a SEQUENCE")?;
        explicit.finish("trailing bytes after the extensions")?;
        read_extensions(extensions, &mut leaf)?;
    }
    tbs.finish("unexpected fields after the extensions")?;
    Ok(leaf)
}

fn read_extensions(extensions: &[u8], leaf: &mut LeafCertificate) -> Result<(), DerError> {
    let mut extensions = Reader::new(extensions);
    let mut seen_san = false;
    while !extensions.is_empty() {
        let mut extension = Reader::new(extensions.expect(SEQUENCE, "malformed extension")?);
        let oid = extension.expect(OID, "extension without an identifier")?;
        extension.optional(BOOLEAN)?;
        let value = extension.expect(OCTET_STRING, "extension without a value")?;
        extension.finish("trailing bytes in an extension")?;
        if oid == SUBJECT_ALT_NAME {
            if seen_san {
                return Err(DerError("subjectAltName appears twice"));
            }
            seen_san = true;
            read_subject_alt_name(value, leaf)?;
        }
    }
    Ok(())
}

fn read_subject_alt_name(value: &[u8], leaf: &mut LeafCertificate) -> Result<(), DerError> {
    let mut value = Reader::new(value);
    let mut names = Reader::new(value.expect(SEQUENCE, "subjectAltName is not a SEQUENCE")?);
    value.finish("trailing bytes after subjectAltName")?;
    while !names.is_empty() {
        let (tag, content) = names.any()?;
        match tag {
            DNS_NAME => {
                if !content.is_ascii() {
                    return Err(DerError("a dNSName is not ASCII"));
                }
                let name =
                    std::str::from_utf8(content).map_err(|_| DerError("a dNSName is not ASCII"))?;
                if !name.is_empty() {
                    leaf.dns_names.push(name.to_ascii_lowercase());
                }
            }
            IP_ADDRESS => {
                let ip = if let Ok(v4) = <[u8; 4]>::try_from(content) {
                    IpAddr::V4(Ipv4Addr::from(v4))
                } else if let Ok(v6) = <[u8; 16]>::try_from(content) {
                    IpAddr::V6(Ipv6Addr::from(v6))
                } else {
                    return Err(DerError("an iPAddress is neither 4 nor 16 bytes"));
                };
                leaf.ip_addresses.push(ip);
            }
            // e-mail, URI, directory and other names say nothing about hosts.
            _ => {}
        }
    }
    Ok(())
}

/// `Time ::= CHOICE { utcTime UTCTime, generalTime GeneralizedTime }`, in the DER forms
/// `YYMMDDHHMMSSZ` and `YYYYMMDDHHMMSSZ`.
fn read_time(reader: &mut Reader<'_>) -> Result<SystemTime, DerError> {
    let (tag, content) = reader.any()?;
    let (year, rest) = match tag {
        UTC_TIME => {
            let (yy, rest) = content
                .split_at_checked(2)
                .ok_or(DerError("UTCTime is too short"))?;
            let yy = digits(yy)?;
            // RFC 5280: 50..99 are 1950..1999, 00..49 are 2000..2049.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, rest)
        }
        GENERALIZED_TIME => {
            let (yyyy, rest) = content
                .split_at_checked(4)
                .ok_or(DerError("GeneralizedTime is too short"))?;
            (digits(yyyy)?, rest)
        }
        _ => return Err(DerError("validity holds something other than a time")),
    };
    let [m0, m1, d0, d1, h0, h1, n0, n1, s0, s1, b'Z'] = rest else {
        return Err(DerError("a time is not of the form YYMMDDHHMMSSZ"));
    };
    let month = digits(&[*m0, *m1])?;
    let day = digits(&[*d0, *d1])?;
    let hour = digits(&[*h0, *h1])?;
    let minute = digits(&[*n0, *n1])?;
    let second = digits(&[*s0, *s1])?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(DerError("a time is out of range"));
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    from_unix_seconds(seconds).ok_or(DerError("a time is out of range"))
}

fn digits(bytes: &[u8]) -> Result<i64, DerError> {
    bytes.iter().try_fold(0i64, |value, &b| {
        if b.is_ascii_digit() {
            Ok(value * 10 + i64::from(b - b'0'))
        } else {
            Err(DerError("a time holds a non-digit"))
        }
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn from_unix_seconds(seconds: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

/// Seconds since the Unix epoch, negative before it (saturating far out of range).
pub(crate) fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// `2030-03-04 05:06:07 UTC`: how dates appear in messages.
pub(crate) fn format_utc(time: SystemTime) -> String {
    let seconds = unix_seconds(time);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// A cursor over DER TLVs.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn finish(&self, problem: &'static str) -> Result<(), DerError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DerError(problem))
        }
    }

    /// The next tag and its contents.
    fn any(&mut self) -> Result<(u8, &'a [u8]), DerError> {
        let truncated = DerError("truncated certificate");
        let (&tag, rest) = self.rest.split_first().ok_or(truncated)?;
        if tag & 0x1f == 0x1f {
            return Err(DerError("a multi-byte tag (not used in certificates)"));
        }
        let (&first, rest) = rest.split_first().ok_or(truncated)?;
        let (length, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return Err(DerError("an unsupported length encoding"));
            }
            let (bytes, rest) = rest.split_at_checked(count).ok_or(truncated)?;
            let length = bytes
                .iter()
                .try_fold(0usize, |n, &b| {
                    n.checked_mul(256)?.checked_add(usize::from(b))
                })
                .ok_or(DerError("a length does not fit in memory"))?;
            (length, rest)
        };
        let (content, rest) = rest.split_at_checked(length).ok_or(truncated)?;
        self.rest = rest;
        Ok((tag, content))
    }

    fn expect(&mut self, tag: u8, problem: &'static str) -> Result<&'a [u8], DerError> {
        match self.rest.first() {
            Some(&found) if found == tag => self.any().map(|(_, content)| content),
            Some(_) => Err(DerError(problem)),
            None => Err(DerError("truncated certificate")),
        }
    }

    fn optional(&mut self, tag: u8) -> Result<Option<&'a [u8]>, DerError> {
        match self.rest.first() {
            Some(&found) if found == tag => self.any().map(|(_, content)| Some(content)),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{date_time_ymd, CertificateParams, KeyPair};

    fn certificate(names: &[&str], from: (i32, u8, u8), until: (i32, u8, u8)) -> Vec<u8> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.not_before = date_time_ymd(from.0, from.1, from.2);
        params.not_after = date_time_ymd(until.0, until.1, until.2);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn at(year: i64, month: i64, day: i64) -> SystemTime {
        from_unix_seconds(days_from_civil(year, month, day) * 86_400).unwrap()
    }

    #[test]
    fn names_and_validity_are_read_from_an_rcgen_certificate() {
        let der = certificate(
            &["a.test", "*.Wild.Test", "192.0.2.7", "2001:db8::1"],
            (2020, 1, 2),
            (2030, 3, 4),
        );
        let leaf = parse_leaf(&der).unwrap();
        assert_eq!(leaf.dns_names, vec!["a.test", "*.wild.test"]);
        assert_eq!(
            leaf.ip_addresses,
            vec![
                "192.0.2.7".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse::<IpAddr>().unwrap()
            ]
        );
        assert_eq!(leaf.not_before, at(2020, 1, 2));
        assert_eq!(leaf.not_after, at(2030, 3, 4));
    }

    #[test]
    fn generalized_time_and_dates_before_1970_are_read() {
        // rcgen writes UTCTime for 1950..2049 and GeneralizedTime outside.
        let der = certificate(&["old.test"], (1960, 2, 29), (2060, 12, 31));
        let leaf = parse_leaf(&der).unwrap();
        assert_eq!(leaf.not_before, at(1960, 2, 29));
        assert!(leaf.not_before < UNIX_EPOCH);
        assert_eq!(leaf.not_after, at(2060, 12, 31));
    }

    #[test]
    fn a_certificate_without_subject_alt_name_has_no_names() {
        let key = KeyPair::generate().unwrap();
        let der = CertificateParams::default().self_signed(&key).unwrap();
        let leaf = parse_leaf(der.der()).unwrap();
        assert!(leaf.dns_names.is_empty() && leaf.ip_addresses.is_empty());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let der = certificate(&["a.test", "10.0.0.1"], (2020, 1, 1), (2030, 1, 1));
        for len in 0..der.len() {
            assert!(parse_leaf(&der[..len]).is_err(), "truncated at {len}");
        }
        let mut longer = der.clone();
        longer.push(0);
        assert!(parse_leaf(&longer).is_err(), "a trailing byte");
    }

    #[test]
    fn flipped_bytes_and_noise_never_panic() {
        let der = certificate(&["a.test", "*.b.test", "::1"], (2020, 1, 1), (2060, 1, 1));
        for i in 0..der.len() {
            for mask in [0x01u8, 0x02, 0x10, 0x80, 0xff] {
                let mut bad = der.clone();
                bad[i] ^= mask;
                let _ = parse_leaf(&bad);
            }
        }
        // Noise from a fixed LCG, also behind a valid outer header.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for round in 0..2000 {
            let len = round % 300;
            let noise: Vec<u8> = (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (state >> 56) as u8
                })
                .collect();
            let _ = parse_leaf(&noise);
            let mut framed = vec![0x30, 0x82, (len >> 8) as u8, len as u8];
            framed.extend_from_slice(&noise);
            let _ = parse_leaf(&framed);
        }
        assert!(parse_leaf(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(
            parse_leaf(&[0x30, 0x80, 0x00, 0x00]).is_err(),
            "indefinite length"
        );
    }

    #[test]
    fn malformed_times_are_refused() {
        for (tag, text) in [
            (UTC_TIME, &b"300230000000Z"[..]), // 30 February
            (UTC_TIME, b"301301000000Z"),      // month 13
            (UTC_TIME, b"3001010000Z"),        // no seconds
            (UTC_TIME, b"300101000000+0100"),  // offset instead of Z
            (GENERALIZED_TIME, b"20300101000000.5Z"),
            (GENERALIZED_TIME, b"2O300101000000Z"),
            (UTC_TIME, b"300101240000Z"),
        ] {
            let mut tlv = vec![tag, text.len() as u8];
            tlv.extend_from_slice(text);
            assert!(
                read_time(&mut Reader::new(&tlv)).is_err(),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        let leap = b"20000229235959Z";
        let mut tlv = vec![GENERALIZED_TIME, leap.len() as u8];
        tlv.extend_from_slice(leap);
        assert_eq!(
            read_time(&mut Reader::new(&tlv)).unwrap(),
            at(2000, 2, 29) + Duration::from_secs(86_399)
        );
    }

    #[test]
    fn dates_are_formatted_in_utc() {
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            format_utc(at(2030, 3, 4) + Duration::from_secs(5 * 3600 + 6 * 60 + 7)),
            "2030-03-04 05:06:07 UTC"
        );
        assert_eq!(format_utc(at(1960, 2, 29)), "1960-02-29 00:00:00 UTC");
        for days in [-800_000, -1, 0, 59, 11_016, 1_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
