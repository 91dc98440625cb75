//! The `CLUSTER NODES` reply parser (which masters to track, and whether every slot has a
//! healthy one) on arbitrary text: a Redis node, or anything posing as one, writes it.
//!
//! Properties: never a panic (numbers at any size); the slot count is the number of
//! distinct slots 0..16384 that healthy masters serve, computed here independently, so
//! overlapping, reversed or out-of-range ranges can never add up to "every slot served";
//! the masters are exactly the healthy master lines with an address, sorted.
#![no_main]

use hopauth::revocation::redis::parse_cluster_nodes;
use libfuzzer_sys::fuzz_target;

const SLOTS: usize = 16384;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (masters, covered) = parse_cluster_nodes(text);
    let (want_masters, want_covered) = model(text);
    assert_eq!(masters, want_masters);
    assert_eq!(covered, want_covered, "slot count");
    assert!(covered <= SLOTS);
});

/// The same reading, written plainly: a bitmap of slots.
fn model(text: &str) -> (Vec<(String, u16)>, usize) {
    let mut slots = vec![false; SLOTS];
    let mut masters = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let flags: Vec<&str> = f[2].split(',').collect();
        if !flags.contains(&"master") || f[2].contains("fail") || f[2].contains("noaddr") {
            continue;
        }
        let hostport = f[1].split('@').next().unwrap_or_default();
        let Some((host, port)) = hostport.rsplit_once(':') else { continue };
        let Ok(port) = port.parse::<u16>() else { continue };
        masters.push((if host.is_empty() { "127.0.0.1".to_string() } else { host.to_string() }, port));
        for r in f.iter().skip(8).filter(|r| !r.starts_with('[')) {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                if a <= b && b < SLOTS {
                    slots[a..=b].iter_mut().for_each(|s| *s = true);
                }
            }
        }
    }
    masters.sort();
    (masters, slots.iter().filter(|s| **s).count())
}
