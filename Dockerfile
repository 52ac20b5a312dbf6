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
COPY config.toml /etc/healthdns/config.toml
COPY zones /etc/healthdns/zones
# The state file and zone snapshots are written next to the config (state_file, snapshot).
RUN mkdir -p /etc/healthdns/snapshots && chown healthdns /etc/healthdns /etc/healthdns/snapshots
USER healthdns
EXPOSE 53/udp 53/tcp
ENTRYPOINT ["healthdns"]
CMD ["serve", "--config", "/etc/healthdns/config.toml"]
