//! Tokens, providers and the oracle's state: minting valid tokens and the requests that must always be refused.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RevokeHow {
    RedisJti,
    RedisSubject,
    AdminJti,
    AdminSubject,
}

impl RevokeHow {
    pub(super) const ALL: [RevokeHow; 4] =
        [RevokeHow::RedisJti, RevokeHow::RedisSubject, RevokeHow::AdminJti, RevokeHow::AdminSubject];
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Revocation {
    pub(super) how: RevokeHow,
    pub(super) first_attempt: Instant,
    pub(super) done: Option<Instant>,
}

pub(super) struct Tok {
    pub(super) auth: String,
    pub(super) sub: String,
    pub(super) jti: String,
    pub(super) exp: i64,
    pub(super) provider: usize,
    pub(super) key: usize,
    pub(super) revoked: Option<Revocation>,
}

pub(super) struct KeyState {
    pub(super) key: SigningKey,
    pub(super) published: Instant,
    pub(super) withdrawn: Option<Instant>,
}

pub(super) struct Provider {
    pub(super) name: String,
    pub(super) issuer: String,
    pub(super) alg: Alg,
    pub(super) jwks: JwksServer,
    /// In front of `jwks`: hopauth fetches through it, so the server can be "down".
    pub(super) jwks_proxy: FaultProxy,
    pub(super) keys: Vec<KeyState>,
}

impl Provider {
    pub(super) fn publish(&self) {
        let live: Vec<&SigningKey> = self.keys.iter().filter(|k| k.withdrawn.is_none()).map(|k| &k.key).collect();
        self.jwks.set(jwks_of(&live));
    }
}

/// An invalid request and the status it must get.
pub(super) struct Invalid {
    pub(super) what: &'static str,
    pub(super) auth: Option<String>,
    pub(super) want: u16,
}

pub(super) struct State {
    pub(super) providers: Vec<Provider>,
    pub(super) toks: Vec<Tok>,
    pub(super) invalid: Vec<Invalid>,
    pub(super) windows: Windows,
}

/// What a request carried, for judging it.
#[derive(Clone)]
pub(super) enum Sent {
    Valid { tok: usize, admin_route: bool },
    Invalid { idx: usize },
}

pub(super) fn mint(p: &Provider, key: usize, sub: &str, exp: i64) -> (String, String) {
    let jti = format!("{sub}-jti");
    let n = now();
    let claims = json!({"iss": p.issuer, "sub": sub, "aud": AUDIENCE, "iat": n - 1, "nbf": n - 5, "exp": exp, "jti": jti, "scope": "orders:read"});
    (p.keys[key].key.sign_jwt(&claims).unwrap(), jti)
}

impl State {
    /// Mints `TOKENS_PER_KEY` tokens on key `key` of provider `p`.
    pub(super) fn mint_tokens(&mut self, p: usize, key: usize, exp: i64) {
        for i in 0..TOKENS_PER_KEY {
            let sub = format!("{}-k{key}-u{i}-{}", self.providers[p].name, rand::rng().random::<u32>());
            let (token, jti) = mint(&self.providers[p], key, &sub, exp);
            self.toks.push(Tok { auth: format!("Bearer {token}"), sub, jti, exp, provider: p, key, revoked: None });
        }
    }

    pub(super) fn live(&self) -> Vec<usize> {
        (0..self.toks.len())
            .filter(|&i| {
                let t = &self.toks[i];
                t.revoked.is_none() && self.providers[t.provider].keys[t.key].withdrawn.is_none()
            })
            .collect()
    }
}

/// Tokens that must always be refused, whatever the faults (except 503 in a window).
pub(super) fn invalid_requests(p0: &Provider, exp: i64) -> Vec<Invalid> {
    let key = &p0.keys[0].key;
    let n = now();
    let c = |over: Value| {
        let mut base = json!({"iss": p0.issuer, "sub": "mallory", "aud": AUDIENCE, "iat": n, "nbf": n - 5, "exp": exp, "jti": "bad"});
        for (k, v) in over.as_object().unwrap() {
            base[k] = v.clone();
        }
        key.sign_jwt(&base).unwrap()
    };
    let good = c(json!({}));
    let (head, rest) = good.split_at(good.rfind('.').unwrap() + 1);
    // Flip a character in the middle of the signature (the last one may only carry padding bits).
    let mut sig: Vec<u8> = rest.as_bytes().to_vec();
    let mid = sig.len() / 2;
    sig[mid] = if sig[mid] == b'A' { b'B' } else { b'A' };
    let bad_sig = format!("{head}{}", String::from_utf8(sig).unwrap());
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(json!({"iss": p0.issuer, "sub": "mallory", "aud": AUDIENCE, "exp": exp}).to_string())
    );
    let unknown_kid = key
        .sign_with_header(
            &json!({"alg": key.alg.as_str(), "typ": "JWT", "kid": "no-such-kid"}),
            &json!({"iss": p0.issuer, "sub": "mallory", "aud": AUDIENCE, "iat": n, "exp": exp}),
        )
        .unwrap();
    let b = |t: &str| Some(format!("Bearer {t}"));
    vec![
        Invalid { what: "bad signature", auth: b(&bad_sig), want: 401 },
        Invalid { what: "expired", auth: b(&c(json!({"exp": n - 60, "iat": n - 120, "nbf": n - 120}))), want: 401 },
        Invalid { what: "wrong aud", auth: b(&c(json!({"aud": "billing"}))), want: 401 },
        Invalid { what: "unknown issuer", auth: b(&c(json!({"iss": "https://evil.test"}))), want: 401 },
        Invalid { what: "unknown kid", auth: b(&unknown_kid), want: 401 },
        Invalid { what: "alg none", auth: b(&none), want: 401 },
        Invalid { what: "garbage", auth: b("not-a-jwt"), want: 401 },
        Invalid { what: "three garbage segments", auth: b("a.b.c"), want: 401 },
        Invalid { what: "no token", auth: None, want: 401 },
    ]
}
