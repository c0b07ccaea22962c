# Multi-stage build of a static connect-gate binary on an empty base image.
#
# BINARY picks the stage the runtime image takes the binary and the CA bundle from:
#   build     (default) compiled in the rust stage below: `docker build .`
#   prebuilt  a static x86_64 Linux binary built elsewhere, from the build context:
#             prebuilt/connect-gate and prebuilt/ca-certificates.crt
#             (`--build-arg BINARY=prebuilt`; tests/stack/images builds this way where no
#             base image can be pulled). The rust stage is then skipped, never pulled.
# Builders that skip unused stages build only the chosen one (BuildKit, the default of
# `docker build`; buildah/podman). buildah 1.28 (Debian 12) does not apply this ARG's default when
# it picks the stages: there, spell out `--build-arg BINARY=build`.
ARG BINARY=build

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/connect-gate /connect-gate

FROM scratch AS prebuilt
COPY prebuilt/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY prebuilt/connect-gate /connect-gate

FROM ${BINARY} AS binary

FROM scratch
COPY --from=binary /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=binary /connect-gate /connect-gate
# Non-root; no shell is needed at run time (the template sandbox re-executes this binary).
USER 65532:65532
ENTRYPOINT ["/connect-gate"]
