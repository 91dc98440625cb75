//! The decision core serving now, swapped whole by a config reload (`reload`): every Check
//! and admin call takes the current one when it starts and finishes on it, so a reload never
//! changes a decision half way, and the old core lives until its last caller is done.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

use hopauth_core::authorizer::Authorizer;
use hopauth_core::render::Renderer;

use crate::assemble::Core;
use crate::observer::SidecarObserver;
use crate::render::{self, CheckResponses};

/// The sidecar's decision core with the JWKS refreshers and store that keep it current.
pub type SidecarCore = Core<CheckResponses, SidecarObserver>;

/// What one config gives the listeners: its core, the anonymous allow rendered for its
/// identity headers, and the admin token named by its `admin.token_env`. `R` is the
/// renderer its verified-token cache keeps answers with: the sidecar's ext_authz
/// responses, or another host's own (the Envoy module's header edits).
pub struct Serving<R: Renderer = CheckResponses> {
    pub core: Core<R, SidecarObserver>,
    pub anonymous: Bytes,
    /// Bearer token for `/admin/*`; `None` turns the admin API off (every call 401).
    pub admin_token: Option<Arc<str>>,
}

impl<R: Renderer> Serving<R> {
    pub fn new(core: Core<R, SidecarObserver>, admin_token: Option<Arc<str>>) -> Self {
        let anonymous = render::allow(core.authorizer.identity_headers(), [], None, None);
        Serving { core, anonymous, admin_token }
    }

    /// An authorizer alone, with nothing refreshing it (tests, examples).
    pub fn fixed(authorizer: Arc<Authorizer<R, SidecarObserver>>) -> Self {
        Serving::hosted(authorizer, None)
    }

    /// An authorizer whose refreshers and sync another host runs (the Envoy module), with
    /// the admin token of its config.
    pub fn hosted(authorizer: Arc<Authorizer<R, SidecarObserver>>, admin_token: Option<Arc<str>>) -> Self {
        Serving::new(Core { authorizer, jwks: Vec::new(), redis: None, key_metrics: Vec::new() }, admin_token)
    }

    pub fn authorizer(&self) -> &Arc<Authorizer<R, SidecarObserver>> {
        &self.core.authorizer
    }
}

/// The shared slot holding the current [`Serving`]; cloning shares it.
pub struct Live<R: Renderer = CheckResponses>(Arc<ArcSwap<Serving<R>>>);

impl<R: Renderer> Clone for Live<R> {
    fn clone(&self) -> Self {
        Live(self.0.clone())
    }
}

impl<R: Renderer> Live<R> {
    pub fn new(serving: Serving<R>) -> Self {
        Live(Arc::new(ArcSwap::from_pointee(serving)))
    }

    /// The core serving now; hold it for the whole call (an atomic increment, no lock).
    pub fn current(&self) -> Arc<Serving<R>> {
        self.0.load_full()
    }

    /// The current authorizer.
    pub fn authorizer(&self) -> Arc<Authorizer<R, SidecarObserver>> {
        self.0.load().core.authorizer.clone()
    }

    /// Installs `next`; calls already holding the old one finish on it.
    pub fn swap(&self, next: Serving<R>) -> Arc<Serving<R>> {
        self.0.swap(Arc::new(next))
    }
}
