//! The sidecar's revocation backends beyond the core's memory store: Redis, whose sync
//! keeps a complete local view current (the core's `RevocationStore` seam and layout).

pub mod redis;
