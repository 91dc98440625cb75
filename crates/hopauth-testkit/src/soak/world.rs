//! The shared world of one run: the state, the counters, and the oracle that judges each answer.

use super::*;

pub(super) struct World {
    pub(super) opts: Options,
    pub(super) t0: Instant,
    pub(super) state: Mutex<State>,
    pub(super) counts: Mutex<Counts>,
    pub(super) stop: AtomicBool,
    pub(super) envoy_port: u16,
    pub(super) http_port: u16,
    pub(super) redis_url: String,
    pub(super) revocation_latency_faults: Mutex<Latencies>,
    pub(super) revocation_latency_calm: Mutex<Latencies>,
    /// Write acknowledged → first answer that was not a 200 (a 503 while the store is
    /// being resynced counts: the token no longer passes).
    pub(super) refusal_latency_faults: Mutex<Latencies>,
    pub(super) revocation_retries: Mutex<u64>,
    pub(super) not_enforced: Mutex<u64>,
    pub(super) revocations: Mutex<u64>,
}

impl World {
    pub(super) fn at(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.t0).as_secs_f64()
    }

    pub(super) fn revoke_bound(&self) -> Duration {
        self.opts.max_staleness + GRACE
    }

    pub(super) fn key_bound(&self) -> Duration {
        self.opts.jwks_refresh + GRACE * 2
    }

    pub(super) fn pick(&self) -> (Sent, Option<String>, &'static str) {
        let state = self.state.lock().unwrap();
        let mut rng = rand::rng();
        let roll: f64 = rng.random();
        let among = |pred: &dyn Fn(&Tok) -> bool, rng: &mut rand::rngs::ThreadRng| -> Option<usize> {
            let v: Vec<usize> = (0..state.toks.len()).filter(|&i| pred(&state.toks[i])).collect();
            v.choose(rng).copied()
        };
        let live = |t: &Tok| t.revoked.is_none() && state.providers[t.provider].keys[t.key].withdrawn.is_none();
        // 60 % valid, 8 % revoked, 5 % withdrawn key, 4 % valid on the scope route, 23 % invalid.
        let (tok, admin_route) = if roll < 0.60 {
            (among(&live, &mut rng), false)
        } else if roll < 0.68 {
            (among(&|t| t.revoked.is_some(), &mut rng), false)
        } else if roll < 0.73 {
            (among(&|t| state.providers[t.provider].keys[t.key].withdrawn.is_some(), &mut rng), false)
        } else if roll < 0.77 {
            (among(&live, &mut rng), true)
        } else {
            (None, false)
        };
        match tok {
            Some(t) => {
                let path = if admin_route { "/admin/soak" } else { "/soak" };
                (Sent::Valid { tok: t, admin_route }, Some(state.toks[t].auth.clone()), path)
            }
            None => {
                let idx = rng.random_range(0..state.invalid.len());
                (Sent::Invalid { idx }, state.invalid[idx].auth.clone(), "/soak")
            }
        }
    }

    /// Judges one answer (or its absence) against the oracle.
    pub(super) fn judge(&self, sent: &Sent, result: Option<&Response>, t_send: Instant, t_recv: Instant) {
        let state = self.state.lock().unwrap();
        let mut c = self.counts.lock().unwrap();
        c.requests += 1;
        let at = self.at(t_send);
        let Some(r) = result else {
            c.unanswered += 1;
            c.example(format!("{at:.1}s: no answer within {:?}", self.opts.request_timeout));
            return;
        };
        *c.by_status.entry(r.status).or_default() += 1;
        let body = r.body_text();
        let may_503 = r.status == 503 && state.windows.may_503(t_send, t_recv);
        match sent {
            Sent::Invalid { idx } => {
                let inv = &state.invalid[*idx];
                if r.status == inv.want {
                    c.correct += 1;
                } else if r.status == 200 {
                    c.wrong_allows += 1;
                    c.example(format!("{at:.1}s: WRONG ALLOW of {}", inv.what));
                } else if may_503 {
                    c.accepted_503 += 1;
                } else {
                    self.refusal(&mut c, &state, r, &body, t_send, t_recv, inv.what, true);
                }
            }
            Sent::Valid { tok, admin_route } => {
                let t = &state.toks[*tok];
                let key = &state.providers[t.provider].keys[t.key];
                let pass = if *admin_route { 403 } else { 200 };
                // Must refuse: revoked (acknowledged) or key withdrawn, past the bound.
                let revoked_due = t.revoked.and_then(|r| r.done).is_some_and(|d| t_send > d + self.revoke_bound());
                let withdrawn_due = key.withdrawn.is_some_and(|w| t_send > w + self.key_bound());
                // May refuse (401): the revocation or withdrawal had begun when the answer came.
                let revoked_begun = t.revoked.is_some_and(|r| t_recv >= r.first_attempt);
                let withdrawn_begun = key.withdrawn.is_some_and(|w| t_recv >= w);
                let new_key = t_send < key.published + self.key_bound();
                if r.status == 200 {
                    if *admin_route {
                        c.wrong_allows += 1;
                        c.example(format!("{at:.1}s: WRONG ALLOW on the scope route"));
                    } else if !r.upstream_saw_sub(&t.sub) {
                        c.wrong_allows += 1;
                        c.example(format!("{at:.1}s: WRONG IDENTITY, want {}", t.sub));
                    } else if withdrawn_due && !revoked_due {
                        // Counted apart whether strict or not, so the report tells them from
                        // revoked tokens allowed.
                        c.withdrawn_key_allows += 1;
                        if self.opts.strict_withdrawal {
                            c.wrong_allows += 1;
                        }
                        c.example(format!("{at:.1}s: withdrawn key still accepted for {}", t.sub));
                    } else if revoked_due || withdrawn_due {
                        c.wrong_allows += 1;
                        c.example(format!(
                            "{at:.1}s: WRONG ALLOW of {} ({})",
                            t.sub,
                            if revoked_due {
                                format!("revoked {:?}", t.revoked.unwrap().how)
                            } else {
                                "withdrawn key".into()
                            }
                        ));
                    } else if revoked_begun {
                        c.lag_allows += 1;
                    } else if withdrawn_begun {
                        c.key_lag += 1;
                    } else {
                        c.correct += 1;
                    }
                } else if (r.status == pass && !revoked_due && !withdrawn_due)
                    || (r.status == 401 && (revoked_begun || withdrawn_begun))
                {
                    c.correct += 1;
                } else if r.status == 401 && new_key {
                    // A token of a key published moments ago, before hopauth fetched it.
                    c.key_lag += 1;
                } else if r.status == 403 && (revoked_due || withdrawn_due) && *admin_route {
                    c.wrong_allows += 1;
                    c.example(format!("{at:.1}s: revoked/withdrawn token passed authentication on the scope route"));
                } else if may_503 {
                    c.accepted_503 += 1;
                } else {
                    self.refusal(&mut c, &state, r, &body, t_send, t_recv, "valid token", false);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn refusal(
        &self,
        c: &mut Counts,
        state: &State,
        r: &Response,
        body: &str,
        t_send: Instant,
        t_recv: Instant,
        what: &str,
        invalid: bool,
    ) {
        let at = self.at(t_send);
        let short = &body[..body.len().min(160)];
        if state.windows.blip(t_send, t_recv) && r.status == 503 && !self.opts.strict_blips {
            c.blip_refusals += 1;
        } else if r.status == 503 && envoy_503(body) && !state.windows.any(t_send, t_recv) {
            c.envoy_503_outside_windows += 1;
            c.example(format!("{at:.1}s: Envoy 503 (no window) for {what}"));
        } else if invalid && r.status != 503 {
            c.wrong_refusal_kind += 1;
            c.example(format!("{at:.1}s: {what} got {} {short}", r.status));
        } else {
            c.wrong_refusals += 1;
            // The windows of the last 10 s, to tell what the refusal followed.
            let recent: Vec<String> = state
                .windows
                .0
                .iter()
                .filter(|w| w.overlaps(t_send - Duration::from_secs(10), t_recv))
                .map(|w| format!("{} at {:.1}s", w.what, self.at(w.start)))
                .collect();
            c.example(format!("{at:.1}s: WRONG REFUSAL of {what}: {} {short} (after {recent:?})", r.status));
        }
    }

    pub(super) fn open_window(&self, what: String, ok_503_after: Option<Duration>, redis: bool) -> usize {
        let start = Instant::now();
        let mut s = self.state.lock().unwrap();
        s.windows.0.push(Window { what, start, end: None, ok_503_from: ok_503_after.map(|d| start + d), redis });
        s.windows.0.len() - 1
    }

    pub(super) fn close_window(&self, i: usize) {
        self.state.lock().unwrap().windows.0[i].end = Some(Instant::now());
    }
}
