# Build stage: compile the release binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
COPY tests ./tests
COPY benches ./benches
RUN cargo build --release --locked --bin healthset-responder

# Run stage: a small Debian with CA certificates, a non-root user and a volume for the data directory.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin responder \
 && mkdir -p /data && chown responder /data
COPY --from=build /src/target/release/healthset-responder /usr/local/bin/healthset-responder
USER responder
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
COPY --chown=responder examples/docker.toml /etc/healthset-responder.toml
ENV HSR_CONFIG=/etc/healthset-responder.toml
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["healthset-responder"]
CMD ["serve"]
