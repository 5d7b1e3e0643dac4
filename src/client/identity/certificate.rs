//! A client certificate, read once: the RSA private key that signs client assertions
//! and the facts about its certificate that Entra ID and `doctor` care about (SHA-256
//! thumbprint, subject, validity). Reads a PEM file (key and certificate, in any order,
//! as `az ad sp create-for-rbac --create-cert` writes it) or a PKCS#12 (.pfx/.p12)
//! file with its password.
//!
//! Invariant: the key never leaves this module. `Debug` shows the thumbprint and the
//! subject only, errors name the file and what is wrong with it, never its contents.

use super::jwt::{base64url, base64url_json};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    // The cause is in the message, not also a `source()` (a chain would show it twice).
    #[error("{path}: cannot read the certificate file: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The signing half of a certificate credential.
pub struct ClientCertificate {
    key: RsaKeyPair,
    /// base64url(SHA-256(certificate DER)): the `x5t#S256` header Entra ID looks the
    /// registered certificate up by.
    x5t_s256: String,
    /// SHA-1 hex, uppercase: the "thumbprint" the Azure portal shows.
    pub thumbprint: String,
    pub subject: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub path: PathBuf,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("thumbprint", &self.thumbprint)
            .field("subject", &self.subject)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    /// Reads `path`: PEM when it holds PEM blocks, else PKCS#12 opened with `password`
    /// (an empty one when `None`, as unprotected .pfx files are).
    pub fn load(
        path: &Path,
        password: Option<&str>,
    ) -> Result<ClientCertificate, CertificateError> {
        let label = path.display().to_string();
        let invalid = |message: String| CertificateError::Invalid {
            path: label.clone(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|error| CertificateError::Read {
            path: label.clone(),
            error,
        })?;
        let (key_der, cert_der) = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            read_pem(&bytes).map_err(invalid)?
        } else {
            read_pkcs12(&bytes, password.unwrap_or("")).map_err(invalid)?
        };
        let key = match key_der {
            KeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(&der),
            KeyDer::Pkcs1(der) => RsaKeyPair::from_der(&der),
        }
        .map_err(|e| invalid(format!("the private key is not a usable RSA key ({e}); Entra ID certificate credentials are RSA, 2048 bits or more")))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|_| invalid("the certificate is not valid X.509 DER".into()))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public().as_ref() {
            return Err(invalid(
                "the private key does not belong to the certificate (their public keys differ)"
                    .into(),
            ));
        }
        let sha256 = ring::digest::digest(&ring::digest::SHA256, &cert_der);
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert_der);
        Ok(ClientCertificate {
            key,
            x5t_s256: base64url(sha256.as_ref()),
            thumbprint: sha1.as_ref().iter().map(|b| format!("{b:02X}")).collect(),
            subject: cert.subject().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            path: path.to_path_buf(),
        })
    }

    /// The signed JWT Entra ID takes instead of a secret: `aud` is the token endpoint,
    /// `iss` and `sub` the client id, valid for 10 minutes from `now` (Unix seconds).
    pub fn client_assertion(&self, client_id: &str, token_url: &str, now: i64) -> String {
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5t#S256": self.x5t_s256 });
        let claims = serde_json::json!({
            "aud": token_url,
            "iss": client_id,
            "sub": client_id,
            "jti": random_id(),
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        });
        let signing_input = format!("{}.{}", base64url_json(&header), base64url_json(&claims));
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            // Only fails for a key ring itself refused to load, or an RNG failure.
            .expect("RSA signing with a key ring accepted");
        format!("{signing_input}.{}", base64url(&signature))
    }
}

/// A unique id for `jti` (Entra ID may refuse a replayed assertion).
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes)
        .expect("the system random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

enum KeyDer {
    Pkcs8(Vec<u8>),
    Pkcs1(Vec<u8>),
}

/// The first private key and the first certificate of a PEM file.
fn read_pem(bytes: &[u8]) -> Result<(KeyDer, Vec<u8>), String> {
    let mut key = None;
    let mut cert = None;
    for block in x509_parser::pem::Pem::iter_from_buffer(bytes) {
        let block = block.map_err(|e| format!("not a readable PEM file ({e})"))?;
        match block.label.as_str() {
            "PRIVATE KEY" if key.is_none() => key = Some(KeyDer::Pkcs8(block.contents)),
            "RSA PRIVATE KEY" if key.is_none() => key = Some(KeyDer::Pkcs1(block.contents)),
            "ENCRYPTED PRIVATE KEY" => {
                return Err("the private key is encrypted; use an unencrypted PEM key (kept in a secret store or a mounted secret) or a PKCS#12 file with a password".into())
            }
            "CERTIFICATE" if cert.is_none() => cert = Some(block.contents),
            _ => {}
        }
    }
    match (key, cert) {
        (Some(key), Some(cert)) => Ok((key, cert)),
        (None, _) => Err("no private key in the PEM file (it needs the key and the certificate, e.g. `cat key.pem cert.pem`)".into()),
        (_, None) => Err("no certificate in the PEM file (it needs the key and the certificate, e.g. `cat key.pem cert.pem`)".into()),
    }
}

fn read_pkcs12(bytes: &[u8], password: &str) -> Result<(KeyDer, Vec<u8>), String> {
    let store = p12_keystore::KeyStore::from_pkcs12(
        bytes,
        password,
        p12_keystore::Pkcs12ImportPolicy::Strict,
    )
    .map_err(|e| {
        format!("neither PEM nor a PKCS#12 file that opens with the given password ({e})")
    })?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or("the PKCS#12 file holds no private key with its certificate")?;
    let leaf = chain
        .certs()
        .first()
        .ok_or("the PKCS#12 file's key has no certificate")?;
    Ok((
        KeyDer::Pkcs8(chain.key().as_der().to_vec()),
        leaf.as_der().to_vec(),
    ))
}
