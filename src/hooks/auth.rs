//! Whether a hook request comes from whoever holds the secret, and whether it may be
//! taken now: the shared-secret header or the HMAC signature (with its freshness and
//! replay checks), and the token bucket that rate-limits authenticated requests.
//!
//! Pure: the caller passes the clock in (Unix seconds for signatures, an `Instant` for
//! the bucket), so every rule here is tested without waiting. Comparisons of secrets
//! and signatures go through `ring::hmac::verify`, which is constant-time.

use crate::client::Secret;
use crate::config::HookAuth;
use ring::hmac;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The header carrying the shared secret (`auth = "secret"`).
pub const SECRET_HEADER: &str = "x-rulebridge-secret";
/// `sha256=<hex>` of HMAC-SHA256(secret, timestamp + "." + body) (`auth = "hmac"`).
pub const SIGNATURE_HEADER: &str = "x-rulebridge-signature";
/// The Unix time (seconds) the signature was made at.
pub const TIMESTAMP_HEADER: &str = "x-rulebridge-timestamp";
/// A signed request more than this far from our clock is refused as stale; within it,
/// each signature is taken once.
pub const MAX_SKEW_SECS: i64 = 300;

/// Why a request was not authenticated; the label is its `result` in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credential, or a wrong shared secret.
    Unauthenticated,
    /// A signature that is malformed or does not match.
    BadSignature,
    /// A valid signature over a timestamp too far from now.
    Stale,
    /// A valid, fresh signature already taken once.
    Replayed,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::BadSignature => "bad_signature",
            Refusal::Stale => "stale",
            Refusal::Replayed => "replayed",
        }
    }
}

/// A signature that passed, to be remembered once the request is taken (a request
/// refused for the rate limit is not remembered, so the sender's retry still counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    tag: Vec<u8>,
    expires: i64,
}

/// What a request presents, header values as sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    pub secret: Option<&'a [u8]>,
    pub signature: Option<&'a [u8]>,
    pub timestamp: Option<&'a [u8]>,
}

pub struct Verifier {
    auth: HookAuth,
    key: hmac::Key,
    /// A per-process key the shared secret is compared under: both sides become tags of
    /// one length, so the comparison's time says nothing about the secret.
    compare: hmac::Key,
    secret_tag: hmac::Tag,
    seen: HashMap<Vec<u8>, i64>,
    next_prune: i64,
}

impl Verifier {
    pub fn new(auth: HookAuth, secret: &Secret) -> Verifier {
        let rng = ring::rand::SystemRandom::new();
        let compare =
            hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("the system's random source works");
        let secret_tag = hmac::sign(&compare, secret.expose().as_bytes());
        Verifier {
            auth,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes()),
            compare,
            secret_tag,
            seen: HashMap::new(),
            next_prune: 0,
        }
    }

    /// Authenticates a request at `now` (Unix seconds). `Ok(Some)`: a signature to
    /// [`Self::remember`] when the request is taken.
    pub fn check(
        &self,
        presented: Presented<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<Option<Signed>, Refusal> {
        match self.auth {
            HookAuth::Secret => {
                let secret = presented.secret.ok_or(Refusal::Unauthenticated)?;
                hmac::verify(&self.compare, secret, self.secret_tag.as_ref())
                    .map_err(|_| Refusal::Unauthenticated)?;
                Ok(None)
            }
            HookAuth::Hmac => {
                let (Some(signature), Some(timestamp)) = (presented.signature, presented.timestamp)
                else {
                    return Err(Refusal::Unauthenticated);
                };
                let tag = std::str::from_utf8(signature)
                    .ok()
                    .map(str::trim)
                    .and_then(|s| s.strip_prefix("sha256="))
                    .and_then(decode_hex)
                    .ok_or(Refusal::BadSignature)?;
                let mut message = Vec::with_capacity(timestamp.len() + 1 + body.len());
                message.extend_from_slice(timestamp);
                message.push(b'.');
                message.extend_from_slice(body);
                hmac::verify(&self.key, &message, &tag).map_err(|_| Refusal::BadSignature)?;
                // Authentic from here on: what the timestamp says can be believed.
                let at: i64 = std::str::from_utf8(timestamp)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .ok_or(Refusal::Stale)?;
                if (now - at).abs() > MAX_SKEW_SECS {
                    return Err(Refusal::Stale);
                }
                if self.seen.contains_key(&tag) {
                    return Err(Refusal::Replayed);
                }
                Ok(Some(Signed {
                    tag,
                    expires: at + MAX_SKEW_SECS,
                }))
            }
        }
    }

    /// Takes `signed` once: `false` if it was already taken (a replay that raced its
    /// original past [`Self::check`]). Entries leave once their timestamp is stale, so
    /// memory is bounded by the rate limit times the window.
    pub fn remember(&mut self, signed: Signed, now: i64) -> bool {
        if now >= self.next_prune {
            self.seen.retain(|_, expires| *expires >= now);
            self.next_prune = now + 10;
        }
        self.seen.insert(signed.tag, signed.expires).is_none()
    }

    /// Signatures remembered now.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}

/// `sha256=<hex>` for `timestamp` and `body` under `secret`: what a sender puts in
/// [`SIGNATURE_HEADER`] (tests and the README's example use it).
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A token bucket: `capacity` tokens, refilled at `capacity` a minute.
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn per_minute(capacity: u32, now: Instant) -> TokenBucket {
        let capacity = f64::from(capacity.max(1));
        TokenBucket {
            capacity,
            per_sec: capacity / 60.0,
            tokens: capacity,
            at: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "hook-secret-5c1d";

    fn verifier(auth: HookAuth) -> Verifier {
        Verifier::new(auth, &Secret::new(SECRET))
    }

    fn signed<'a>(signature: &'a str, timestamp: &'a str) -> Presented<'a> {
        Presented {
            signature: Some(signature.as_bytes()),
            timestamp: Some(timestamp.as_bytes()),
            ..Presented::default()
        }
    }

    #[test]
    fn the_shared_secret_must_match_exactly() {
        let v = verifier(HookAuth::Secret);
        let with = |s: &'static str| Presented {
            secret: Some(s.as_bytes()),
            ..Presented::default()
        };
        assert_eq!(v.check(with(SECRET), b"{}", 0), Ok(None));
        for wrong in [
            "",
            "hook-secret-5c1",
            "hook-secret-5c1d ",
            "HOOK-SECRET-5C1D",
        ] {
            assert_eq!(
                v.check(with(wrong), b"{}", 0),
                Err(Refusal::Unauthenticated),
                "{wrong:?}"
            );
        }
        assert_eq!(
            v.check(Presented::default(), b"{}", 0),
            Err(Refusal::Unauthenticated)
        );
        // A signature is not a way in when the secret header is what is configured.
        let sig = sign(SECRET, "100", b"{}");
        assert_eq!(
            v.check(signed(&sig, "100"), b"{}", 100),
            Err(Refusal::Unauthenticated)
        );
    }

    #[test]
    fn a_signature_covers_timestamp_and_body_and_is_taken_once() {
        let mut v = verifier(HookAuth::Hmac);
        let body = br#"{"incidentName":"abc"}"#;
        let sig = sign(SECRET, "1000", body);
        let taken = v.check(signed(&sig, "1000"), body, 1010).unwrap().unwrap();
        // Not yet remembered: a request refused for the rate limit may be retried.
        assert!(v.check(signed(&sig, "1000"), body, 1010).is_ok());
        assert!(v.remember(taken.clone(), 1010));
        assert!(!v.remember(taken, 1010));
        assert_eq!(
            v.check(signed(&sig, "1000"), body, 1011),
            Err(Refusal::Replayed)
        );
        // Another body, another timestamp, another secret: not this signature.
        assert_eq!(
            v.check(signed(&sig, "1000"), br#"{"incidentName":"abd"}"#, 1010),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            v.check(signed(&sig, "1001"), body, 1010),
            Err(Refusal::BadSignature)
        );
        let other = sign("another-secret", "1000", body);
        assert_eq!(
            v.check(signed(&other, "1000"), body, 1010),
            Err(Refusal::BadSignature)
        );
        for garbage in ["", "sha256=", "sha256=zz", "md5=00", &sig[7..]] {
            assert_eq!(
                v.check(signed(garbage, "1000"), body, 1010),
                Err(Refusal::BadSignature),
                "{garbage:?}"
            );
        }
        assert_eq!(
            v.check(
                Presented {
                    signature: Some(sig.as_bytes()),
                    ..Presented::default()
                },
                body,
                1010
            ),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(
            v.check(Presented::default(), body, 1010),
            Err(Refusal::Unauthenticated)
        );
    }

    #[test]
    fn a_signature_more_than_300_s_off_is_stale_and_forgotten_after() {
        let mut v = verifier(HookAuth::Hmac);
        let body = b"{}";
        let sig = sign(SECRET, "1000", body);
        assert!(v.check(signed(&sig, "1000"), body, 1300).is_ok());
        assert!(v.check(signed(&sig, "1000"), body, 700).is_ok());
        assert_eq!(
            v.check(signed(&sig, "1000"), body, 1301),
            Err(Refusal::Stale)
        );
        assert_eq!(
            v.check(signed(&sig, "1000"), body, 699),
            Err(Refusal::Stale)
        );
        let text = sign(SECRET, "soon", body);
        assert_eq!(
            v.check(signed(&text, "soon"), body, 1000),
            Err(Refusal::Stale)
        );
        let taken = v.check(signed(&sig, "1000"), body, 1000).unwrap().unwrap();
        v.remember(taken, 1000);
        assert_eq!(v.remembered(), 1);
        // Once stale anyway, the signature is no longer kept.
        let later = sign(SECRET, "1400", body);
        let taken = v
            .check(signed(&later, "1400"), body, 1400)
            .unwrap()
            .unwrap();
        v.remember(taken, 1400);
        assert_eq!(v.remembered(), 1);
    }

    #[test]
    fn the_bucket_holds_a_minute_and_refills_steadily() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::per_minute(3, t0);
        assert!((0..3).all(|_| bucket.take(t0).is_ok()));
        let wait = bucket.take(t0).unwrap_err();
        assert!((19.9..=20.1).contains(&wait.as_secs_f64()), "{wait:?}");
        assert!(bucket.take(t0 + Duration::from_secs(19)).is_err());
        assert!(bucket.take(t0 + Duration::from_secs(21)).is_ok());
        // Never more than the capacity, however long it rested.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| bucket.take(later).is_ok()));
        assert!(bucket.take(later).is_err());
    }
}
