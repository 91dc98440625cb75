//! Cases on the JSON: duplicates, nesting, unicode, numbers, syntax, random mutations.

use super::*;

impl Gen {
    pub(super) fn json_duplicates(&mut self) {
        let now = self.now;
        let keys = self.keys.clone();
        let es = &keys.es;
        let expired = (now - 3600).to_string();
        let valid_exp = (now + 300).to_string();
        let header_cases: Vec<(&str, Vec<(&str, String)>)> = vec![
            ("header alg twice, same", vec![("alg#", q("ES256"))]),
            ("header alg ES256 then none", vec![("alg#", q("none"))]),
            ("header kid twice", vec![("kid#", q("rs-1"))]),
            ("header kid twice, same", vec![("kid#", q("es-1"))]),
            ("header typ twice", vec![("typ#", q("at+jwt"))]),
        ];
        for (label, set) in &header_cases {
            let set: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let t = token(es, &set, &[], now);
            self.add("json-duplicates", *label, t);
        }
        let claim_cases: Vec<(&str, Vec<(&str, String)>)> = vec![
            ("sub twice, same", vec![("sub#", q("user-1"))]),
            ("sub user then admin", vec![("sub#", q("admin"))]),
            ("exp valid then expired", vec![("exp#", expired.clone())]),
            ("exp expired then valid", vec![("exp", expired.clone()), ("exp#", valid_exp.clone())]),
            ("iss evil then good", vec![("iss", q("https://evil.test")), ("iss#", q(ISSUER))]),
            ("iss good then evil", vec![("iss#", q("https://evil.test"))]),
            ("aud billing then orders", vec![("aud", q("billing")), ("aud#", q("orders"))]),
            ("aud orders then billing", vec![("aud#", q("billing"))]),
            ("nbf twice", vec![("nbf#", (now + 3600).to_string())]),
            ("jti twice", vec![("jti#", q("jti-2"))]),
            ("scope twice", vec![("scope#", q("admin"))]),
            ("nested duplicate", vec![("ctx", r#"{"a":1,"a":2}"#.into())]),
        ];
        for (label, set) in &claim_cases {
            let set: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let t = token(es, &[], &set, now);
            self.add("json-duplicates", *label, t);
        }
    }

    pub(super) fn json_nesting(&mut self) {
        let now = self.now;
        for depth in [5usize, 16, 31, 32, 33, 48, 49, 64, 99, 100, 101, 200, 1000] {
            let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
            let t = token(&self.keys.ed, &[], &[("deep", &objects)], now);
            self.add("json-nesting", format!("objects nested {depth}"), t);
            let arrays = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let t = token(&self.keys.ed, &[], &[("deep", &arrays)], now);
            self.add("json-nesting", format!("arrays nested {depth}"), t);
        }
        let t = token(&self.keys.ed, &[("ctx", &format!("{}1{}", r#"{"a":"#.repeat(40), "}".repeat(40)))], &[], now);
        self.add("json-nesting", "header member nested 40", t);
    }

    pub(super) fn json_unicode(&mut self) {
        let now = self.now;
        let keys = self.keys.clone();
        let es = &keys.es;
        let claim_cases: Vec<(&str, &str, &str)> = vec![
            ("iss with escaped slashes", "iss", r#""https:\/\/issuer.test""#),
            ("iss with \\u escapes", "iss", r#""\u0068ttps://issuer.\u0074est""#),
            ("aud with \\u escape", "aud", r#""\u006frders""#),
            ("sub with \\u0000", "sub", r#""user\u0000admin""#),
            ("sub with lone high surrogate", "sub", r#""\ud800""#),
            ("sub with lone low surrogate", "sub", r#""\udc00""#),
            ("sub with surrogate pair", "sub", r#""\ud83d\ude00""#),
            ("sub with bad escape", "sub", r#""\x41""#),
            ("sub with raw control char", "sub", "\"a\u{1}b\""),
            ("sub with raw newline", "sub", "\"a\nb\""),
            ("sub with RTL override", "sub", "\"user\u{202e}nimda\""),
            ("iss with zero-width space", "iss", "\"https://issuer.test\u{200b}\""),
            ("member name with \\u escape (\\u0065xp)", "\\u0065xp", "1"),
            ("scope with \\u0020", "scope", r#""orders:read\u0020admin""#),
        ];
        for (label, field, v) in &claim_cases {
            let t = token(es, &[], &[(field, v)], now);
            self.add("json-unicode", *label, t);
        }
        let h_cases: Vec<(&str, &str, &str)> = vec![
            ("alg with \\u escape", "alg", r#""\u0045S256""#),
            ("kid with \\u escape", "kid", r#""\u0065s-1""#),
            ("alg with trailing \\u0000", "alg", r#""ES256\u0000""#),
        ];
        for (label, field, v) in &h_cases {
            let t = token(es, &[(field, v)], &[], now);
            self.add("json-unicode", *label, t);
        }
        let h = header(es, &[]);
        let p = payload(now, &[]);
        let raw: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
            ("BOM before payload", h.clone().into_bytes(), [b"\xef\xbb\xbf".as_slice(), p.as_bytes()].concat()),
            ("BOM before header", [b"\xef\xbb\xbf".as_slice(), h.as_bytes()].concat(), p.clone().into_bytes()),
            ("payload in UTF-16LE", h.clone().into_bytes(), p.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()),
            (
                "payload in UTF-16LE with BOM",
                h.clone().into_bytes(),
                [vec![0xff, 0xfe], p.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()].concat(),
            ),
            ("U+FFFD in sub", h.clone().into_bytes(), p.replace("user-1", "user-\u{fffd}").into_bytes()),
            (
                "raw 0xff byte in sub",
                h.clone().into_bytes(),
                p.replace("user-1", "user-@")
                    .into_bytes()
                    .into_iter()
                    .map(|b| if b == b'@' { 0xff } else { b })
                    .collect(),
            ),
            ("overlong UTF-8 '/' in iss", h.clone().into_bytes(), {
                // "https:/" then 0xc0 0xaf (an overlong '/') instead of the second '/'.
                let idx = p.find("https://").unwrap() + 7;
                let mut bytes = p.clone().into_bytes();
                bytes.splice(idx..idx + 1, [0xc0, 0xaf]);
                bytes
            }),
            ("CESU-8 encoded emoji in sub", h.clone().into_bytes(), {
                let s = payload(now, &[("sub", "\"x@\"")]);
                s.into_bytes()
                    .into_iter()
                    .flat_map(|b| if b == b'@' { vec![0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80] } else { vec![b] })
                    .collect()
            }),
        ];
        for (label, hb, pb) in raw {
            let t = sign_raw(es, &hb, &pb);
            self.add("json-unicode", label, t);
        }
    }

    pub(super) fn json_numbers(&mut self) {
        let now = self.now;
        let exp = now + 300;
        let mantissa =
            format!("{}.{}", exp / 1_000_000_000, format!("{:09}", exp % 1_000_000_000).trim_end_matches('0'));
        let cases: Vec<(String, &str, String)> = vec![
            ("exp in exponent form (Xe0)".into(), "exp", format!("{exp}e0")),
            ("exp in exponent form (M.MMMe9)".into(), "exp", format!("{mantissa}e9")),
            ("exp as X.0e0".into(), "exp", format!("{exp}.0e0")),
            ("exp with leading +".into(), "exp", format!("+{exp}")),
            ("exp with leading 0".into(), "exp", format!("0{exp}")),
            ("exp as hex".into(), "exp", format!("0x{exp:x}")),
            ("exp as \"X\"".into(), "exp", q(&exp.to_string())),
            ("exp as \" X\"".into(), "exp", q(&format!(" {exp}"))),
            ("exp as NaN".into(), "exp", "NaN".into()),
            ("exp as Infinity".into(), "exp", "Infinity".into()),
            ("nbf as -0".into(), "nbf", "-0".into()),
            ("nbf as -0.0".into(), "nbf", "-0.0".into()),
            ("nbf as 1e-7".into(), "nbf", "1e-7".into()),
            ("nbf as \"0\"".into(), "nbf", q("0")),
            ("iat as \"X\"".into(), "iat", q(&now.to_string())),
            ("iat as 1.5".into(), "iat", "1.5".into()),
            ("exp with 400 digits".into(), "exp", format!("{exp}{}", "0".repeat(400))),
            ("exp with 400 fraction digits".into(), "exp", format!("{exp}.{}", "9".repeat(400))),
            ("aud as number-like string".into(), "aud", q("123")),
        ];
        for (label, field, v) in &cases {
            let t = token(&self.keys.es, &[], &[(field, v)], now);
            self.add("json-numbers", label.clone(), t);
        }
    }

    pub(super) fn json_syntax(&mut self) {
        let now = self.now;
        let keys = self.keys.clone();
        let es = &keys.es;
        let h = header(es, &[]);
        let p = payload(now, &[]);
        let cases: Vec<(&str, String, String)> = vec![
            ("whitespace around payload JSON", h.clone(), format!(" \n\t{p} \r\n")),
            ("whitespace inside payload JSON", h.clone(), p.replace(':', " : ").replace(',', " ,\n ")),
            ("trailing comma", h.clone(), format!("{},}}", &p[..p.len() - 1])),
            ("garbage after payload", h.clone(), format!("{p}x")),
            ("two payload objects", h.clone(), format!("{p}{p}")),
            ("NUL after payload", h.clone(), format!("{p}\u{0}")),
            ("comment in payload", h.clone(), p.replacen('{', "{/* c */", 1)),
            ("single-quoted strings", h.clone(), p.replace('"', "'")),
            ("unquoted member names", h.clone(), p.replace("\"sub\"", "sub")),
            ("payload is an array", h.clone(), format!("[{p}]")),
            ("payload is null", h.clone(), "null".into()),
            ("payload is a number", h.clone(), "1".into()),
            ("payload is a string", h.clone(), q(&p)),
            ("payload is empty", h.clone(), String::new()),
            ("payload truncated", h.clone(), p[..p.len() - 1].to_string()),
            ("header is an array", format!("[{h}]"), p.clone()),
            ("header is empty", String::new(), p.clone()),
            ("header truncated", h[..h.len() - 1].to_string(), p.clone()),
            ("garbage after header", format!("{h}x"), p.clone()),
            ("whitespace around header JSON", format!(" {h}\n"), p.clone()),
        ];
        for (label, hh, pp) in cases {
            let t = sign_raw(es, hh.as_bytes(), pp.as_bytes());
            self.add("json-syntax", label, t);
        }
    }

    /// Random byte mutations of valid tokens (signature not recomputed).
    pub(super) fn random_tokens(&mut self) {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ~!%";
        let valid = self.valid_tokens();
        for i in 0..RANDOM_TOKEN_MUTANTS {
            let base = &valid[self.rng.random_range(0..valid.len())];
            let mut bytes = base.as_bytes().to_vec();
            let ops = self.rng.random_range(1..=3);
            let mut what = Vec::new();
            for _ in 0..ops {
                let pos = self.rng.random_range(0..bytes.len());
                match self.rng.random_range(0..5) {
                    0 | 1 => {
                        bytes[pos] = ALPHABET[self.rng.random_range(0..ALPHABET.len())];
                        what.push(format!("set@{pos}"));
                    }
                    2 => {
                        bytes.insert(pos, ALPHABET[self.rng.random_range(0..ALPHABET.len())]);
                        what.push(format!("ins@{pos}"));
                    }
                    3 if bytes.len() > 1 => {
                        bytes.remove(pos);
                        what.push(format!("del@{pos}"));
                    }
                    _ => {
                        let end = (pos + self.rng.random_range(1..16)).min(bytes.len());
                        let chunk = bytes[pos..end].to_vec();
                        bytes.splice(pos..pos, chunk);
                        what.push(format!("dup@{pos}"));
                    }
                }
            }
            let t = String::from_utf8(bytes).expect("ASCII alphabet");
            self.add("random-token", format!("#{i} {}", what.join(",")), t);
        }
    }

    /// Random byte mutations of valid tokens' header or claims JSON, correctly re-signed:
    /// what each parser makes of odd JSON, past the signature.
    pub(super) fn random_json(&mut self) {
        const BYTES: &[u8] = b"{}[]\":,.-+0123456789eE \\/u\x00\x7f\xc3\xa9\xffabnrtflsx";
        let now = self.now;
        let keys = self.keys.clone();
        for i in 0..RANDOM_JSON_MUTANTS {
            let key = if i % 2 == 0 { &keys.ed } else { &keys.es };
            let mut h = header(key, &[]).into_bytes();
            let mut p = payload(now, &[]).into_bytes();
            let in_header = self.rng.random_range(0..4) == 0;
            let target = if in_header { &mut h } else { &mut p };
            let ops = self.rng.random_range(1..=2);
            let mut what = Vec::new();
            for _ in 0..ops {
                let pos = self.rng.random_range(0..target.len());
                let b = BYTES[self.rng.random_range(0..BYTES.len())];
                match self.rng.random_range(0..3) {
                    0 => target[pos] = b,
                    1 => target.insert(pos, b),
                    _ if target.len() > 1 => {
                        target.remove(pos);
                    }
                    _ => {}
                }
                what.push(format!("{}@{pos}={b:#04x}", if in_header { "h" } else { "p" }));
            }
            let t = sign_raw(key, &h, &p);
            self.add("random-json", format!("#{i} {} {}", key.alg, what.join(",")), t);
        }
    }
}
