//! The gRPC adapter: `envoy.service.auth.v3.Authorization/Check` in, `Decision` out as a
//! `CheckResponse`. Every outcome, deny and 503 included, is a normal response with gRPC
//! status OK: a gRPC error is what Envoy's `failure_mode_allow` could turn into an allow.
//! That includes a request that is not valid protobuf: 400 `invalid_request`.
//!
//! The hot path never builds protobuf structs: the request is read in place (`wire`), and
//! the response is bytes rendered once (`render`): a verified token's allow when it was
//! verified, the anonymous allow when its config is loaded, each deny the first time it is given.

pub mod wire;

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::{Grpc, NamedService, UnaryService};

use hopauth_core::clock::Instant;
use hopauth_core::decision::{Allowed, Decision, DenyReason};
use hopauth_core::policy::RoutePolicy;
use wire::{CheckView, WireError};

use crate::live::{Live, Serving};
use crate::render;
use crate::SidecarAuthorizer;

/// A CheckRequest as it came off the wire: read in place, or why it could not be read.
pub type Received = Result<CheckView, WireError>;

/// The gRPC service name, for routing and health.
pub const SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

pub struct AuthorizationService {
    /// The core serving now: each Check takes it when it starts (a reload swaps it).
    live: Live,
    /// Denies by `DenyReason::index`, encoded on first use.
    denies: [OnceLock<Bytes>; DenyReason::NAMES.len()],
}

impl AuthorizationService {
    /// A service deciding with `authorizer`, which nothing swaps (tests, examples).
    pub fn new(authorizer: Arc<SidecarAuthorizer>) -> Self {
        Self::serving(Live::new(Serving::fixed(authorizer)))
    }

    /// A service deciding with whatever `live` holds when each Check starts.
    pub fn serving(live: Live) -> Self {
        AuthorizationService { live, denies: std::array::from_fn(|_| OnceLock::new()) }
    }

    /// One Check, from the request's protobuf bytes to the response's; `arrived` is when
    /// the server received it (for `max_queue_delay`).
    pub async fn check_wire(&self, request: &CheckView, arrived: Instant) -> Bytes {
        let policy = RoutePolicy::from_extensions(|k| request.context_extension(k));
        // Held to the end: a reload meanwhile does not change this Check's core.
        let serving = self.live.current();
        match serving.authorizer().check(request, policy, arrived).await {
            Decision::Allow(Allowed::Verified(token)) => token.rendered.clone(),
            Decision::Allow(Allowed::Anonymous) => serving.anonymous.clone(),
            Decision::Deny(reason @ DenyReason::InsufficientScope(_)) => render::encode(&render::deny(&reason)),
            Decision::Deny(reason) => {
                self.denies[reason.index()].get_or_init(|| render::encode(&render::deny(&reason))).clone()
            }
        }
    }

    /// The answer to a Check whose request is not valid protobuf: a 400 `invalid_request`
    /// deny inside a normal CheckResponse, counted and logged like every deny. A gRPC error
    /// here is what Envoy's `failure_mode_allow: true` would turn into an allow
    /// (CVE-2023-27488 class).
    pub fn check_unreadable(&self, error: &WireError, arrived: Instant) -> Bytes {
        let reason = DenyReason::MalformedRequest;
        self.live.current().authorizer().refuse_unreadable(&reason, error, arrived);
        self.denies[reason.index()].get_or_init(|| render::encode(&render::deny(&reason))).clone()
    }

    /// The same Check on decoded messages, through the same wire path (tests, examples).
    pub async fn check_request(&self, request: &CheckRequest) -> CheckResponse {
        let view = CheckView::parse(request.encode_to_vec().into()).expect("prost encodes valid protobuf");
        let reply = self.check_wire(&view, Instant::now()).await;
        CheckResponse::decode(reply).expect("hopauth encodes valid CheckResponses")
    }
}

/// The tower service tonic's router calls: `Check` through [`CheckCodec`], anything else
/// `UNIMPLEMENTED`, as the generated server would answer.
#[derive(Clone)]
pub struct AuthorizationServer {
    service: Arc<AuthorizationService>,
}

impl AuthorizationServer {
    pub fn new(service: AuthorizationService) -> Self {
        AuthorizationServer { service: Arc::new(service) }
    }
}

impl NamedService for AuthorizationServer {
    const NAME: &'static str = SERVICE_NAME;
}

/// One call: the service and when the request arrived.
struct CheckMethod(Arc<AuthorizationService>, Instant);

impl UnaryService<Received> for CheckMethod {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Received>) -> Self::Future {
        let (service, arrived) = (self.0.clone(), self.1);
        Box::pin(async move {
            let reply = match request.get_ref() {
                Ok(view) => service.check_wire(view, arrived).await,
                Err(error) => service.check_unreadable(error, arrived),
            };
            Ok(tonic::Response::new(reply))
        })
    }
}

impl<B> Service<http::Request<B>> for AuthorizationServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() == CHECK_PATH {
            // hyper calls the service as the request's headers arrive; the time spent from
            // here until the Check runs is the queueing `max_queue_delay` bounds.
            let (service, arrived) = (self.service.clone(), Instant::now());
            let method = CheckMethod(service.clone(), arrived);
            return Box::pin(async move {
                let response = Grpc::new(CheckCodec).unary(method, request).await;
                // CheckMethod never fails, so an error status is tonic's own, given before
                // the message reached the codec (past the 4 MiB receive limit, compressed):
                // it gets the malformed-request deny like any unreadable CheckRequest.
                match grpc_error(&response) {
                    None => Ok(response),
                    Some(code) => {
                        let reply = service.check_unreadable(&WireError::Refused(code), arrived);
                        Ok(Grpc::new(CheckCodec).unary(Reply(reply), empty_call()).await)
                    }
                }
            });
        }
        Box::pin(async move { Ok(tonic::Status::unimplemented("hopauth serves Authorization/Check only").into_http()) })
    }
}

/// The status of a trailers-only gRPC error response (how tonic answers a call it could
/// not decode); `None` for a normal response.
fn grpc_error(response: &http::Response<tonic::body::Body>) -> Option<tonic::Code> {
    let status = response.headers().get("grpc-status")?;
    let code = status.to_str().ok().and_then(|s| s.parse::<i32>().ok()).map_or(tonic::Code::Unknown, tonic::Code::from);
    (code != tonic::Code::Ok).then_some(code)
}

/// A Check answered with bytes already chosen.
struct Reply(Bytes);

impl UnaryService<Received> for Reply {
    type Response = Bytes;
    type Future = std::future::Ready<Result<tonic::Response<Bytes>, tonic::Status>>;

    fn call(&mut self, _request: tonic::Request<Received>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(self.0.clone())))
    }
}

/// A call carrying one empty gRPC message (flag 0, length 0), to answer through tonic's
/// normal response path.
fn empty_call() -> http::Request<tonic::body::Body> {
    let mut request = http::Request::new(tonic::body::Body::new(String::from("\0\0\0\0\0")));
    request.headers_mut().insert("content-type", http::HeaderValue::from_static("application/grpc"));
    request
}

/// Requests stay in the bytes they arrived in; responses are already encoded. A request
/// that is not a valid CheckRequest still decodes (as its `WireError`), so it gets a deny
/// rather than a gRPC error.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = Bytes;
    type Decode = Received;
    type Encoder = CheckCodec;
    type Decoder = CheckCodec;

    fn encoder(&mut self) -> Self::Encoder {
        CheckCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        CheckCodec
    }
}

impl Encoder for CheckCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for CheckCodec {
    type Item = Received;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Received>, tonic::Status> {
        // A split of tonic's receive buffer, not a copy.
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(CheckView::parse(bytes)))
    }
}
