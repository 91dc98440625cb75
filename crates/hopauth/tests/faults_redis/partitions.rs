//! F8: half-open connections and partitions, short and long.

use super::*;

/// F8, short: the connection goes half-open (nothing forwarded, sockets open) for a third
/// of `max_staleness`. The heartbeat notices; answers continue from the view; a revocation
/// written meanwhile is enforced once the path heals; known revocations hold throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f8_half_open_shorter_than_max_staleness_is_invisible_and_misses_nothing() {
    let max_staleness = Duration::from_secs(4);
    let f = Fixture::start(&[("4s", "deny")]).await;
    let svc = f.svc(0);
    let (valid, _) = token_and_key(&f.keys, "valid");
    let (known, known_key) = token_and_key(&f.keys, "known");
    f.revoke_direct(&known_key);
    let mut seen = BTreeMap::new();
    wait_status(&svc, &known, 401, ENFORCE_WITHIN, "known revocation", &mut seen).await;
    let guard = Guard::start(vec![f.svc(0)], valid.clone());
    guard.revoked(&known);

    let (x, x_key) = token_and_key(&f.keys, "x");
    assert_eq!(check_status(&svc, &x).await, 200);
    let fault = Instant::now();
    f.proxy.set_stalled(true);
    f.revoke_direct(&x_key);
    // The heartbeat (a quarter of max_staleness, plus the command timeout) sees it, and
    // hopauth opens a new connection.
    let accepted = f.proxy.accepted();
    wait_for("the heartbeat to notice the half-open link", max_staleness, || f.proxy.accepted() > accepted).await;
    let detected = fault.elapsed();
    tokio::time::sleep_until(tokio::time::Instant::from_std(fault + max_staleness / 3)).await;
    let healed = Instant::now();
    f.proxy.heal();
    let took = wait_status(&svc, &x, 401, ENFORCE_WITHIN, "revocation written while half-open", &mut seen).await;
    guard.revoked(&x);
    eprintln!(
        "F8 half-open for {:?}: detected after {detected:?}; revocation written meanwhile enforced {took:?} after healing",
        healed - fault
    );
    assert!(detected < max_staleness, "heartbeat detection took {detected:?}");
    wait_status(&svc, &valid, 200, ENFORCE_WITHIN, "valid after heal", &mut seen).await;
    let (wrong, _, valid_seen) = guard.finish().await;
    assert_eq!(wrong, 0, "a revoked token was allowed");
    assert!(!valid_seen.contains_key(&401), "{valid_seen:?}");
    // docs/revocation.md: a loss shorter than max_staleness is invisible to clients.
    assert!(
        !valid_seen.contains_key(&503) && !seen.contains_key(&503),
        "a {:?} half-open link (max_staleness {max_staleness:?}) was visible: valid token {valid_seen:?}",
        healed - fault
    );
}

/// How the path to Redis breaks in the long-outage tests.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// Open connections stall and new ones hang (a network partition).
    Partition,
    /// Every connection is reset and new ones are refused (Redis down, port closed).
    Refused,
}

impl Outage {
    fn apply(self, proxy: &FaultProxy) {
        match self {
            Outage::Partition => proxy.partition(),
            Outage::Refused => {
                proxy.set_refuse(true);
                proxy.reset_all();
            }
        }
    }
}

/// F8, long: a partition (open connections stall, new ones hang) outlasting
/// `max_staleness`. Until then answers continue; past it, deny mode answers 503
/// `revocation_unavailable` and allow mode lets verified tokens through, counted in
/// `hopauth_revocation_fail_open_total`. Known revocations hold in both; a revocation
/// written during the partition is enforced by both once it heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f8_partition_past_max_staleness_applies_failure_mode_and_heals_with_what_was_missed() {
    outage_past_max_staleness(Outage::Partition).await;
}

/// F8, long, Redis refusing connections (the server down): the same contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f8_refused_connections_past_max_staleness_apply_failure_mode() {
    outage_past_max_staleness(Outage::Refused).await;
}

async fn outage_past_max_staleness(outage: Outage) {
    let max_staleness = Duration::from_secs(2);
    let heartbeat = max_staleness / 4;
    let f = Fixture::start(&[("2s", "deny"), ("2s", "allow")]).await;
    let (deny, allow) = (f.svc(0), f.svc(1));
    let (valid, _) = token_and_key(&f.keys, "valid");
    let (known, known_key) = token_and_key(&f.keys, "known");
    f.revoke_direct(&known_key);
    let mut seen = BTreeMap::new();
    wait_status(&deny, &known, 401, ENFORCE_WITHIN, "known revocation (deny)", &mut seen).await;
    wait_status(&allow, &known, 401, ENFORCE_WITHIN, "known revocation (allow)", &mut seen).await;
    let guard = Guard::start(vec![f.svc(0), f.svc(1)], valid.clone());
    guard.revoked(&known);

    let (x, x_key) = token_and_key(&f.keys, "x");
    outage.apply(&f.proxy);
    f.revoke_direct(&x_key);
    let mut before_503 = BTreeMap::new();
    let to_503 =
        wait_status(&deny, &valid, 503, max_staleness * 4, "deny mode past max_staleness", &mut before_503).await;
    let r = deny.check_request(&bearer_check(&valid)).await;
    assert_eq!(r.status.as_ref().map(|s| s.message.as_str()), Some("revocation_unavailable"), "{r:?}");
    let Some(HttpResponse::DeniedResponse(d)) = r.http_response else { panic!("{r:?}") };
    let body: Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    // The allow instance's last confirmation may be up to a heartbeat later than the other's.
    let end = Instant::now() + max_staleness * 2;
    while f.metric(1, "hopauth_revocation_fail_open_total") == 0.0 {
        assert_eq!(check_status(&allow, &valid).await, 200, "allow mode lets verified tokens through");
        assert!(Instant::now() < end, "allow-mode passes past max_staleness are not counted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(f.metric(0, "hopauth_revocation_fail_open_total"), 0.0);
    for svc in [&deny, &allow] {
        assert_eq!(check_status(svc, &known).await, 401, "a known revocation holds past max_staleness");
    }
    assert!(!f.instances[0].authorizer.ready());
    let allow_ready_when_stale = f.instances[1].authorizer.ready();

    let healed = Instant::now();
    f.proxy.heal();
    wait_status(&deny, &x, 401, ENFORCE_WITHIN, "missed revocation (deny)", &mut seen).await;
    let enforce_deny = healed.elapsed();
    wait_status(&allow, &x, 401, ENFORCE_WITHIN, "missed revocation (allow)", &mut seen).await;
    let enforce_allow = healed.elapsed();
    guard.revoked(&x);
    wait_status(&deny, &valid, 200, ENFORCE_WITHIN, "deny mode recovers", &mut seen).await;
    let valid_again = healed.elapsed();
    eprintln!(
        "F8 {outage:?}: first 503 {to_503:?} after the fault (max_staleness {max_staleness:?}); after healing: \
         missed revocation enforced within {enforce_deny:?} (deny) / {enforce_allow:?} (allow), \
         valid allowed again within {valid_again:?}"
    );
    let (wrong, checks, valid_seen) = guard.finish().await;
    eprintln!("F8 {outage:?} guard: {checks} checks of revoked tokens; valid token answers {valid_seen:?}");
    assert_eq!(wrong, 0, "a revoked token was allowed during the partition");
    assert!(!valid_seen.contains_key(&401) && !before_503.contains_key(&401), "{valid_seen:?}");
    assert!(to_503 < max_staleness + Duration::from_secs(3), "failure_mode applied only after {to_503:?}");
    // docs/configuration.md (readiness): with failure_mode allow, a stale store never
    // makes hopauth unready.
    assert!(allow_ready_when_stale, "allow mode went unready when the store went stale");
    // docs/revocation.md: answers continue from the view for max_staleness after the last
    // confirmation, which is about one heartbeat before the fault (300 ms of slack for a
    // late tick on a loaded machine).
    assert!(
        to_503 + heartbeat + Duration::from_millis(300) >= max_staleness,
        "503 after {to_503:?}, before max_staleness {max_staleness:?} had passed"
    );
}
