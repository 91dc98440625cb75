//! The request as the decision core reads it ([`RequestView`]): straight from Envoy's
//! header map during the hook ([`LiveRequest`], no copy), or copied for a decision that
//! has to finish on a module thread ([`OwnedRequest`]).
use hopauth::token::RequestView;

use crate::filter::RequestContext;

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

    /// A copy of every request header, for a module thread.
    pub fn copy(&self) -> OwnedRequest {
        let headers = self.ctx.headers().into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        OwnedRequest { headers, path: self.path.to_owned() }
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

/// Request headers copied out of Envoy (lowercase names, as Envoy keeps them).
#[derive(Debug, Clone)]
pub struct OwnedRequest {
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    path: String,
}

impl RequestView for OwnedRequest {
    fn header_values<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s [u8]> {
        let name = name.as_bytes().to_vec();
        self.headers.iter().filter(move |(k, _)| *k == name).map(|(_, v)| v.as_slice())
    }

    fn path(&self) -> &str {
        &self.path
    }
}
