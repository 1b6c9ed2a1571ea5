# syntax=docker/dockerfile:1.7
# One image with both binaries: `shop` (every service: `shop serve <service>`, `shop migrate`)
# and `shop-operator`. Build: docker build -t shop:dev .  (BuildKit; the build machines of this
# project have no container engine, so the image is built by users, by CI with Docker, and by
# tests/kind/run.sh.)

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and compiled dependencies between builds, so a change
# to the shop's own code rebuilds only the shop's own crates.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p shop -p shop-operator \
    && install -D -m 0755 target/release/shop target/release/shop-operator -t /out/
# CycloneDX SBOMs of both binaries, made as the tests make them: tests/lint/sbom.sh builds
# cargo-cyclonedx from crates.io once (cached) and uses python3 (in the rust image, with
# mercurial).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/root/.cache/shop/tools \
    tests/lint/sbom.sh /out/sbom

# distroless/cc: glibc and libgcc, no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="shop" \
      org.opencontainers.image.description="The shop's services (shop) and its Kubernetes operator (shop-operator)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/shop-dev/shop"
COPY --from=build /out/shop /out/shop-operator /usr/local/bin/
COPY --from=build /out/sbom/shop.cdx.json /out/sbom/shop-operator.cdx.json /usr/share/doc/shop/sbom/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/shop"]
CMD ["--help"]
