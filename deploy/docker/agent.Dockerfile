# ferry-agent: build with Rust, run on distroless (no shell, non-root).
#   docker build -f deploy/docker/agent.Dockerfile -t ferry-agent .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --locked --profile dist -p ferry-agent \
    && cp target/dist/ferry-agent /ferry-agent

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /ferry-agent /usr/local/bin/ferry-agent
USER 65532:65532
# The agent dials out only; 9465 is its optional metrics endpoint.
EXPOSE 9465
ENTRYPOINT ["/usr/local/bin/ferry-agent"]
CMD ["--config", "/etc/ferry/agent.yaml"]
