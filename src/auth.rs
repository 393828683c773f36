//! Sender authentication over the raw request bytes: Standard Webhooks, `X-Hub-Signature-256` and bearer tokens.
//!
//! Every comparison is constant-time, and no secret, token or signature ever leaves this module in a log line, a
//! `Debug` output or an error: errors say what kind of failure it was and nothing of what was expected.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Key material that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Reads a Standard Webhooks secret: `whsec_` followed by the base64 of the key bytes.
    pub fn parse_whsec(raw: &str) -> Result<Self, String> {
        let encoded = raw.strip_prefix("whsec_").ok_or("must start with \"whsec_\"")?;
        let key = BASE64
            .decode(encoded)
            .map_err(|_| "the part after \"whsec_\" is not base64".to_owned())?;
        if key.len() < 16 {
            return Err(format!("the key is {} bytes long; use at least 16", key.len()));
        }
        Ok(Secret(key))
    }

    /// A fresh random `whsec_` secret of 32 bytes.
    pub fn generate_whsec() -> String {
        format!("whsec_{}", BASE64.encode(rand::random::<[u8; 32]>()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How one sender proves who it is.
#[derive(Debug, Clone)]
pub enum Method {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` over `id.timestamp.body`.
    StandardWebhooks { keys: Vec<Secret>, tolerance: Duration },
    /// `X-Hub-Signature-256: sha256=<hex>` over the body.
    HubSignature { keys: Vec<Secret> },
    /// `Authorization: Bearer <token>`.
    Bearer { tokens: Vec<Secret> },
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::StandardWebhooks { .. } => "standard-webhooks",
            Method::HubSignature { .. } => "hub-signature-256",
            Method::Bearer { .. } => "bearer",
        }
    }
}

/// A configured sender.
#[derive(Debug, Clone)]
pub struct Sender {
    pub name: String,
    pub method: Method,
}

/// A delivery that passed authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated<'a> {
    pub sender: &'a str,
    /// The Standard Webhooks `webhook-id`, the sender's idempotency key for this delivery.
    pub delivery_id: Option<&'a str>,
}

/// Why a delivery was refused. The text is safe to show a caller: it never hints at the expected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: sign the request or send a bearer token")]
    Missing,
    #[error("the signature or token does not match any configured secret")]
    Mismatch,
    #[error("webhook-timestamp is outside the allowed tolerance")]
    Stale,
    #[error("the authentication headers are malformed")]
    Malformed,
}

impl AuthError {
    /// A short label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Mismatch => "mismatch",
            AuthError::Stale => "stale",
            AuthError::Malformed => "malformed",
        }
    }
}

/// Finds the sender whose credentials this request carries. When several senders could match, the first configured
/// sender that verifies wins; the error reported is the most specific one met.
pub fn authenticate<'a>(
    senders: &'a [Sender],
    headers: &'a HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<Authenticated<'a>, AuthError> {
    let mut error = AuthError::Missing;
    for sender in senders {
        let result = match &sender.method {
            Method::StandardWebhooks { keys, tolerance } => {
                verify_standard(keys, *tolerance, headers, body, now_unix)
            }
            Method::HubSignature { keys } => verify_hub(keys, headers, body).map(|()| None),
            Method::Bearer { tokens } => verify_bearer(tokens, headers).map(|()| None),
        };
        match result {
            Ok(delivery_id) => return Ok(Authenticated { sender: &sender.name, delivery_id }),
            Err(AuthError::Missing) => {}
            Err(err) if error == AuthError::Missing || err == AuthError::Stale => error = err,
            Err(_) => {}
        }
    }
    Err(error)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, AuthError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value.to_str().map(Some).map_err(|_| AuthError::Malformed),
    }
}

fn verify_standard<'a>(
    keys: &[Secret],
    tolerance: Duration,
    headers: &'a HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<Option<&'a str>, AuthError> {
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header(headers, "webhook-id")?,
        header(headers, "webhook-timestamp")?,
        header(headers, "webhook-signature")?,
    ) else {
        return Err(AuthError::Missing);
    };
    if id.is_empty() || id.len() > 256 {
        return Err(AuthError::Malformed);
    }
    let sent: i64 = timestamp.parse().map_err(|_| AuthError::Malformed)?;
    if now_unix.abs_diff(sent) > tolerance.as_secs() {
        return Err(AuthError::Stale);
    }
    for key in keys {
        let mut mac =
            HmacSha256::new_from_slice(key.expose()).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        let expected = mac.finalize().into_bytes();
        for entry in signatures.split(' ') {
            let Some(encoded) = entry.strip_prefix("v1,") else { continue };
            let Ok(given) = BASE64.decode(encoded) else { continue };
            if bool::from(given.ct_eq(expected.as_slice())) {
                return Ok(Some(id));
            }
        }
    }
    Err(AuthError::Mismatch)
}

fn verify_hub(keys: &[Secret], headers: &HeaderMap, body: &[u8]) -> Result<(), AuthError> {
    let Some(value) = header(headers, "x-hub-signature-256")? else {
        return Err(AuthError::Missing);
    };
    let given = value
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(AuthError::Malformed)?;
    for key in keys {
        let mut mac =
            HmacSha256::new_from_slice(key.expose()).expect("HMAC takes keys of any length");
        mac.update(body);
        if mac.verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    Err(AuthError::Mismatch)
}

fn verify_bearer(tokens: &[Secret], headers: &HeaderMap) -> Result<(), AuthError> {
    let given = bearer_token(headers)?.ok_or(AuthError::Missing)?;
    if tokens.iter().any(|token| bool::from(token.expose().ct_eq(given.as_bytes()))) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// The token of an `Authorization: Bearer` header, if there is one.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    match header(headers, "authorization")? {
        None => Ok(None),
        Some(value) => match value.split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
                Ok(Some(token.trim()))
            }
            _ => Err(AuthError::Malformed),
        },
    }
}

/// Whether `given` is one of `tokens`, compared in constant time.
pub fn token_matches(tokens: &[Secret], given: &str) -> bool {
    tokens
        .iter()
        .fold(false, |found, token| found | bool::from(token.expose().ct_eq(given.as_bytes())))
}

/// The `webhook-signature` value for a delivery, as a sender computes it.
pub fn sign_standard(key: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key.expose()).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The `X-Hub-Signature-256` value for a body.
pub fn sign_hub(key: &Secret, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key.expose()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn standard(secret: &str) -> Vec<Sender> {
        vec![Sender {
            name: "scom".into(),
            method: Method::StandardWebhooks {
                keys: vec![Secret::parse_whsec(secret).unwrap()],
                tolerance: Duration::from_secs(300),
            },
        }]
    }

    /// The test vector that the Standard Webhooks specification's reference libraries publish.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1614265330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn standard_webhooks_matches_the_specification_vector() {
        let key = Secret::parse_whsec(SPEC_SECRET).unwrap();
        assert_eq!(
            sign_standard(&key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.as_bytes()),
            SPEC_SIGNATURE
        );
        let senders = standard(SPEC_SECRET);
        let ts = SPEC_TIMESTAMP.to_string();
        let good = headers(&[
            ("webhook-id", SPEC_ID),
            ("webhook-timestamp", &ts),
            ("webhook-signature", SPEC_SIGNATURE),
        ]);
        let ok = authenticate(&senders, &good, SPEC_BODY.as_bytes(), SPEC_TIMESTAMP + 10).unwrap();
        assert_eq!(ok, Authenticated { sender: "scom", delivery_id: Some(SPEC_ID) });
    }

    #[test]
    fn standard_webhooks_refusals() {
        let senders = standard(SPEC_SECRET);
        let ts = SPEC_TIMESTAMP.to_string();
        let body = SPEC_BODY.as_bytes();
        let now = SPEC_TIMESTAMP;
        let several = format!("v1,bm90IGl0 v2,abc {SPEC_SIGNATURE}");
        let cases: &[(&[(&'static str, &str)], &[u8], i64, Result<(), AuthError>)] = &[
            (
                &[
                    ("webhook-id", SPEC_ID),
                    ("webhook-timestamp", &ts),
                    ("webhook-signature", &several),
                ],
                body,
                now,
                Ok(()),
            ),
            (
                &[
                    ("webhook-id", SPEC_ID),
                    ("webhook-timestamp", &ts),
                    ("webhook-signature", SPEC_SIGNATURE),
                ],
                b"{\"test\": 1}",
                now,
                Err(AuthError::Mismatch),
            ),
            (
                &[
                    ("webhook-id", "msg_other"),
                    ("webhook-timestamp", &ts),
                    ("webhook-signature", SPEC_SIGNATURE),
                ],
                body,
                now,
                Err(AuthError::Mismatch),
            ),
            (
                &[
                    ("webhook-id", SPEC_ID),
                    ("webhook-timestamp", &ts),
                    ("webhook-signature", SPEC_SIGNATURE),
                ],
                body,
                now + 301,
                Err(AuthError::Stale),
            ),
            (
                &[
                    ("webhook-id", SPEC_ID),
                    ("webhook-timestamp", &ts),
                    ("webhook-signature", SPEC_SIGNATURE),
                ],
                body,
                now - 301,
                Err(AuthError::Stale),
            ),
            (
                &[
                    ("webhook-id", SPEC_ID),
                    ("webhook-timestamp", "soon"),
                    ("webhook-signature", SPEC_SIGNATURE),
                ],
                body,
                now,
                Err(AuthError::Malformed),
            ),
            (
                &[("webhook-id", SPEC_ID), ("webhook-timestamp", &ts)],
                body,
                now,
                Err(AuthError::Missing),
            ),
            (&[], body, now, Err(AuthError::Missing)),
        ];
        for (pairs, body, now, expected) in cases {
            let got = authenticate(&senders, &headers(pairs), body, *now).map(|_| ());
            assert_eq!(got, *expected, "headers {pairs:?}");
        }
    }

    #[test]
    fn rotation_accepts_every_configured_secret() {
        let old = Secret::parse_whsec(SPEC_SECRET).unwrap();
        let new = Secret::new(b"a fresh key of more than sixteen bytes".to_vec());
        let senders = vec![Sender {
            name: "scom".into(),
            method: Method::StandardWebhooks {
                keys: vec![new.clone(), old.clone()],
                tolerance: Duration::from_secs(300),
            },
        }];
        for key in [&old, &new] {
            let signature = sign_standard(key, "msg_1", 1000, b"{}");
            let map = headers(&[
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", "1000"),
                ("webhook-signature", &signature),
            ]);
            assert!(authenticate(&senders, &map, b"{}", 1000).is_ok());
        }
    }

    #[test]
    fn hub_signature_matches_githubs_published_vector() {
        let key = Secret::new(b"It's a Secret to Everybody".to_vec());
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign_hub(&key, b"Hello, World!"), expected);
        let senders =
            vec![Sender { name: "gh".into(), method: Method::HubSignature { keys: vec![key] } }];
        assert!(authenticate(
            &senders,
            &headers(&[("x-hub-signature-256", expected)]),
            b"Hello, World!",
            0
        )
        .is_ok());
        let wrong = headers(&[("x-hub-signature-256", expected)]);
        assert_eq!(authenticate(&senders, &wrong, b"Hello, World?", 0), Err(AuthError::Mismatch));
        let garbage = headers(&[("x-hub-signature-256", "md5=abc")]);
        assert_eq!(
            authenticate(&senders, &garbage, b"Hello, World!", 0),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn bearer_tokens_and_sender_choice() {
        let senders = vec![
            Sender { name: "scom".into(), method: standard(SPEC_SECRET).remove(0).method },
            Sender {
                name: "alertmanager".into(),
                method: Method::Bearer {
                    tokens: vec![
                        Secret::new(b"t0ken-one".to_vec()),
                        Secret::new(b"t0ken-two".to_vec()),
                    ],
                },
            },
        ];
        let map = headers(&[("authorization", "Bearer t0ken-two")]);
        let ok = authenticate(&senders, &map, b"{}", 0).unwrap();
        assert_eq!(ok.sender, "alertmanager");
        assert_eq!(
            authenticate(&senders, &headers(&[("authorization", "Bearer nope")]), b"{}", 0),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            authenticate(&senders, &headers(&[("authorization", "Basic abc")]), b"{}", 0),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn secrets_never_print() {
        let key = Secret::parse_whsec(SPEC_SECRET).unwrap();
        assert_eq!(format!("{key:?}"), "Secret(***)");
        assert!(Secret::parse_whsec("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_err()
            .contains("whsec_"));
        assert!(Secret::parse_whsec(&Secret::generate_whsec()).is_ok());
    }

    /// Every kind of sender at once, so that hostile headers meet every check.
    fn every_kind() -> Vec<Sender> {
        let mut senders = standard(SPEC_SECRET);
        senders.push(Sender {
            name: "hub".into(),
            method: Method::HubSignature {
                keys: vec![Secret::new(b"hub-secret-0123456789".to_vec())],
            },
        });
        senders.push(Sender {
            name: "bearer".into(),
            method: Method::Bearer {
                tokens: vec![Secret::new(b"bearer-token-0123456789".to_vec())],
            },
        });
        senders
    }

    /// Header values as a sender controls them: any bytes HTTP lets through, opaque bytes included.
    fn header_value() -> impl proptest::strategy::Strategy<Value = Option<http::HeaderValue>> {
        use proptest::prelude::*;
        prop_oneof![
            Just(None),
            prop::collection::vec(any::<u8>(), 0..300)
                .prop_map(|bytes| http::HeaderValue::from_bytes(&bytes).ok()),
            "(v1,[A-Za-z0-9+/=]{0,60} ?){0,4}"
                .prop_map(|text| http::HeaderValue::from_str(&text).ok()),
            "sha256=[0-9a-fA-F]{0,80}".prop_map(|text| http::HeaderValue::from_str(&text).ok()),
            "(Bearer|bearer|BEARER|Basic) ?.{0,40}"
                .prop_map(|text| http::HeaderValue::from_str(&text).ok()),
            "-?[0-9]{0,25}".prop_map(|text| http::HeaderValue::from_str(&text).ok()),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn hostile_headers_and_bodies_are_refused_with_a_typed_error(
            id in header_value(),
            timestamp in header_value(),
            signature in header_value(),
            hub in header_value(),
            authorization in header_value(),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024),
            now in proptest::prelude::any::<i64>(),
        ) {
            let mut map = HeaderMap::new();
            for (name, value) in [("webhook-id", id), ("webhook-timestamp", timestamp), ("webhook-signature", signature), ("x-hub-signature-256", hub), ("authorization", authorization)] {
                if let Some(value) = value {
                    map.insert(name, value);
                }
            }
            let senders = every_kind();
            let err = authenticate(&senders, &map, &body, now).expect_err("nothing forged gets through");
            let text = err.to_string();
            proptest::prop_assert!(!text.is_empty() && !err.reason().is_empty());
            proptest::prop_assert!(!text.contains("hub-secret") && !text.contains("bearer-token") && !text.contains("v1,"), "{}", text);
        }

        #[test]
        fn a_signature_holds_for_exactly_the_bytes_it_signed(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024),
            at in proptest::prelude::any::<usize>(),
            bit in 0u8..8,
        ) {
            let key = Secret::parse_whsec(SPEC_SECRET).unwrap();
            let signature = sign_standard(&key, "msg_fuzz", 1_700_000_000, &body);
            let signed = headers(&[("webhook-id", "msg_fuzz"), ("webhook-timestamp", "1700000000"), ("webhook-signature", &signature)]);
            let senders = every_kind();
            proptest::prop_assert_eq!(authenticate(&senders, &signed, &body, 1_700_000_000).map(|a| a.sender), Ok("scom"));
            let hub = Secret::new(b"hub-secret-0123456789".to_vec());
            let hub_signed = headers(&[("x-hub-signature-256", &sign_hub(&hub, &body))]);
            proptest::prop_assert_eq!(authenticate(&senders, &hub_signed, &body, 0).map(|a| a.sender), Ok("hub"));
            if !body.is_empty() {
                let mut tampered = body.clone();
                tampered[at % body.len()] ^= 1 << bit;
                proptest::prop_assert_eq!(authenticate(&senders, &signed, &tampered, 1_700_000_000), Err(AuthError::Mismatch));
                proptest::prop_assert_eq!(authenticate(&senders, &hub_signed, &tampered, 0), Err(AuthError::Mismatch));
            }
        }
    }
}
