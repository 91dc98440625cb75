//! The request as the decision core reads it ([`RequestView`]): Envoy's request headers,
//! listed with one call per hook and read in place, no copy. A held request is listed again
//! when it resumes.
use hopauth_core::token::RequestView;

use crate::ffi::{HeaderList, RequestContext};

/// The request headers of the current hook.
pub struct LiveRequest<'a> {
    headers: HeaderList<'a>,
    path: &'a str,
}

impl<'a> LiveRequest<'a> {
    /// A view of `ctx`'s request headers.
    pub fn new(ctx: &'a RequestContext<'_>) -> Self {
        let headers = ctx.headers();
        let path = headers.values(":path").next().and_then(|p| std::str::from_utf8(p).ok()).unwrap_or("");
        Self { headers, path }
    }

    /// Whether the client sent header `name`.
    pub fn has(&self, name: &str) -> bool {
        self.headers.contains(name)
    }
}

impl RequestView for LiveRequest<'_> {
    fn header_values<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s [u8]> {
        self.headers.values(name)
    }

    fn path(&self) -> &str {
        self.path
    }
}
