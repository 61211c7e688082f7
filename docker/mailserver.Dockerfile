# The mail-server image. Build from the repository root:
#   docker build -f docker/mailserver.Dockerfile -t kubemail/mailserver:dev .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mailserver \
    && cp target/release/mailserver /mailserver

# Pods hold no state (PostgreSQL + S3), so the root file system can be read-only.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /mailserver /usr/local/bin/mailserver
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mailserver"]
