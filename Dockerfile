# syntax=docker/dockerfile:1
# The operator image: a static (musl) binary on distroless, running as a non-root user.
#   docker build -t beeos-operator:0.1.0 .
# The image is built for the builder's own architecture (amd64 or arm64).

# Keep in step with rust-toolchain.toml.
FROM docker.io/library/rust:1.95.0-bookworm AS build
# ring compiles C code, with musl-gcc for the musl target (TARGET_CC leaves host builds alone).
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
ENV TARGET_CC=musl-gcc CARGO_PROFILE_RELEASE_STRIP=symbols
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && rustup target add "$target" \
 && cargo build --release --locked --bin beeos-operator --target "$target" \
 && cp "target/$target/release/beeos-operator" /beeos-operator

# CA certificates, /etc/passwd with nonroot (65532), no shell.
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="beeos-operator" \
      org.opencontainers.image.description="Runs BeeOS AI-agent instances from BeeosInstance resources" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /beeos-operator /usr/local/bin/beeos-operator
USER 65532:65532
# /healthz, /readyz and /metrics.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/beeos-operator"]
