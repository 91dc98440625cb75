//! Cases on where the credential is and on the JOSE header: alg, kid, typ/cty, crit.

use super::*;

impl Gen {
    /// Where the token is and how many there are: schemes, the query parameter, several
    /// credentials (jwt_authn verifies every token it finds; hopauth refuses two different
    /// ones).
    pub(super) fn credentials(&mut self) {
        let now = self.now;
        let good = token(&self.keys.es, &[], &[], now);
        let other = token(&self.keys.ed, &[], &[("sub", r#""user-2""#)], now);
        let bad = with_sig(&good, &[0; 64]);
        let expired = token(&self.keys.es, &[], &[("exp", &(now - 3600).to_string())], now);
        let auth = |v: &str| ("authorization", v.to_string());
        let qs = |t: &str| format!("?access_token={t}");
        let none = String::new();
        let cases: Vec<(&str, Headers, String)> = vec![
            ("Bearer (control)", vec![auth(&format!("Bearer {good}"))], none.clone()),
            ("bearer lowercase", vec![auth(&format!("bearer {good}"))], none.clone()),
            ("BEARER uppercase", vec![auth(&format!("BEARER {good}"))], none.clone()),
            ("Bearer without a space", vec![auth(&format!("Bearer{good}"))], none.clone()),
            ("Bearer alone", vec![auth("Bearer")], none.clone()),
            ("Bearer and a space", vec![auth("Bearer ")], none.clone()),
            ("token without a scheme", vec![auth(&good)], none.clone()),
            ("Basic scheme", vec![auth("Basic dXNlcjpwYXNz")], none.clone()),
            ("Basic scheme + good query token", vec![auth("Basic dXNlcjpwYXNz")], qs(&good)),
            ("query token only", vec![], qs(&good)),
            ("query token, bad", vec![], qs(&bad)),
            ("query token twice, same", vec![], format!("{}&access_token={good}", qs(&good))),
            ("query tokens good + bad", vec![], format!("{}&access_token={bad}", qs(&good))),
            ("query tokens bad + good", vec![], format!("{}&access_token={good}", qs(&bad))),
            ("header + query, same token", vec![auth(&format!("Bearer {good}"))], qs(&good)),
            ("header good + query bad", vec![auth(&format!("Bearer {good}"))], qs(&bad)),
            ("header bad + query good", vec![auth(&format!("Bearer {bad}"))], qs(&good)),
            ("header good + query expired", vec![auth(&format!("Bearer {good}"))], qs(&expired)),
            ("header good + query other good", vec![auth(&format!("Bearer {good}"))], qs(&other)),
            ("two headers, same", vec![auth(&format!("Bearer {good}")), auth(&format!("Bearer {good}"))], none.clone()),
            (
                "two headers, good + bad",
                vec![auth(&format!("Bearer {good}")), auth(&format!("Bearer {bad}"))],
                none.clone(),
            ),
            (
                "two headers, bad + good",
                vec![auth(&format!("Bearer {bad}")), auth(&format!("Bearer {good}"))],
                none.clone(),
            ),
            (
                "two headers, good + other good",
                vec![auth(&format!("Bearer {good}")), auth(&format!("Bearer {other}"))],
                none.clone(),
            ),
            (
                "one header, 'Bearer good, Bearer bad'",
                vec![auth(&format!("Bearer {good}, Bearer {bad}"))],
                none.clone(),
            ),
            (
                "one header, 'Bearer bad, Bearer good'",
                vec![auth(&format!("Bearer {bad}, Bearer {good}"))],
                none.clone(),
            ),
            ("one header, 'Bearer good,good'", vec![auth(&format!("Bearer {good},{good}"))], none.clone()),
            ("query token under another name", vec![], format!("?token={good}")),
            (
                "header good + access%5Ftoken=bad",
                vec![auth(&format!("Bearer {good}"))],
                format!("?access%5Ftoken={bad}"),
            ),
            ("header good + empty access_token=", vec![auth(&format!("Bearer {good}"))], "?access_token=".into()),
            (
                "header good + second header Basic",
                vec![auth(&format!("Bearer {good}")), auth("Basic dXNlcjpwYXNz")],
                none.clone(),
            ),
            (
                "header Basic + second header good",
                vec![auth("Basic dXNlcjpwYXNz"), auth(&format!("Bearer {good}"))],
                none.clone(),
            ),
            ("query name percent-encoded (access%5Ftoken)", vec![], format!("?access%5Ftoken={good}")),
            ("query value percent-encoded dot", vec![], qs(&good.replacen('.', "%2E", 1))),
            ("no credentials", vec![], none.clone()),
        ];
        for (label, headers, query) in cases {
            self.request(label, headers, query);
        }
    }

    pub(super) fn header_alg(&mut self) {
        let now = self.now;
        let es = &self.keys.es;
        let good = token(es, &[], &[], now);
        let sig = good.rsplit_once('.').unwrap().1;
        let p = payload(now, &[]);
        let mut out: Vec<(String, String)> = Vec::new();
        for alg in ["none", "None", "NONE", "nOnE"] {
            let h = b64(header(es, &[("alg", &q(alg))]));
            out.push((format!("alg={alg}, empty sig"), format!("{h}.{}.", b64(&p))));
            out.push((format!("alg={alg}, no sig segment"), format!("{h}.{}", b64(&p))));
            out.push((format!("alg={alg}, ES256 sig"), format!("{h}.{}.{sig}", b64(&p))));
        }
        for alg in ["es256", "ES384", "ES512", "RS256", "PS256", "EdDSA", "Ed25519", "HS256", "ES256K", "ES256 "] {
            let h = b64(header(es, &[("alg", &q(alg))]));
            // Same signature over the relabelled header: only the label changed.
            let t = sign_segments(es, &h, &b64(&p));
            out.push((format!("alg={alg:?} on an ES256 signature"), t));
        }
        for v in ["null", "123", r#"["ES256"]"#, DROP] {
            let h = b64(header(es, &[("alg", v)]));
            out.push((format!("alg={v}"), sign_segments(es, &h, &b64(&p))));
        }
        // RS256 label on a PS256 signature and the reverse, over the same RSA key.
        let ps = &self.keys.ps;
        let rs = &self.keys.rs;
        let h = b64(header(ps, &[("alg", r#""RS256""#)]));
        out.push(("alg=RS256 on a PS256 signature (ps key)".into(), sign_segments(ps, &h, &b64(&p))));
        let h = b64(header(rs, &[("alg", r#""PS256""#)]));
        out.push(("alg=PS256 on an RS256 signature (rs key)".into(), sign_segments(rs, &h, &b64(&p))));
        // HS256 keyed with public key material (key confusion, RFC 8725 §2.1).
        for key in self.all_keys() {
            let jwk = key.public_jwk();
            let field = if jwk["kty"] == "RSA" { "n" } else { "x" };
            let raw = URL_SAFE_NO_PAD.decode(jwk[field].as_str().unwrap()).unwrap();
            for (what, secret) in [("JWK bytes", raw), ("JWK JSON", jwk.to_string().into_bytes())] {
                let mac = SigningKey::hmac(Alg::HS256, &key.kid, &secret).unwrap();
                let h = b64(header(key, &[("alg", r#""HS256""#)]));
                out.push((format!("HS256 MAC with {}'s {what}", key.kid), sign_segments(&mac, &h, &b64(&p))));
            }
        }
        for (label, t) in out {
            self.add("header-alg", label, t);
        }
    }

    pub(super) fn header_kid(&mut self) {
        let now = self.now;
        let keys = self.keys.clone();
        for key in [&keys.es, &keys.rs, &keys.ps, &keys.ed] {
            let t = token(key, &[("kid", DROP)], &[], now);
            self.add("header-kid", format!("{} no kid", key.alg), t);
        }
        for key in self.strangers_keys() {
            let t = token(&key, &[("kid", DROP)], &[], now);
            self.add("header-kid", format!("{} no kid, unknown key", key.alg), t);
            let t = token(&key, &[], &[], now);
            self.add("header-kid", format!("{} unknown key, its own kid", key.alg), t);
        }
        let stranger_same_kid = {
            let k = SigningKey::generate(Alg::ES256, "es-1").unwrap();
            token(&k, &[], &[], now)
        };
        self.add("header-kid", "unknown key claiming kid es-1", stranger_same_kid);
        let long = q(&"k".repeat(1000));
        let values: Vec<String> = vec![
            q(""),
            q("nope"),
            "123".into(),
            "null".into(),
            "[]".into(),
            r#"["es-1"]"#.into(),
            q("rs-1"),
            q("ed-1"),
            q("es-1 "),
            q("ES-1"),
            q("../../../../../../dev/null"),
            q("/dev/null"),
            q("|sleep 10"),
            q("x' UNION SELECT '1';--"),
            long,
        ];
        for v in &values {
            let t = token(&self.keys.es, &[("kid", v)], &[], now);
            self.add("header-kid", format!("kid={}", truncate(v, 40)), t);
        }
    }

    pub(super) fn strangers_keys(&self) -> Vec<SigningKey> {
        [&self.strangers.es, &self.strangers.rs, &self.strangers.ps, &self.strangers.ed]
            .iter()
            .map(|k| SigningKey::from_pkcs8(k.alg, &format!("{}-stranger", k.kid), k.pkcs8_der()).unwrap())
            .collect()
    }

    pub(super) fn header_typ_cty(&mut self) {
        let now = self.now;
        for v in [
            q("JWT"),
            q("jwt"),
            q("at+jwt"),
            q("application/at+jwt"),
            q("JOSE"),
            q("JOSE+JSON"),
            q(""),
            "123".into(),
            "null".into(),
            "[]".into(),
            DROP.to_string(),
        ] {
            let t = token(&self.keys.es, &[("typ", &v)], &[], now);
            self.add("header-typ-cty", format!("typ={v}"), t);
        }
        for v in [q("JWT"), q("jwt"), q("application/json"), q("text/plain"), "1".into(), "null".into()] {
            let t = token(&self.keys.es, &[("cty", &v)], &[], now);
            self.add("header-typ-cty", format!("cty={v}"), t);
        }
    }

    pub(super) fn header_crit_members(&mut self) {
        let now = self.now;
        let stranger_jwk = self.strangers.es.public_jwk().to_string();
        let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
            ("crit=[exp]", vec![("crit", r#"["exp"]"#.into()), ("exp", "1".into())]),
            ("crit=[x-custom] + member", vec![("crit", r#"["x-custom"]"#.into()), ("x-custom", "1".into())]),
            ("crit=[x-custom] no member", vec![("crit", r#"["x-custom"]"#.into())]),
            ("crit=[]", vec![("crit", "[]".into())]),
            ("crit=\"x\"", vec![("crit", q("x"))]),
            ("crit=null", vec![("crit", "null".into())]),
            ("b64=false crit=[b64]", vec![("b64", "false".into()), ("crit", r#"["b64"]"#.into())]),
            ("b64=false", vec![("b64", "false".into())]),
            ("b64=true", vec![("b64", "true".into())]),
            ("jku", vec![("jku", q("http://127.0.0.1:9/jwks.json"))]),
            ("x5u", vec![("x5u", q("http://127.0.0.1:9/cert.pem"))]),
            ("jwk (attacker's)", vec![("jwk", stranger_jwk)]),
            ("x5c", vec![("x5c", r#"["MIIBszCCAVmgAwIBAgIU"]"#.into())]),
            ("x5t", vec![("x5t", q("3PaK4EfyBNQu-ZwRrIT9BZ8ugz0"))]),
            ("x5t#S256", vec![("x5t#S256", q("n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg"))]),
            ("enc", vec![("enc", q("A256GCM"))]),
            ("zip", vec![("zip", q("DEF"))]),
            ("unknown member", vec![("foo", "1".into())]),
            ("nested member", vec![("ctx", r#"{"a":{"b":[1,{"c":null}]}}"#.into())]),
            ("iss and aud in header", vec![("iss", q(ISSUER)), ("aud", q("evil"))]),
            ("empty-name member", vec![("", "1".into())]),
        ];
        for (label, set) in &cases {
            let set: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let t = token(&self.keys.es, &set, &[], now);
            self.add("header-members", *label, t);
        }
    }
}
