//! Cases on the encoding: base64url variants, segments, signatures.

use super::*;

impl Gen {
    pub(super) fn encoding(&mut self) {
        let now = self.now;
        let keys = self.keys.clone();
        for key in [&keys.es, &keys.rs, &keys.ps, &keys.ed] {
            let alg = key.alg;
            let h = header(key, &[]);
            // A payload whose base64url has '-' and '_' and a length that leaves unused bits.
            let p = payload(now, &[("x", r#""~~~???>>>""#)]);
            let (hs, ps) = (b64(&h), b64(&p));
            let good = sign_segments(key, &hs, &ps);
            let sig = good.rsplit_once('.').unwrap().1.to_string();
            let mut out: Vec<(String, String)> = Vec::new();
            // Padding, signed over the padded segments (the signature is valid for those bytes).
            let hp = URL_SAFE.encode(&h);
            let pp = URL_SAFE.encode(&p);
            if hp != hs {
                out.push(("padded header, signed".into(), sign_segments(key, &hp, &ps)));
            }
            if pp != ps {
                out.push(("padded payload, signed".into(), sign_segments(key, &hs, &pp)));
            }
            out.push(("padded signature".into(), format!("{hs}.{ps}.{}", URL_SAFE.encode(sig_of(&good)))));
            out.push(("signature + '='".into(), format!("{good}=")));
            out.push(("signature + '=='".into(), format!("{good}==")));
            // Non-canonical trailing bits.
            if let Some(n) = noncanonical(&hs) {
                out.push(("non-canonical header bits, signed".into(), sign_segments(key, &n, &ps)));
            }
            if let Some(n) = noncanonical(&ps) {
                out.push(("non-canonical payload bits, signed".into(), sign_segments(key, &hs, &n)));
            }
            if let Some(n) = noncanonical(&sig) {
                out.push(("non-canonical signature bits".into(), format!("{hs}.{ps}.{n}")));
            }
            // Standard alphabet.
            let std_p = STANDARD.encode(&p).trim_end_matches('=').to_string();
            if std_p != ps {
                out.push(("payload in standard base64 (+/), signed".into(), sign_segments(key, &hs, &std_p)));
            }
            let std_sig = STANDARD.encode(sig_of(&good)).trim_end_matches('=').to_string();
            if std_sig != sig {
                out.push(("signature in standard base64 (+/)".into(), format!("{hs}.{ps}.{std_sig}")));
            }
            // Whitespace.
            out.push(("space before token".into(), format!(" {good}")));
            out.push(("tab before token".into(), format!("\t{good}")));
            out.push(("space inside header".into(), format!("{} {}", &good[..5], &good[5..])));
            out.push(("space before '.'".into(), format!("{hs} .{ps}.{sig}")));
            out.push(("space after '.'".into(), format!("{hs}. {ps}.{sig}")));
            out.push(("space inside signature".into(), format!("{hs}.{ps}.{} {}", &sig[..10], &sig[10..])));
            out.push(("trailing space + junk".into(), format!("{good} x")));
            out.push(("percent-encoded dot".into(), format!("{hs}%2E{ps}.{sig}")));
            out.push((
                "header segment signed with padding chars inside".into(),
                sign_segments(key, &format!("{hs}=="), &ps),
            ));
            for (label, t) in out {
                self.add("encoding", format!("{alg} {label}"), t);
            }
        }
    }

    pub(super) fn segments(&mut self) {
        let now = self.now;
        let good = token(&self.keys.es, &[], &[], now);
        let mut parts = good.split('.');
        let (h, p, s) =
            (parts.next().unwrap().to_string(), parts.next().unwrap().to_string(), parts.next().unwrap().to_string());
        let jwe_h = b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM","kid":"rs-1"}"#);
        let json_serialized = format!(r#"{{"payload":"{p}","protected":"{h}","signature":"{s}"}}"#);
        let cases: Vec<(&str, String)> = vec![
            ("a", "a".into()),
            ("a.b", "a.b".into()),
            ("h.p", format!("{h}.{p}")),
            ("h.p.", format!("{h}.{p}.")),
            (".p.s", format!(".{p}.{s}")),
            ("h..s", format!("{h}..{s}")),
            ("..", "..".into()),
            ("h.p.s.", format!("{h}.{p}.{s}.")),
            ("h.p.s.x", format!("{h}.{p}.{s}.x")),
            (".h.p.s", format!(".{h}.{p}.{s}")),
            ("h.p.s.h.p (5 segments)", format!("{h}.{p}.{s}.{h}.{p}")),
            ("JWE-shaped 5 segments", format!("{jwe_h}.{p}.{s}.{p}.{s}")),
            ("h.p.p.s", format!("{h}.{p}.{p}.{s}")),
            ("JSON serialization", json_serialized),
            ("h.p.s with sig from h.p.s of another token", {
                let other = token(&self.keys.es, &[], &[("sub", r#""admin""#)], now);
                format!("{h}.{p}.{}", other.rsplit_once('.').unwrap().1)
            }),
            ("header of another token", {
                let other = token(&self.keys.es, &[("typ", DROP)], &[], now);
                format!("{}.{p}.{s}", other.split('.').next().unwrap())
            }),
        ];
        for (label, t) in cases {
            self.add("segments", label, t);
        }
    }

    pub(super) fn signature(&mut self) {
        let now = self.now;
        let keys = self.keys.clone();
        for key in [&keys.es, &keys.rs, &keys.ps, &keys.ed] {
            let alg = key.alg;
            let good = token(key, &[], &[("sub", r#""sig-target""#)], now);
            let sig = sig_of(&good);
            let bits = sig.len() * 8;
            let mut out: Vec<(String, String)> = Vec::new();
            for _ in 0..48 {
                let bit = self.rng.random_range(0..bits);
                let mut m = sig.clone();
                m[bit / 8] ^= 1 << (bit % 8);
                out.push((format!("flip bit {bit}"), with_sig(&good, &m)));
            }
            for cut in [1, 2, 3, 8, sig.len() / 2, sig.len() - 1] {
                out.push((format!("truncated by {cut} bytes"), with_sig(&good, &sig[..sig.len() - cut])));
            }
            for extra in [&[0u8][..], &[0, 0], &[0xff], &[1, 2, 3, 4]] {
                let mut m = sig.clone();
                m.extend_from_slice(extra);
                out.push((format!("appended {extra:?}"), with_sig(&good, &m)));
                let mut m = extra.to_vec();
                m.extend_from_slice(&sig);
                out.push((format!("prepended {extra:?}"), with_sig(&good, &m)));
            }
            for suffix in ["!!!!", "A", "AA", "AAAA", "_"] {
                out.push((format!("'{suffix}' appended to the segment"), format!("{good}{suffix}")));
            }
            out.push(("all-zero signature".into(), with_sig(&good, &vec![0; sig.len()])));
            out.push(("all-0xff signature".into(), with_sig(&good, &vec![0xff; sig.len()])));
            out.push(("empty signature".into(), with_sig(&good, &[])));
            out.push(("one-byte signature".into(), with_sig(&good, &[0])));
            let other = token(key, &[], &[("sub", r#""someone-else""#)], now);
            out.push(("signature of another token".into(), with_sig(&good, &sig_of(&other))));
            match alg {
                Alg::ES256 => {
                    let (r, s) = sig.split_at(32);
                    // High-S twin: (r, n - s) verifies as well (ECDSA malleability).
                    let high = [r, &sub_be(&P256_N, s)].concat();
                    out.push(("ES256 (r, n-s) twin".into(), with_sig(&good, &high)));
                    let n_minus_1 = sub_be(&P256_N, &[[0u8; 31].as_slice(), &[1]].concat());
                    for (what, rr, ss) in [
                        ("r=0,s=0", vec![0u8; 32], vec![0u8; 32]),
                        ("r=n,s=n", P256_N.to_vec(), P256_N.to_vec()),
                        ("r=n-1,s=n-1", n_minus_1.clone(), n_minus_1.clone()),
                        ("s=0", r.to_vec(), vec![0u8; 32]),
                        ("s=n", r.to_vec(), P256_N.to_vec()),
                        ("r=r+n overflow", P256_N.to_vec(), s.to_vec()),
                    ] {
                        out.push((format!("ES256 {what}"), with_sig(&good, &[rr, ss].concat())));
                    }
                    // DER instead of r‖s.
                    let der = der_ecdsa(r, s);
                    out.push(("ES256 DER-encoded".into(), with_sig(&good, &der)));
                }
                Alg::EdDSA => {
                    let (r, s) = sig.split_at(32);
                    let s_plus_l = add_le(s, &ED25519_L);
                    out.push(("Ed25519 S+L (non-canonical S)".into(), with_sig(&good, &[r, &s_plus_l].concat())));
                    out.push(("Ed25519 S=L".into(), with_sig(&good, &[r, &ED25519_L].concat())));
                    out.push(("Ed25519 63 bytes".into(), with_sig(&good, &sig[..63])));
                    out.push(("Ed25519 65 bytes".into(), with_sig(&good, &[sig.as_slice(), &[0]].concat())));
                }
                _ => {
                    out.push(("RSA signature as a number + 0 leading byte stripped".into(), {
                        let stripped: Vec<u8> = sig.iter().copied().skip_while(|&b| b == 0).collect();
                        with_sig(&good, &stripped[1..])
                    }));
                }
            }
            for (label, t) in out {
                self.add("signature", format!("{alg} {label}"), t);
            }
        }
    }
}
