//! What a local view holds, listed a page at a time in one stable order (jti entries by
//! jti, then subject entries by issuer and subject), for the admin API. A page names the
//! last key it holds; the next page starts after it, so entries written or removed
//! meanwhile never shift a page.

/// Where an entry sorts: every jti before every subject.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ListKey {
    Jti(String),
    Subject { iss: String, sub: String },
}

/// One live revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: ListKey,
    /// Subject entries: tokens issued at or before this (unix seconds) are revoked.
    pub before: Option<i64>,
    /// Unix seconds after which the entry is gone.
    pub until: i64,
}

/// A page of entries and whether more follow it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<Listed>,
    pub more: bool,
}

/// The longest page the admin API serves.
pub const MAX_PAGE: usize = 1000;
