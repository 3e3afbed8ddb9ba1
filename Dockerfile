# syntax=docker/dockerfile:1
# tailsift image: multi-stage, Rust builder -> Debian slim runtime.
#   docker build -t tailsift:local .
#   docker run --rm tailsift:local check-config /etc/tailsift/tailsift.yaml

FROM rust:1.95-bookworm AS builder
# librdkafka (bundled by rdkafka-sys) builds with configure + make against the
# system OpenSSL and zlib.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tailsift \
 && install -D -m 0755 target/release/tailsift /out/tailsift

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin tailsift
COPY --from=builder /out/tailsift /usr/local/bin/tailsift
COPY config/tailsift.yaml /etc/tailsift/tailsift.yaml
USER tailsift
# Prometheus /metrics, /healthz, /readyz: in a container listen on all interfaces
# (config/tailsift.yaml binds loopback for local runs).
ENV TAILSIFT_METRICS__LISTEN=0.0.0.0:9464
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/tailsift"]
CMD ["run", "--config", "/etc/tailsift/tailsift.yaml"]
