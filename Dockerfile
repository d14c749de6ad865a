# mailhop container image: an SMTP relay for apps to use as their smarthost.
#
#   docker build -t mailhop .
#   docker run -d --name mailhop -p 127.0.0.1:2525:2525 -v mailhop:/var/lib/mailhop \
#     -e MAILHOP_RELAY_NETWORKS=172.16.0.0/12 \
#     -e MAILHOP_RELAYHOST='[smtp.provider.example]:587' mailhop
#
# The image listens on 0.0.0.0:2525, so it refuses to start until you say who
# may relay: MAILHOP_RELAY_NETWORKS (CIDR list) or MAILHOP_AUTH_USERS_FILE.
# That is deliberate: no accidental open relay.
#
# Two runtime stages: the default (last) one is a fully static binary on
# `scratch` (about 8 MB); `--target slim` gives the dynamically linked binary
# on debian:12-slim with only the runtime libraries (about 90 MB), which has
# a shell for debugging.
#
# Metrics and health over HTTP (metrics_listen, /metrics, /healthz, /readyz)
# are in the slim image only:
#   docker build --target slim -t mailhop:slim .
#   docker run ... -p 127.0.0.1:9100:9100 -e MAILHOP_METRICS_LISTEN=0.0.0.0:9100 mailhop:slim
# The static binary is built without them (-Dmetrics=disabled): Debian's
# libmicrohttpd.a needs GnuTLS's static archive, which needs libp11-kit.a,
# and Debian 12 ships p11-kit only as a shared library.  Setting
# metrics_listen there is refused at start-up (exit 1).
#
# So is mailhop's own OAuth2 client (relayhost_oauth2_token_url, for
# Microsoft 365 and Gmail XOAUTH2): Debian's libcurl.a needs static archives
# of Kerberos (GSSAPI) and OpenLDAP, which Debian does not ship, so the
# static binary is built with -Doauth2=disabled and refuses the key at
# start-up (exit 1).  In the scratch image XOAUTH2 works with a token file
# (relayhost_password_file, read again before every connection) kept fresh
# by another program.
#
# The same holds for MTA-STS (mta_sts, CONTRACT §4b): its policy fetch is
# libcurl's, so the static binary warns at start-up that it cannot honour
# policies and delivers as without them; use the slim image for MTA-STS.
# TLS-RPT works in both (its gzip is zlib's, and zlib1g-dev ships libz.a).
#
# BASE picks the Debian 12 image for the build and slim stages;
# scripts/container-test passes a locally built one on machines without a
# registry.
ARG BASE=debian:12-slim

# --- build stage -----------------------------------------------------------
FROM ${BASE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      meson ninja-build pkg-config gcc libc6-dev \
      libuv1-dev libssl-dev libldns-dev libsqlite3-dev libjansson-dev \
      libidn2-dev libcrypt-dev libunistring-dev zlib1g-dev ca-certificates \
      libmicrohttpd-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# meson.build reads tests/meson.build, which names the unit test sources.
COPY meson.build meson_options.txt ./
COPY src/ src/
COPY tests/meson.build tests/
COPY tests/unit/ tests/unit/
# docs/keys.txt becomes the `check --explain` table (scripts/gen-keydocs).
COPY docs/ docs/
COPY scripts/gen-keydocs scripts/
# Dynamic binary for the slim stage.
RUN meson setup /build --buildtype=release -Dmetrics=enabled -Doauth2=enabled \
      >/dev/null \
 && ninja -C /build mailhop \
 && strip /build/mailhop
# Static binary for scratch: Debian ships libuv's archive as libuv_a.a, so a
# libuv.a link beside it lets -luv find it. mailhop itself makes no NSS call
# (IP literals only, its own DNS resolver, numeric uid:gid); the linker's
# warnings about getpwuid_r/getservbyname are for code it never reaches.
RUN mkdir -p /static-lib \
 && ln -s "/usr/lib/$(gcc -print-multiarch)/libuv_a.a" /static-lib/libuv.a \
 && meson setup /build-static --buildtype=release --prefer-static \
      -Dc_link_args="['-static','-L/static-lib']" -Dmetrics=disabled \
      -Doauth2=disabled >/dev/null \
 && { ninja -C /build-static mailhop >/tmp/static.log 2>&1 \
      || { cat /tmp/static.log; exit 1; }; } \
 && strip /build-static/mailhop \
 && /build-static/mailhop --version
# The file system of the scratch image.
RUN install -d -m 1777 /rootfs/tmp \
 && install -d -o 2525 -g 2525 -m 0750 /rootfs/var/lib/mailhop \
 && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt \
      /rootfs/etc/ssl/certs/ca-certificates.crt \
 && printf 'root:x:0:0:root:/:/nonexistent\nmailhop:x:2525:2525:mailhop:/var/lib/mailhop:/nonexistent\n' \
      >/rootfs/etc/passwd \
 && printf 'root:x:0:\nmailhop:x:2525:\n' >/rootfs/etc/group \
 && install -D -m 0755 /build-static/mailhop /rootfs/usr/local/bin/mailhop

# --- slim runtime: debian:12-slim + runtime libraries (--target slim) ------
FROM ${BASE} AS slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libuv1 libssl3 libldns3 libsqlite3-0 libjansson4 libidn2-0 libcrypt1 \
      libmicrohttpd12 libcurl4 zlib1g ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log \
 && groupadd --system --gid 2525 mailhop \
 && useradd --system --uid 2525 --gid 2525 --home-dir /var/lib/mailhop \
      --no-create-home --shell /usr/sbin/nologin mailhop \
 && install -d -o 2525 -g 2525 -m 0750 /var/lib/mailhop
COPY --from=build /build/mailhop /usr/local/bin/mailhop
ENV MAILHOP_LISTEN=0.0.0.0:2525 \
    MAILHOP_QUEUE_PATH=/var/lib/mailhop/queue.db \
    MAILHOP_ADMIN_SOCKET=/var/lib/mailhop/mailhop.sock
VOLUME /var/lib/mailhop
WORKDIR /var/lib/mailhop
USER 2525:2525
EXPOSE 2525
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s \
  CMD ["mailhop", "status"]
ENTRYPOINT ["mailhop"]
CMD ["serve"]

# --- default runtime: static binary on scratch --------------------------------
FROM scratch AS static
COPY --from=build /rootfs/ /
# Every key is settable as MAILHOP_<KEY> or MAILHOP_<KEY>_FILE (secrets).
# Port 2525 needs no capability; publish it as 25 on the host if you want.
# SSL_CERT_FILE: the trust store for relayhost/MX TLS (tls_ca_file unset).
ENV PATH=/usr/local/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    MAILHOP_LISTEN=0.0.0.0:2525 \
    MAILHOP_QUEUE_PATH=/var/lib/mailhop/queue.db \
    MAILHOP_ADMIN_SOCKET=/var/lib/mailhop/mailhop.sock
VOLUME /var/lib/mailhop
WORKDIR /var/lib/mailhop
USER 2525:2525
EXPOSE 2525
# SIGTERM: finish what is in flight within shutdown_timeout (8 s, under
# Docker's 10 s stop timeout), then exit 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s \
  CMD ["mailhop", "status"]
ENTRYPOINT ["mailhop"]
CMD ["serve"]
