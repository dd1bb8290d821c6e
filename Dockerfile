# Multi-stage build: a pinned Rust toolchain on Debian 12 builds the binary, and a
# distroless image with only glibc and libgcc (Debian 12 as well) runs it as non-root.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src

# Dependencies in their own layer: rebuilt only when Cargo.toml or Cargo.lock change.
# Cargo.toml declares the `core` bench, so cargo reads no manifest without a
# benches/core.rs: a stub stands in for it here, as for src.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src benches \
    && printf 'fn main() {}\n' > src/main.rs \
    && touch src/lib.rs \
    && cp src/main.rs benches/core.rs \
    && cargo build --release --locked \
    && rm -rf src benches target/release/.fingerprint/asg-cmk-operator-* target/release/deps/asg_cmk_operator-* target/release/deps/libasg_cmk_operator-*

# Every file cargo reads: the sources, and the bench the manifest declares (not built).
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/asg-cmk-operator /usr/local/bin/asg-cmk-operator
# The distroless nonroot user, by number so Kubernetes can verify runAsNonRoot.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/asg-cmk-operator"]
CMD ["run", "--config", "/etc/asg-cmk-operator/config.yaml"]
