# syntax=docker/dockerfile:1
# The example service of the quick start (k8s/overlays/quickstart): crates/hopauth/examples/chain_service.rs,
# a small axum app that answers with the identity headers its sidecar set and forwards the
# caller's Authorization header to the next service (docs/deploy.md, "Passing the token on").
# Build from the repository root (the whole workspace is the context):
#   docker build -f docker/chain-service.Dockerfile -t ghcr.io/hopauth/chain-service:0.1.0 .
# `--example` without `-p`: cargo finds the example in whichever workspace member holds it.
# Runtime: distroless with glibc and libgcc, no shell, user 65532 ("nonroot").

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked --example chain_service

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/examples/chain_service /usr/local/bin/chain_service
USER nonroot:nonroot
# Configured by CHAIN_NAME, CHAIN_LISTEN (default 127.0.0.1:8080: only its sidecar reaches
# it) and CHAIN_NEXT (the sidecar's outbound listener; unset or empty: end of the chain).
ENTRYPOINT ["/usr/local/bin/chain_service"]
