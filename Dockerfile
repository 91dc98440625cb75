# syntax=docker/dockerfile:1
# The hopauth image (ghcr.io/hopauth/hopauth:<version>, used by k8s/): `hopauth serve` in
# every pod, and `hopauth issuer` (the reference issuer) in k8s/overlays/quickstart.
#   docker build -t ghcr.io/hopauth/hopauth:0.1.0 .
# The example app of the quick start is docker/chain-service.Dockerfile. The whole
# workspace is copied and the package is named (`-p hopauth`), so this builds the same way
# whether the repository root is the `hopauth` package or a workspace containing it.
# Build stage: the release binary. Runtime: distroless with glibc and libgcc (what a Rust
# binary with aws-lc needs), no shell, no package manager, user 65532 ("nonroot").

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The registry cache keeps rebuilds from downloading every crate again.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked -p hopauth --bin hopauth

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/hopauth /usr/local/bin/hopauth
USER nonroot:nonroot
# 9001: ext_authz gRPC (Envoy), 9002: /metrics, /healthz, /readyz, /admin/revoke.
# Which address they bind is in the config (grpc_listen, http_listen).
EXPOSE 9001 9002
ENTRYPOINT ["/usr/local/bin/hopauth"]
CMD ["serve", "--config", "/etc/hopauth/hopauth.yaml"]
