//! hopauth's decision core: everything that decides whether a request's JWT passes, and
//! nothing that moves bytes over a wire. Hosts (the ext_authz sidecar in `hopauth`, the
//! Envoy dynamic module in `hopauth-envoy`) bring the I/O: fetching keys, syncing
//! revocations, rendering the answer, recording metrics.
//!
//! - [`alg`]: the JWS algorithms and the key family each needs.
//! - [`token`]: finding the one token in a request (header, cookie, query).
//! - [`jws`]: strict parsing of a compact JWS and its claims.
//! - [`keys`]: a provider's key set: parsed keys, their generation, staleness, and the
//!   unknown-`kid` refetch policy (the fetching itself is the host's).
//! - [`verify`]: signature and claims checks; the verified-token cache.
//! - [`policy`]: per-route requirements (`hopauth.*` keys).
//! - [`revocation`]: the revocation store seam, the local view, the memory backend and the
//!   Redis key layout every writer shares.
//! - [`decision`]: `Decision`, `DenyReason` and the verified identity.
//! - [`authorizer`]: the decision path tying the above together, callable without a runtime.
//! - [`render`]: the seam through which a host pre-renders a verified token's answer.
//! - [`observe`]: the seam through which a host records decisions (metrics, spans).
//! - [`clock`]: the one place the core reads the time.
//! - [`sign`]: signing JWTs (reference issuer, tests, benchmarks).

pub mod alg;
pub mod authorizer;
pub mod clock;
pub mod decision;
pub mod jws;
pub mod keys;
pub mod observe;
pub mod policy;
pub mod render;
pub mod revocation;
pub mod sign;
pub mod token;
pub mod verify;
