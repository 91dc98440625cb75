//! Cases on the claims: registered-claim combinations, sizes, validity windows, types, iss/aud, missing claims.

use super::*;

impl Gen {
    /// Every registered claim at once drawn from a pool of good, edge and wrong-typed
    /// values: how the checks combine, past any single-claim case.
    pub(super) fn claim_combinations(&mut self) {
        let now = self.now;
        let (exp, nbf, late) = ((now + 300).to_string(), (now - 5).to_string(), (now + 3600).to_string());
        let pools: Vec<(&str, Vec<String>)> = vec![
            (
                "iss",
                vec![
                    q(ISSUER),
                    q(ISSUER),
                    q("https://issuer.test/"),
                    "null".into(),
                    format!("[{}]", q(ISSUER)),
                    DROP.into(),
                ],
            ),
            (
                "aud",
                vec![
                    q(AUDIENCE),
                    q(URL_AUDIENCE),
                    r#"["x","orders"]"#.into(),
                    q("x"),
                    "[]".into(),
                    "1".into(),
                    DROP.into(),
                ],
            ),
            (
                "exp",
                vec![
                    exp.clone(),
                    exp.clone(),
                    format!("{exp}.5"),
                    q(&exp),
                    (now - 3600).to_string(),
                    "0".into(),
                    DROP.into(),
                ],
            ),
            ("nbf", vec![nbf.clone(), nbf, late.clone(), q("0"), "-1".into(), DROP.into()]),
            ("iat", vec![now.to_string(), late, "null".into(), "1e400".into(), DROP.into()]),
            ("sub", vec![q("user-1"), q(""), "1".into(), "[]".into(), DROP.into()]),
            ("jti", vec![q("jti-1"), "1".into(), DROP.into()]),
        ];
        let keys = self.keys.clone();
        for i in 0..300 {
            let mut set: Vec<(&str, String)> = Vec::new();
            for (name, pool) in &pools {
                // The good value (first) half the time, so that some combinations pass.
                let pick = if self.rng.random_bool(0.5) { 0 } else { self.rng.random_range(0..pool.len()) };
                set.push((name, pool[pick].clone()));
            }
            let label = set.iter().map(|(n, v)| format!("{n}={}", truncate(v, 24))).collect::<Vec<_>>().join(" ");
            let set: Vec<(&str, &str)> = set.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let key = if i % 2 == 0 { &keys.ed } else { &keys.es };
            let t = token(key, &[], &set, now);
            self.add("claim-combos", format!("#{i} {label}"), t);
        }
    }

    /// Tokens around hopauth's `max_token_bytes` (8192) and well past it; jwt_authn has no
    /// limit of its own below Envoy's 60 KiB of request headers.
    pub(super) fn sizes(&mut self) {
        let now = self.now;
        for target in [4096usize, 8191, 8192, 8193, 12_000, 30_000] {
            // The ES256 signature segment is always 86 characters: find the claim length
            // that makes the whole token `target` long (or the nearest below).
            let len_for = |n: usize| {
                let blob = q(&"s".repeat(n));
                b64(header(&self.keys.es, &[])).len() + 2 + b64(payload(now, &[("blob", &blob)])).len() + 86
            };
            let mut n = target * 3 / 4;
            while n > 0 && len_for(n) > target {
                n -= 1;
            }
            let blob = q(&"s".repeat(n));
            let t = token(&self.keys.es, &[], &[("blob", &blob)], now);
            self.add("size", format!("{target} bytes (got {})", t.len()), t);
        }
    }

    pub(super) fn valid(&mut self) {
        let now = self.now;
        let long = q(&"x".repeat(4000));
        let variants: [(&str, Vec<(&str, &str)>); 8] = [
            ("plain", vec![]),
            ("aud=[orders]", vec![("aud", r#"["orders"]"#)]),
            ("aud=[billing,orders]", vec![("aud", r#"["billing","orders"]"#)]),
            ("aud=url", vec![("aud", r#""https://api.orders.test""#)]),
            (
                "extra claims",
                vec![("azp", r#""web""#), ("roles", r#"["a","b"]"#), ("ctx", r#"{"a":{"b":[1,2.5,null]}}"#)],
            ),
            ("4000-char claim", vec![("blob", long.as_str())]),
            ("no nbf/iat/jti/scope", vec![("nbf", DROP), ("iat", DROP), ("jti", DROP), ("scope", DROP)]),
            ("unicode sub", vec![("sub", r#""Zoë 用户 🎉""#)]),
        ];
        let keys = self.keys.clone();
        for key in [&keys.es, &keys.rs, &keys.ps, &keys.ed] {
            for (label, set) in &variants {
                let t = token(key, &[], set, now);
                self.add("valid", format!("{} {label}", key.alg), t);
            }
        }
    }

    pub(super) fn time(&mut self) {
        let s = SKEW;
        let cases: Vec<(String, Vec<(&'static str, i64)>)> = vec![
            (format!("exp=now-{}", s + 61), vec![("exp", -s - 61)]),
            (format!("exp=now-{}", s + 1), vec![("exp", -s - 1)]),
            (format!("exp=now-{s} (boundary)"), vec![("exp", -s)]),
            (format!("exp=now-{}", s - 1), vec![("exp", -s + 1)]),
            ("exp=now-1".into(), vec![("exp", -1)]),
            ("exp=now".into(), vec![("exp", 0)]),
            ("exp=now+1".into(), vec![("exp", 1)]),
            (format!("nbf=now+{}", s - 1), vec![("nbf", s - 1)]),
            (format!("nbf=now+{s} (boundary)"), vec![("nbf", s)]),
            (format!("nbf=now+{}", s + 1), vec![("nbf", s + 1)]),
            (format!("nbf=now+{}", s + 120), vec![("nbf", s + 120)]),
            ("nbf=now".into(), vec![("nbf", 0)]),
            ("iat=now+3600".into(), vec![("iat", 3600)]),
            ("iat=now-400d".into(), vec![("iat", -400 * 86400)]),
            ("iat>exp".into(), vec![("iat", 600)]),
            ("nbf>exp".into(), vec![("nbf", 400)]),
            ("exp=now+50y".into(), vec![("exp", 50 * 365 * 86400)]),
        ];
        for (label, offsets) in cases {
            for key in ["es", "rs"] {
                let keys = self.keys.clone();
                let offsets = offsets.clone();
                self.timed("time", format!("{key} {label}"), move |now| {
                    let k = if key == "es" { &keys.es } else { &keys.rs };
                    let vals: Vec<(&str, String)> = offsets.iter().map(|(n, o)| (*n, (now + o).to_string())).collect();
                    let set: Vec<(&str, &str)> = vals.iter().map(|(n, v)| (*n, v.as_str())).collect();
                    token(k, &[], &set, now)
                });
            }
        }
        // Absolute and odd-valued times (no dependence on the current second).
        let now = self.now;
        let fractions = [format!("{}.5", now + 300), format!("{}.999", now + 300), format!("{}.0", now + 300)];
        let fixed: Vec<(String, String)> = vec![
            ("exp=0".into(), "0".into()),
            ("exp=1".into(), "1".into()),
            ("exp=-1".into(), "-1".into()),
            ("exp=i64::MAX".into(), "9223372036854775807".into()),
            ("exp=u64::MAX".into(), "18446744073709551615".into()),
            ("exp=u64::MAX+1".into(), "18446744073709551616".into()),
            ("exp=253402300799 (9999-12-31)".into(), "253402300799".into()),
            ("exp=253402300800".into(), "253402300800".into()),
            ("exp=2.001e+206".into(), "2.001e+206".into()),
            ("exp=1e400".into(), "1e400".into()),
            ("exp=now+300.5".into(), fractions[0].clone()),
            ("exp=now+300.999".into(), fractions[1].clone()),
            ("exp=now+300.0".into(), fractions[2].clone()),
        ];
        for (label, v) in &fixed {
            let t = token(&self.keys.es, &[], &[("exp", v)], now);
            self.add("time", label.clone(), t);
        }
        for (label, field, v) in [
            ("nbf=i64::MAX", "nbf", "9223372036854775807"),
            ("nbf=-1", "nbf", "-1"),
            ("nbf=0", "nbf", "0"),
            ("iat=-1", "iat", "-1"),
            ("iat=0", "iat", "0"),
            ("iat=i64::MAX", "iat", "9223372036854775807"),
            ("iat=1e400", "iat", "1e400"),
            ("nbf=now-5.5", "nbf", "1.5"),
        ] {
            let t = token(&self.keys.es, &[], &[(field, v)], now);
            self.add("time", label, t);
        }
    }

    pub(super) fn claim_types(&mut self) {
        let now = self.now;
        let exp = (now + 300).to_string();
        let exp_str = q(&exp);
        let exp_arr = format!("[{exp}]");
        let odd: Vec<String> = vec![exp_str.clone(), "null".into(), "true".into(), "[]".into(), "{}".into(), exp_arr];
        for field in ["exp", "nbf", "iat"] {
            for v in &odd {
                let t = token(&self.keys.es, &[], &[(field, v)], now);
                self.add("claim-types", format!("{field}={v}"), t);
            }
        }
        let iss_arr = format!("[{}]", q(ISSUER));
        let cases: Vec<(&str, String)> = vec![
            ("iss", "123".into()),
            ("iss", "null".into()),
            ("iss", iss_arr),
            ("iss", "{}".into()),
            ("iss", "true".into()),
            ("sub", "123".into()),
            ("sub", "null".into()),
            ("sub", r#"["user-1"]"#.into()),
            ("sub", "{}".into()),
            ("jti", "123".into()),
            ("jti", "null".into()),
            ("jti", "[]".into()),
            ("aud", "123".into()),
            ("aud", "[123]".into()),
            ("aud", "[]".into()),
            ("aud", "null".into()),
            ("aud", "{}".into()),
            ("aud", "[null]".into()),
            ("aud", r#"["orders",123]"#.into()),
            ("aud", r#"[["orders"]]"#.into()),
            ("aud", "true".into()),
            ("scope", r#"["orders:read","profile"]"#.into()),
            ("scope", "123".into()),
            ("scope", "null".into()),
            ("scp", r#"["orders:read"]"#.into()),
            ("scp", r#""orders:read""#.into()),
            ("scp", "123".into()),
            ("scp", "[1]".into()),
            ("azp", "123".into()),
            ("sid", "[]".into()),
        ];
        for (field, v) in &cases {
            let t = token(&self.keys.es, &[], &[(field, v)], now);
            self.add("claim-types", format!("{field}={v}"), t);
        }
    }

    pub(super) fn iss_aud(&mut self) {
        let now = self.now;
        let iss: &[&str] = &[
            "https://issuer.test/",
            "https://issuer.test.evil",
            "https://issuer.tes",
            "https://ISSUER.test",
            "HTTPS://issuer.test",
            "http://issuer.test",
            "issuer.test",
            " https://issuer.test",
            "https://issuer.test ",
            "https://issuer.test\u{0}",
            "https://issuer.test#",
            "",
        ];
        for v in iss {
            let t = token(&self.keys.es, &[], &[("iss", &q(v))], now);
            self.add("iss-aud", format!("iss={v:?}"), t);
        }
        let aud: &[&str] = &[
            "billing",
            "orders/",
            "Orders",
            "orders ",
            "",
            "https://orders",
            "http://orders",
            "https://orders/",
            "api.orders.test",
            "https://api.orders.test/",
            "http://api.orders.test",
            "http://api.orders.test/",
            "https://api.orders.test//",
            "HTTPS://api.orders.test",
            "https://API.orders.test",
            "https://api.orders.test/x",
        ];
        for v in aud {
            let t = token(&self.keys.es, &[], &[("aud", &q(v))], now);
            self.add("iss-aud", format!("aud={v:?}"), t);
        }
        for (label, v) in [
            ("aud=[billing,https://api.orders.test/]", r#"["billing","https://api.orders.test/"]"#),
            ("aud=[orders,orders]", r#"["orders","orders"]"#),
            ("aud=[Orders,billing]", r#"["Orders","billing"]"#),
            ("aud=[\"\"]", r#"[""]"#),
        ] {
            let t = token(&self.keys.es, &[], &[("aud", v)], now);
            self.add("iss-aud", label, t);
        }
    }

    pub(super) fn missing_claims(&mut self) {
        let now = self.now;
        for field in ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope"] {
            let t = token(&self.keys.es, &[], &[(field, DROP)], now);
            self.add("missing-claims", format!("no {field}"), t);
        }
        let exp_only = format!(r#"{{"exp":{}}}"#, now + 300);
        let t = sign_raw(&self.keys.es, header(&self.keys.es, &[]).as_bytes(), exp_only.as_bytes());
        self.add("missing-claims", "only exp", t);
        let t = sign_raw(&self.keys.es, header(&self.keys.es, &[]).as_bytes(), b"{}");
        self.add("missing-claims", "empty claims", t);
        let t = token(&self.keys.es, &[], &[("iss", DROP), ("aud", DROP)], now);
        self.add("missing-claims", "no iss, no aud", t);
    }
}
