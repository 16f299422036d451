//! The files a client's TLS and SASL settings name, checked before any
//! connection: a missing or expired certificate must stop the stage with a
//! message that says what to fix, not surface as a loop of failed
//! handshakes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// Why the client's credentials cannot work. Each message names the
/// property and the file.
#[derive(Debug, thiserror::Error)]
pub enum ClientFileError {
    #[error("{property} = {path}: no such file")]
    Missing { property: String, path: PathBuf },
    #[error("{property} = {path}: cannot be read: {source}")]
    Unreadable {
        property: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{property} ({origin}): not a PEM {what}: {reason}")]
    NotPem {
        property: String,
        origin: String,
        what: &'static str,
        reason: String,
    },
    #[error("{property} ({origin}): the certificate `{subject}` expired on {not_after}; renew it")]
    Expired {
        property: String,
        origin: String,
        subject: String,
        not_after: String,
    },
    #[error("{property} ({origin}): the certificate `{subject}` is not valid before {not_before}")]
    NotYetValid {
        property: String,
        origin: String,
        subject: String,
        not_before: String,
    },
    #[error(
        "the private key (ssl.key.location / ssl.key.pem) does not belong to the certificate \
         (ssl.certificate.location / ssl.certificate.pem); they must be a pair"
    )]
    KeyMismatch,
}

/// Properties that name files which must exist and be readable.
const PLAIN_FILES: [&str; 4] = [
    "ssl.keystore.location",
    "ssl.crl.location",
    "sasl.kerberos.keytab",
    "ssl.engine.location",
];

/// Check every TLS and SASL file `properties` name. Returns warnings
/// (certificates expiring within `warn_days`) on success.
pub fn check_client_files(
    properties: &BTreeMap<String, String>,
    warn_days: u32,
) -> Result<Vec<String>, ClientFileError> {
    let mut warnings = Vec::new();
    for property in PLAIN_FILES {
        if let Some(path) = properties.get(property) {
            read_file(property, path)?;
        }
    }

    // The CA may be a file, a directory of hashed certificates, or
    // "probe" (the system's store): only a file can be checked here.
    if let Some(location) = properties.get("ssl.ca.location")
        && location != "probe"
        && !Path::new(location).is_dir()
    {
        let pem = read_file("ssl.ca.location", location)?;
        let certificates =
            X509::stack_from_pem(&pem).map_err(|error| not_pem("ssl.ca.location", location, "certificate", error))?;
        if certificates.is_empty() {
            return Err(not_pem(
                "ssl.ca.location",
                location,
                "certificate",
                "no certificate in it",
            ));
        }
        for certificate in &certificates {
            check_validity("ssl.ca.location", location, certificate, warn_days, &mut warnings)?;
        }
    }

    let certificate = match pem_source(properties, "ssl.certificate.location", "ssl.certificate.pem")? {
        Some((property, origin, pem)) => {
            let certificate = X509::from_pem(&pem).map_err(|error| not_pem(property, &origin, "certificate", error))?;
            check_validity(property, &origin, &certificate, warn_days, &mut warnings)?;
            Some(certificate)
        }
        None => None,
    };
    let key = match pem_source(properties, "ssl.key.location", "ssl.key.pem")? {
        Some((property, origin, pem)) => Some(read_key(property, &origin, &pem, properties.get("ssl.key.password"))?),
        None => None,
    };
    if let (Some(certificate), Some(key)) = (certificate, key) {
        let matches = certificate
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(ClientFileError::KeyMismatch);
        }
    }
    Ok(warnings)
}

/// PEM text and where it came from: the property used and its origin (a
/// path, or "inline") for messages.
type PemSource<'a> = (&'a str, String, Vec<u8>);

/// PEM text from the file property, else the inline one.
fn pem_source<'a>(
    properties: &BTreeMap<String, String>,
    file_property: &'a str,
    inline_property: &'a str,
) -> Result<Option<PemSource<'a>>, ClientFileError> {
    if let Some(path) = properties.get(file_property) {
        return Ok(Some((file_property, path.clone(), read_file(file_property, path)?)));
    }
    Ok(properties
        .get(inline_property)
        .map(|pem| (inline_property, "inline".to_owned(), pem.as_bytes().to_vec())))
}

fn read_key(
    property: &str,
    origin: &str,
    pem: &[u8],
    password: Option<&String>,
) -> Result<PKey<Private>, ClientFileError> {
    let key = match password {
        Some(password) => PKey::private_key_from_pem_passphrase(pem, password.as_bytes()),
        None => PKey::private_key_from_pem(pem),
    };
    key.map_err(|error| {
        let what = if password.is_some() {
            "private key (or ssl.key.password is wrong)"
        } else {
            "private key (if it is encrypted, set ssl.key.password)"
        };
        not_pem(property, origin, what, error)
    })
}

fn check_validity(
    property: &str,
    origin: &str,
    certificate: &X509,
    warn_days: u32,
    warnings: &mut Vec<String>,
) -> Result<(), ClientFileError> {
    let now = Asn1Time::days_from_now(0).expect("the current time is representable");
    let subject = subject_of(certificate);
    if certificate.not_after() < now {
        return Err(ClientFileError::Expired {
            property: property.to_owned(),
            origin: origin.to_owned(),
            subject,
            not_after: certificate.not_after().to_string(),
        });
    }
    if certificate.not_before() > now {
        return Err(ClientFileError::NotYetValid {
            property: property.to_owned(),
            origin: origin.to_owned(),
            subject,
            not_before: certificate.not_before().to_string(),
        });
    }
    if let Ok(left) = now.diff(certificate.not_after())
        && left.days < warn_days as i32
    {
        warnings.push(format!(
            "{property} ({origin}): the certificate `{subject}` expires in {} days, on {}",
            left.days,
            certificate.not_after()
        ));
    }
    Ok(())
}

fn subject_of(certificate: &X509) -> String {
    certificate
        .subject_name()
        .entries()
        .filter_map(|entry| entry.data().to_string().ok())
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_file(property: &str, path: &str) -> Result<Vec<u8>, ClientFileError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ClientFileError::Missing {
                property: property.to_owned(),
                path: path.into(),
            }
        } else {
            ClientFileError::Unreadable {
                property: property.to_owned(),
                path: path.into(),
                source,
            }
        }
    })
}

fn not_pem(property: &str, origin: &str, what: &'static str, reason: impl std::fmt::Display) -> ClientFileError {
    ClientFileError::NotPem {
        property: property.to_owned(),
        origin: origin.to_owned(),
        what,
        reason: reason.to_string(),
    }
}
