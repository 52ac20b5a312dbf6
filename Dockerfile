# Build stage: compile the release binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

# Run stage: slim Debian, non-root user, allowed to bind port 53.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libcap2-bin \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --shell /usr/sbin/nologin healthdns
COPY --from=build /src/target/release/healthdns /usr/local/bin/healthdns
# Port 53 as a non-root user, and raw ICMP sockets for icmp checks where ping_group_range
# does not allow unprivileged ping.
RUN setcap cap_net_bind_service,cap_net_raw=+ep /usr/local/bin/healthdns
# The container config listens on 0.0.0.0:53 and [::]:53 (the shipped config.toml listens on
# 127.0.0.1:5353, which a container would serve to nobody).
COPY contrib/docker/config.toml /etc/healthdns/config.toml
COPY zones /etc/healthdns/zones
# State and snapshots live in a volume the non-root user can write, even when the operator
# mounts their own /etc/healthdns.
RUN mkdir -p /var/lib/healthdns/snapshots && chown -R healthdns /var/lib/healthdns
VOLUME /var/lib/healthdns
USER healthdns
# DNS, and the HTTP API (metrics, status).
EXPOSE 53/udp 53/tcp 8053/tcp
ENTRYPOINT ["healthdns"]
CMD ["serve", "--config", "/etc/healthdns/config.toml"]
