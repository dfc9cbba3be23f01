# ferry-control-plane: build with Rust, run on distroless (no shell, non-root).
#   docker build -f deploy/docker/control-plane.Dockerfile -t ferry-control-plane .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --locked --profile dist -p ferry-control-plane \
    && cp target/dist/ferry-control-plane /ferry-control-plane

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /ferry-control-plane /usr/local/bin/ferry-control-plane
USER 65532:65532
# agents (mTLS), admin API (plaintext only on loopback unless admin.tls), metrics
EXPOSE 50051 50052 9464
ENTRYPOINT ["/usr/local/bin/ferry-control-plane"]
CMD ["--config", "/etc/ferry/control-plane.yaml"]
