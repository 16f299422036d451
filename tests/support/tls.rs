//! Certificates made on the spot for the startup tests: valid, expired,
//! and keys that do not match.

use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509, X509NameBuilder};

/// A self-signed certificate for `127.0.0.1` and its key, as PEM files.
pub struct CertificateFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// A self-signed certificate valid from `from_days` to `until_days`
/// (relative to now; negative is the past), written into `dir` as
/// `<name>.pem` and `<name>-key.pem`.
pub fn self_signed(dir: &Path, name: &str, from_days: i64, until_days: i64) -> CertificateFiles {
    let key = new_key();
    let mut subject = X509NameBuilder::new().expect("name");
    subject.append_entry_by_text("CN", name).expect("common name");
    let subject = subject.build();
    let mut builder = X509::builder().expect("builder");
    builder.set_version(2).expect("version");
    let mut serial = BigNum::new().expect("serial");
    serial.rand(64, MsbOption::MAYBE_ZERO, false).expect("random serial");
    builder
        .set_serial_number(&serial.to_asn1_integer().expect("serial"))
        .expect("serial");
    builder.set_subject_name(&subject).expect("subject");
    builder.set_issuer_name(&subject).expect("issuer");
    builder.set_pubkey(&key).expect("public key");
    builder.set_not_before(&days_from_now(from_days)).expect("not before");
    builder.set_not_after(&days_from_now(until_days)).expect("not after");
    let names = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&builder.x509v3_context(None, None))
        .expect("subject alternative name");
    builder.append_extension(names).expect("extension");
    builder.sign(&key, MessageDigest::sha256()).expect("sign");
    let files = CertificateFiles {
        certificate: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&files.certificate, builder.build().to_pem().expect("PEM")).expect("write certificate");
    std::fs::write(&files.key, key.private_key_to_pem_pkcs8().expect("PEM")).expect("write key");
    files
}

fn new_key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).expect("RSA key")).expect("key")
}

fn days_from_now(days: i64) -> Asn1Time {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    Asn1Time::from_unix(now + days * 86_400).expect("time")
}
