//! The JSON Web Token encoding rulebridge needs: base64url without padding for the
//! assertions it signs, and reading (never trusting) the claims of a token it was
//! given, for `doctor`'s permission checks. Nothing here verifies a signature: the
//! services do that.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

pub fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn base64url_json(value: &Value) -> String {
    base64url(value.to_string().as_bytes())
}

/// The claims of a JWT (its middle part), or `None` when `token` is not one (an opaque
/// token is legal: only the service must understand it).
pub fn unverified_claims(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_header, claims) = (parts.next()?, parts.next()?);
    parts.next()?;
    let bytes = URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok().filter(Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_read_from_the_middle_part() {
        let token = format!(
            "{}.{}.sig",
            base64url_json(&serde_json::json!({"alg": "none"})),
            base64url_json(&serde_json::json!({"roles": ["SecurityIncident.Read.All"]}))
        );
        let claims = unverified_claims(&token).unwrap();
        assert_eq!(claims["roles"][0], "SecurityIncident.Read.All");
        assert_eq!(unverified_claims("emu.1"), None);
        assert_eq!(unverified_claims("a.!!.c"), None);
    }
}
