//! A throwaway PKI for a topology: one CA, server leaves (SANs, server+client auth) and client certificates
//! whose subject nats-server can map to a user (`verify_and_map`).

use std::fmt;
use std::net::IpAddr;

use super::entropy::Entropy;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// What went wrong, and for which certificate (`what` is e.g. `server certificate "hub"`).
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating the key pair for the {what}: {source}")]
    KeyGen {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("DNS name {name:?} in the {what} is not valid: {source}")]
    DnsName {
        what: String,
        name: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("signing the {what}: {source}")]
    Sign {
        what: String,
        #[source]
        source: rcgen::Error,
    },
}

/// A PEM certificate and its PKCS#8 PEM private key.
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed certificate authority that can issue leaves.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub key_pem: String,
}

// Keys stay out of Debug output so a failing assertion never prints one into a CI log.
impl fmt::Debug for CertPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertPair")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

const ORG: &str = "natslab";

impl Ca {
    /// A self-signed CA (basic constraints CA, key usage cert sign), CN = `common_name`, O = "natslab".
    pub fn generate(common_name: &str) -> Result<Ca, PkiError> {
        Ca::generate_with(common_name, &mut Entropy::random())
    }

    /// As `generate`, drawing keys and serials from `entropy` (seeded: reproducible).
    pub fn generate_with(common_name: &str, entropy: &mut Entropy) -> Result<Ca, PkiError> {
        let what = format!("CA certificate {common_name:?}");
        let key = new_key(&what, entropy)?;
        let mut params = CertificateParams::default();
        params.serial_number = Some(serial(entropy));
        params.distinguished_name = subject(common_name, Some(ORG));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Sign { what, source })?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A leaf certificate for a server: SANs = the given DNS names and IPs; EKU server AND client auth
    /// (nats-server uses the same cert to dial routes and leaf remotes). CN = cn.
    pub fn issue_server(&self, cn: &str, dns: &[String], ips: &[IpAddr]) -> Result<CertPair, PkiError> {
        self.issue_server_with(cn, dns, ips, &mut Entropy::random())
    }

    pub fn issue_server_with(&self, cn: &str, dns: &[String], ips: &[IpAddr], entropy: &mut Entropy) -> Result<CertPair, PkiError> {
        let what = format!("server certificate {cn:?}");
        let mut params = leaf_params(subject(cn, None));
        params.subject_alt_names = sans(&what, dns, ips)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(&what, params, entropy)
    }

    /// A client certificate (EKU client auth) whose subject is CN=`cn` and, if given, O=`org`.
    pub fn issue_client(&self, cn: &str, org: Option<&str>) -> Result<CertPair, PkiError> {
        self.issue_client_with(cn, org, &mut Entropy::random())
    }

    pub fn issue_client_with(&self, cn: &str, org: Option<&str>, entropy: &mut Entropy) -> Result<CertPair, PkiError> {
        let what = format!("client certificate {cn:?}");
        let mut params = leaf_params(subject(cn, org));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(&what, params, entropy)
    }

    fn sign(&self, what: &str, mut params: CertificateParams, entropy: &mut Entropy) -> Result<CertPair, PkiError> {
        let key = new_key(what, entropy)?;
        params.serial_number = Some(serial(entropy));
        let params = &params;
        let cert = params.signed_by(&key, &self.issuer).map_err(|source| PkiError::Sign {
            what: what.to_owned(),
            source,
        })?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The exact string nats-server compares with a user name when `verify_and_map: true` is set on the
/// leafnodes (or client) TLS block, for a client cert made by `issue_client(cn, org)`.
///
/// This is Go's `pkix.Name.String()` of the subject: RFC 4514, CN first, values escaped. Checked against
/// nats-server 2.15.1: it parses the user as a DN and compares RDN sets, so "O=..,CN=.." and either RDN
/// order inside the certificate map too, but a user naming only the CN does not match a cert that has an O.
pub fn mapped_identity(cn: &str, org: Option<&str>) -> String {
    match org {
        Some(org) => format!("CN={},O={}", rfc4514_escape(cn), rfc4514_escape(org)),
        None => format!("CN={}", rfc4514_escape(cn)),
    }
}

/// RFC 4514 value escaping as Go applies it, so a CN with a comma still maps to the right user.
fn rfc4514_escape(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, ' ' | '#'))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Subject with O before CN, the conventional X.509 order (least specific first), as `openssl x509 -subject`
/// shows for certificates made by hand (`O = CIM, CN = leaf`).
fn subject(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

fn leaf_params(dn: DistinguishedName) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Lets verifiers pick the right CA when several are trusted (foreign-CA tests load two).
    params.use_authority_key_identifier_extension = true;
    params
}

fn sans(what: &str, dns: &[String], ips: &[IpAddr]) -> Result<Vec<SanType>, PkiError> {
    let mut out = Vec::with_capacity(dns.len() + ips.len());
    for name in dns {
        let ia5 = name.as_str().try_into().map_err(|source| PkiError::DnsName {
            what: what.to_owned(),
            name: name.clone(),
            source,
        })?;
        out.push(SanType::DnsName(ia5));
    }
    out.extend(ips.iter().copied().map(SanType::IpAddress));
    Ok(out)
}

/// An Ed25519 key from 32 bytes of `entropy`: signatures are deterministic, so a seeded render yields the
/// same certificates byte for byte (rcgen's validity window is fixed, the serial comes from `entropy`).
fn new_key(what: &str, entropy: &mut Entropy) -> Result<KeyPair, PkiError> {
    // PKCS#8 v1 wrapping of a raw Ed25519 seed (RFC 8410).
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend_from_slice(&entropy.bytes32());
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(der);
    KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519).map_err(|source| PkiError::KeyGen {
        what: what.to_owned(),
        source,
    })
}

fn serial(entropy: &mut Entropy) -> rcgen::SerialNumber {
    let mut b = entropy.bytes16();
    b[0] &= 0x7f; // positive, as RFC 5280 wants
    rcgen::SerialNumber::from_slice(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_and_leaves_are_pem() {
        let ca = Ca::generate("natslab test CA").expect("CA");
        assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca.key_pem.contains("PRIVATE KEY"));
        let server = ca
            .issue_server("hub", &["localhost".into()], &["127.0.0.1".parse().expect("ip")])
            .expect("server cert");
        assert!(server.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let client = ca.issue_client("leaf", Some("CIM")).expect("client cert");
        assert_ne!(client.key_pem, server.key_pem);
        assert!(
            !format!("{client:?}").contains(&client.key_pem),
            "Debug must not print the key"
        );
    }

    #[test]
    fn bad_dns_name_is_an_error_with_context() {
        let ca = Ca::generate("natslab test CA").expect("CA");
        let err = ca
            .issue_server("hub", &["bad\u{e9}name".into()], &[])
            .expect_err("non-IA5 name rejected");
        assert!(err.to_string().contains("server certificate \"hub\""), "{err}");
    }

    #[test]
    fn mapped_identity_format() {
        assert_eq!(
            mapped_identity("leaf.cim.local", Some("CIM")),
            "CN=leaf.cim.local,O=CIM"
        );
        assert_eq!(mapped_identity("leaf", None), "CN=leaf");
        assert_eq!(mapped_identity("a,b", Some("O+")), "CN=a\\,b,O=O\\+");
    }
}
