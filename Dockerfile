# rulebridge in a container: the release binary on a distroless base, non-root.
#
#   docker build -t rulebridge:0.1.0 .
#   docker run --rm -p 9464:9464 -v rulebridge-state:/var/lib/rulebridge \
#     -v "$PWD/rulebridge.toml:/etc/rulebridge/config/rulebridge.toml:ro" \
#     -e AZURE_CLIENT_SECRET_FILE=/run/secrets/client-secret ... rulebridge:0.1.0
#
# The default rule pack and the schemas are inside (/usr/share/rulebridge), so a config
# may point sync.rules there; a deployment normally mounts its own pack folder
# (examples/kubernetes mounts a ConfigMap at /etc/rulebridge/rules).

# Build: the toolchain the crate asks for (Cargo.toml rust-version), the locked deps.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin rulebridge && mkdir -p /out/state

# Run: glibc and nothing else (no shell, no package manager); uid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/rulebridge /usr/local/bin/rulebridge
COPY --from=build /src/rules /usr/share/rulebridge/rules
COPY --from=build /src/schemas /usr/share/rulebridge/schemas
# The state folder, owned by the runtime user (a volume mounted here keeps it).
COPY --from=build --chown=65532:65532 /out/state /var/lib/rulebridge
USER 65532:65532
WORKDIR /var/lib/rulebridge
ENV RULEBRIDGE_LOG_FORMAT=json
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/rulebridge"]
CMD ["run", "--config", "/etc/rulebridge/config/rulebridge.toml"]
