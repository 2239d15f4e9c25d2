# syntax=docker/dockerfile:1

# Build a static binary.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /pds ./cmd/pds

# Prepare an empty data directory owned by the nonroot user (uid 65532).
FROM busybox:stable AS datadir
RUN mkdir -p /data && chown 65532:65532 /data

# Run it: no shell, no package manager, not root.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /pds /pds
COPY --from=datadir --chown=65532:65532 /data /data
# Listen on all interfaces inside the container; the host or Fly's proxy
# terminates TLS in front of it.
# Memory: fits a 128 MB container (see README, "How much memory"):
# TestMemoryLimit128M runs 10,000 writes with 10 firehose subscribers under
# that limit with this GOMEMLIMIT, which makes the Go runtime collect harder
# as it nears 100 MiB and leaves the rest to the kernel. fly.toml raises it
# with its 256 MB VM.
ENV PDS_DATA_DIRECTORY=/data \
    PDS_PORT=2583 \
    PDS_LISTEN_ADDRESS=0.0.0.0:2583 \
    GOMEMLIMIT=100MiB
VOLUME /data
EXPOSE 2583
# No shell or curl in the image: the binary checks itself.
HEALTHCHECK --interval=30s --timeout=6s --start-period=10s CMD ["/pds", "healthcheck"]
USER nonroot:nonroot
ENTRYPOINT ["/pds"]
CMD ["serve"]
