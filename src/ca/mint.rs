//! What the CA's certificates say, as pure functions of the names and the time: the root, and
//! the leaves it signs (DESIGN.md "The local CA").

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, KeyUsagePurpose, NameConstraints, SanType, SerialNumber,
};
use time::OffsetDateTime;

/// The root's subject. Fixed, so a person can find the CA in a trust store by name.
pub const CA_NAME: &str = "credproxy local CA";
/// The root is valid this long.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// A leaf is valid this long in all, starting [`BACKDATE`] before it was made (a client whose
/// clock runs a little behind still accepts it).
pub const LEAF_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
pub const BACKDATE: Duration = Duration::from_secs(3600);
/// A leaf is re-minted once less than this is left of it.
pub const RENEW_BEFORE: Duration = Duration::from_secs(10 * 24 * 3600);

/// A random 128-bit serial (RFC 5280 §4.1.2.2: positive, at most 20 octets; rcgen adds the
/// leading zero octet a high first bit needs).
fn serial() -> SerialNumber {
    SerialNumber::from_slice(&rand::random::<[u8; 16]>())
}

/// The root: a CA that may sign only leaves (path length 0), for ten years; with `constrain_to`,
/// X.509 name constraints permitting only those DNS subtrees and IP addresses. IP addresses are
/// always constrained (to the listed ones, or excluded entirely): constraints on DNS names alone
/// would leave a certificate for any IP address valid.
pub fn root(now: OffsetDateTime, constrain_to: Option<&[String]>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.distinguished_name
        .push(DnType::OrganizationName, "credproxy");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now - BACKDATE;
    p.not_after = now + ROOT_LIFETIME;
    p.serial_number = Some(serial());
    p.name_constraints = constrain_to.map(name_constraints);
    p
}

fn name_constraints(names: &[String]) -> NameConstraints {
    let mut permitted = Vec::new();
    let mut ips = false;
    for name in names {
        match ip_of(name) {
            Some(ip) => {
                ips = true;
                permitted.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
                    ip,
                    if ip.is_ipv4() { 32 } else { 128 },
                )));
            }
            None => permitted.push(GeneralSubtree::DnsName(name.clone())),
        }
    }
    let excluded = if ips {
        Vec::new()
    } else {
        vec![
            GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
            GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
        ]
    };
    NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: excluded,
    }
}

/// `name` as an IP address (`[::1]` with or without brackets), when it is one.
pub fn ip_of(name: &str) -> Option<IpAddr> {
    name.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// A server certificate for `name` (a DNS name or an IP address), valid [`LEAF_LIFETIME`] from
/// [`BACKDATE`] ago. `None` when `name` can't be a certificate's subject name.
pub fn leaf(name: &str, now: OffsetDateTime) -> Option<CertificateParams> {
    let mut p = CertificateParams::default();
    let san = match ip_of(name) {
        Some(ip) => SanType::IpAddress(ip),
        None => SanType::DnsName(name.to_owned().try_into().ok()?),
    };
    p.subject_alt_names = vec![san];
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    // Not a CA, said explicitly, with a SubjectKeyIdentifier; its AuthorityKeyIdentifier is the
    // issuer's SubjectKeyIdentifier (rcgen takes it from the CA certificate read back).
    p.is_ca = IsCa::ExplicitNoCa;
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = now - BACKDATE;
    p.not_after = p.not_before + LEAF_LIFETIME;
    p.serial_number = Some(serial());
    Some(p)
}

/// Whether a leaf valid until `not_after` is to be re-minted at `now`.
pub fn needs_renewal(not_after: OffsetDateTime, now: OffsetDateTime) -> bool {
    not_after - now < RENEW_BEFORE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_backdated_and_at_most_thirty_days() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let p = leaf("api.example.com", now).unwrap();
        assert_eq!(now - p.not_before, BACKDATE);
        assert_eq!(p.not_after - p.not_before, LEAF_LIFETIME);
        assert!(LEAF_LIFETIME <= Duration::from_secs(30 * 24 * 3600));
        assert!(!needs_renewal(p.not_after, now));
        assert!(needs_renewal(
            p.not_after,
            now + Duration::from_secs(21 * 24 * 3600)
        ));
    }

    #[test]
    fn serials_are_random_and_128_bits() {
        let now = OffsetDateTime::now_utc();
        let a = leaf("a.test", now).unwrap().serial_number.unwrap();
        let b = leaf("a.test", now).unwrap().serial_number.unwrap();
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }

    #[test]
    fn constraints_always_cover_ip_addresses() {
        let dns_only = name_constraints(&["api.example.com".into()]);
        assert_eq!(dns_only.excluded_subtrees.len(), 2, "every IP excluded");
        let with_ip = name_constraints(&["api.example.com".into(), "127.0.0.1".into()]);
        assert!(with_ip.excluded_subtrees.is_empty());
        assert!(
            with_ip
                .permitted_subtrees
                .contains(&GeneralSubtree::IpAddress(CidrSubnet::V4(
                    [127, 0, 0, 1],
                    [255; 4]
                )))
        );
    }

    #[test]
    fn a_name_that_cannot_be_in_a_certificate_gets_none() {
        let now = OffsetDateTime::now_utc();
        assert!(leaf("b\u{e4}d.test", now).is_none());
        assert!(leaf("[::1]", now).is_some());
    }
}
