//! The decision core serving now, swapped whole by a config reload (`reload`): every Check
//! and admin call takes the current one when it starts and finishes on it, so a reload never
//! changes a decision half way, and the old core lives until its last caller is done.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::assemble::Core;
use crate::observer::SidecarObserver;
use crate::render::{self, CheckResponses};
use crate::SidecarAuthorizer;

/// The sidecar's decision core with the JWKS refreshers and store that keep it current.
pub type SidecarCore = Core<CheckResponses, SidecarObserver>;

/// What one config gives the listeners: its core, the anonymous allow rendered for its
/// identity headers, and the admin token named by its `admin.token_env`.
pub struct Serving {
    pub core: SidecarCore,
    pub anonymous: Bytes,
    /// Bearer token for `/admin/*`; `None` turns the admin API off (every call 401).
    pub admin_token: Option<Arc<str>>,
}

impl Serving {
    pub fn new(core: SidecarCore, admin_token: Option<Arc<str>>) -> Self {
        let anonymous = render::allow(core.authorizer.identity_headers(), [], None, None);
        Serving { core, anonymous, admin_token }
    }

    /// An authorizer alone, with nothing refreshing it (tests, examples).
    pub fn fixed(authorizer: Arc<SidecarAuthorizer>) -> Self {
        Serving::hosted(authorizer, None)
    }

    /// An authorizer whose refreshers and sync another host runs (the Envoy module), with
    /// the admin token of its config.
    pub fn hosted(authorizer: Arc<SidecarAuthorizer>, admin_token: Option<Arc<str>>) -> Self {
        Serving::new(Core { authorizer, jwks: Vec::new(), redis: None, key_metrics: Vec::new() }, admin_token)
    }

    pub fn authorizer(&self) -> &Arc<SidecarAuthorizer> {
        &self.core.authorizer
    }
}

/// The shared slot holding the current [`Serving`]; cloning shares it.
#[derive(Clone)]
pub struct Live(Arc<ArcSwap<Serving>>);

impl Live {
    pub fn new(serving: Serving) -> Self {
        Live(Arc::new(ArcSwap::from_pointee(serving)))
    }

    /// The core serving now; hold it for the whole call (an atomic increment, no lock).
    pub fn current(&self) -> Arc<Serving> {
        self.0.load_full()
    }

    /// The current authorizer.
    pub fn authorizer(&self) -> Arc<SidecarAuthorizer> {
        self.0.load().core.authorizer.clone()
    }

    /// Installs `next`; calls already holding the old one finish on it.
    pub fn swap(&self, next: Serving) -> Arc<Serving> {
        self.0.swap(Arc::new(next))
    }
}
