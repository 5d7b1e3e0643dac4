//! JSON Web Tokens as the emulator makes and reads them: compact form
//! `base64url(header).base64url(claims).base64url(signature)` (RFC 7519, no padding).
//! Access tokens are HS256 under a per-emulator random key (nobody outside the emulator
//! verifies them; the store still looks each one up by its exact string); federated
//! tokens are RS256 under the committed test issuer key; client assertions are checked
//! as RS256 (PKCS#1 v1.5) or PS256 against a certificate's RSA public key.
//! Invariant: parsing never trusts the token: [`Jwt::parse`] only splits and decodes,
//! and every claim is checked by the caller after the signature verifies.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaKeyPair, UnparsedPublicKey};
use serde_json::Value;

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    // Padding is tolerated on input: some libraries emit it although RFC 7515 omits it.
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// A decoded, not yet verified JWT.
#[derive(Debug, Clone)]
pub struct Jwt {
    pub header: Value,
    pub claims: Value,
    /// `header.claims` as sent: what the signature covers.
    pub signing_input: String,
    pub signature: Vec<u8>,
}

impl Jwt {
    /// Splits and decodes a compact JWT; `None` when it is not one.
    pub fn parse(token: &str) -> Option<Jwt> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&b64url_decode(h)?).ok()?;
        let claims: Value = serde_json::from_slice(&b64url_decode(c)?).ok()?;
        if !header.is_object() || !claims.is_object() {
            return None;
        }
        Some(Jwt {
            header,
            claims,
            signing_input: format!("{h}.{c}"),
            signature: b64url_decode(s)?,
        })
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A NumericDate claim (seconds); fractional values are truncated.
    pub fn claim_time(&self, name: &str) -> Option<i64> {
        let v = self.claims.get(name)?;
        v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
    }

    /// Whether the signature verifies under an RSA public key (the DER `RSAPublicKey`
    /// of a certificate's subject public key info), for `alg` RS256 or PS256.
    pub fn verifies_rsa(&self, rsa_public_key: &[u8]) -> bool {
        let algorithm: &dyn signature::VerificationAlgorithm = match self.header_str("alg") {
            Some("RS256") => &signature::RSA_PKCS1_2048_8192_SHA256,
            Some("PS256") => &signature::RSA_PSS_2048_8192_SHA256,
            _ => return false,
        };
        UnparsedPublicKey::new(algorithm, rsa_public_key)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .is_ok()
    }
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// An HS256 JWT under `key`.
pub fn sign_hs256(key: &ring::hmac::Key, claims: &Value) -> String {
    let header = serde_json::json!({ "typ": "JWT", "alg": "HS256" });
    let input = signing_input(&header, claims);
    let tag = ring::hmac::sign(key, input.as_bytes());
    format!("{input}.{}", b64url(tag.as_ref()))
}

/// An RS256 JWT with `header` (its `alg` is set here) under `key`.
pub fn sign_rs256(key: &RsaKeyPair, mut header: Value, claims: &Value) -> String {
    header["alg"] = Value::from("RS256");
    let input = signing_input(&header, claims);
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .expect("RSA signing with a valid key does not fail");
    format!("{input}.{}", b64url(&sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwt_round_trips_and_garbage_is_not_one() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k");
        let token = sign_hs256(&key, &serde_json::json!({"aud": "x", "exp": 5}));
        let jwt = Jwt::parse(&token).unwrap();
        assert_eq!(jwt.claim_str("aud"), Some("x"));
        assert_eq!(jwt.claim_time("exp"), Some(5));
        assert_eq!(jwt.header_str("alg"), Some("HS256"));
        assert!(Jwt::parse("a.b").is_none());
        assert!(Jwt::parse("a.b.c.d").is_none());
        assert!(Jwt::parse("!!.??.x").is_none());
    }
}
