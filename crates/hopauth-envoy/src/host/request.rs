//! The request as the decision core reads it ([`RequestView`]): straight from Envoy's
//! header map during the hook, no copy. A held request is read again the same way when
//! it resumes.
use hopauth_core::token::RequestView;

use crate::ffi::RequestContext;

/// The request headers of the current hook, read in place.
pub struct LiveRequest<'a, 'hook> {
    ctx: &'a RequestContext<'hook>,
    path: &'a str,
}

impl<'a, 'hook> LiveRequest<'a, 'hook> {
    /// A view of `ctx`'s request headers; the `:path` is read once.
    pub fn new(ctx: &'a RequestContext<'hook>) -> Self {
        let path = ctx.first_header(":path").and_then(|p| std::str::from_utf8(p).ok()).unwrap_or("");
        Self { ctx, path }
    }
}

impl RequestView for LiveRequest<'_, '_> {
    fn header_values<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s [u8]> {
        self.ctx.header(name)
    }

    fn path(&self) -> &str {
        self.path
    }
}
