# The operator image. Build from the repository root:
#   docker build -f docker/mail-operator.Dockerfile -t kubemail/mail-operator:dev .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mail-operator \
    && cp target/release/mail-operator /mail-operator

# glibc, CA certificates and a non-root user, nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /mail-operator /usr/local/bin/mail-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mail-operator"]
CMD ["--log-format", "json", "run"]
