# The Converge server image: the release binary and the example agents on distroless `cc` (glibc, libgcc,
# nothing else: no shell, no package manager), running as the non-root user, with a read-only root file system.
# Everything it writes goes under /data (the SQLite store, the compiled-code cache); with
# `--store postgres://...` (or CONVERGE_STORE) only the cache does. `scripts/image-check` proves on a machine
# without a container engine what this image relies on: see README.md, "Container image".
#
#   docker build -t converge .
#   docker run --read-only -v converge-data:/data -v "$PWD/tokens:/etc/converge/tokens/tokens:ro" -p 8080:8080 converge
#
# The default command serves on every address, so it needs the tokens file (`TENANT TOKEN` per line) at
# /etc/converge/tokens/tokens; deploy/kubernetes mounts it there from a Secret.

# ---- build: the same toolchain rust-toolchain.toml pins, on the same Debian as the runtime image ----
FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
# rust-toolchain.toml names the wasm32-wasip2 target; agents/build adds it if the image lacks it.
COPY . .
RUN agents/build --locked \
    && cargo build --release --locked -p converge \
    && mkdir -p /out/agents/tools /out/data \
    && cp agents/*.wasm /out/agents/ \
    && cp agents/tools/*.wasm /out/agents/tools/ \
    && cp target/release/converge /out/converge

# ---- runtime ----
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/converge /usr/local/bin/converge
COPY --from=build /out/agents /opt/converge/agents
# The data directory, owned by the nonroot user (65532); mount a volume (or an emptyDir) here.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/converge"]
CMD ["serve", "--addr", "0.0.0.0:8080", "--data", "/data", "--agents", "/opt/converge/agents", \
     "--token-file", "/etc/converge/tokens/tokens", "--log-format", "json"]
