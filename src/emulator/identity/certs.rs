//! The emulator's TEST certificates and keys (committed in `test-material/`, see its
//! README: generated once with openssl, their private keys public, never to be trusted
//! by anything real), the certificates registered on the emulated app, and the
//! temporary folder they are written to so a client can load them by path.
//! Invariants: a certificate is registered by its DER bytes' thumbprints (SHA-256 for
//! `x5t#S256`, SHA-1 for the legacy `x5t`) and its RSA public key, nothing else; the
//! folder lives exactly as long as the [`CertificateFiles`] value (the `Emulator`).

use ring::digest;
use std::path::{Path, PathBuf};

/// Key + self-signed certificate valid until 2126 (PEM, one file).
pub const TEST_CLIENT_PEM: &[u8] = include_bytes!("test-material/test-client.pem");
/// The same key and certificate as PKCS#12.
pub const TEST_CLIENT_PFX: &[u8] = include_bytes!("test-material/test-client.pfx");
/// The PKCS#12 file's password (a test file: the password is no secret).
pub const TEST_CLIENT_PFX_PASSWORD: &str = "rulebridge-test";
/// Another key + a certificate that expired on 2021-01-01 (PEM, one file).
pub const TEST_EXPIRED_PEM: &[u8] = include_bytes!("test-material/test-expired.pem");
/// The key the emulator's OIDC issuer signs federated tokens with (PKCS#8 PEM).
pub const TEST_OIDC_ISSUER_KEY_PEM: &[u8] =
    include_bytes!("test-material/test-oidc-issuer-key.pem");

/// The DER contents of every PEM block labelled `label` in `pem`.
pub fn pem_blocks(pem: &[u8], label: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .filter(|p| p.label == label)
        .map(|p| p.contents)
        .collect()
}

/// A certificate registered on the app (as "Certificates & secrets" holds it).
#[derive(Debug, Clone)]
pub struct RegisteredCertificate {
    pub sha256: Vec<u8>,
    pub sha1: Vec<u8>,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// The DER `RSAPublicKey` the assertion's signature is checked with.
    pub rsa_public_key: Vec<u8>,
}

impl RegisteredCertificate {
    /// Reads one DER certificate; only RSA keys (what Entra ID accepts for apps).
    pub fn from_der(der: &[u8]) -> Result<RegisteredCertificate, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let spki = cert.public_key();
        // rsaEncryption, 1.2.840.113549.1.1.1.
        if spki.algorithm.algorithm.to_id_string() != "1.2.840.113549.1.1.1" {
            return Err("the certificate's key is not RSA".into());
        }
        Ok(RegisteredCertificate {
            sha256: digest::digest(&digest::SHA256, der).as_ref().to_vec(),
            sha1: digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der)
                .as_ref()
                .to_vec(),
            not_after: cert.validity().not_after.timestamp(),
            rsa_public_key: spki.subject_public_key.data.to_vec(),
        })
    }

    /// Every certificate in a PEM file's bytes.
    pub fn all_from_pem(pem: &[u8]) -> Result<Vec<RegisteredCertificate>, String> {
        let blocks = pem_blocks(pem, "CERTIFICATE");
        if blocks.is_empty() {
            return Err("no PEM CERTIFICATE block".into());
        }
        blocks.iter().map(|der| Self::from_der(der)).collect()
    }
}

/// The test material written out for clients; removed when dropped.
#[derive(Debug)]
pub struct CertificateFiles {
    _dir: tempfile::TempDir,
    pub client_pem: PathBuf,
    pub client_pfx: PathBuf,
    pub expired_pem: PathBuf,
}

impl CertificateFiles {
    /// Writes the test certificates into a fresh temporary folder.
    pub fn write() -> std::io::Result<CertificateFiles> {
        let dir = tempfile::Builder::new()
            .prefix("rulebridge-emulator-test-certs-")
            .tempdir()?;
        let put = |name: &str, bytes: &[u8]| -> std::io::Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes)?;
            Ok(path)
        };
        Ok(CertificateFiles {
            client_pem: put("test-client.pem", TEST_CLIENT_PEM)?,
            client_pfx: put("test-client.pfx", TEST_CLIENT_PFX)?,
            expired_pem: put("test-expired.pem", TEST_EXPIRED_PEM)?,
            _dir: dir,
        })
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_material_parses_and_the_pfx_opens_with_its_password() {
        let good = RegisteredCertificate::all_from_pem(TEST_CLIENT_PEM).unwrap();
        assert_eq!(good.len(), 1);
        assert!(good[0].not_after > 4_000_000_000, "valid until ~2126");
        let expired = RegisteredCertificate::all_from_pem(TEST_EXPIRED_PEM).unwrap();
        assert!(expired[0].not_after < 1_700_000_000);
        assert_eq!(pem_blocks(TEST_CLIENT_PEM, "PRIVATE KEY").len(), 1);
        let issuer = pem_blocks(TEST_OIDC_ISSUER_KEY_PEM, "PRIVATE KEY");
        assert!(ring::signature::RsaKeyPair::from_pkcs8(&issuer[0]).is_ok());
        // The PKCS#12 file holds the same certificate, readable by the crate the
        // client uses.
        let store = p12_keystore::KeyStore::from_pkcs12(
            TEST_CLIENT_PFX,
            TEST_CLIENT_PFX_PASSWORD,
            p12_keystore::Pkcs12ImportPolicy::Strict,
        )
        .unwrap();
        let (_, chain) = store.private_key_chain().unwrap();
        let der = chain.certs()[0].as_der();
        assert_eq!(
            RegisteredCertificate::from_der(der).unwrap().sha256,
            good[0].sha256
        );
    }
}
