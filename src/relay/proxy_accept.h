/*
 * proxy_accept: the step between accept and the SMTP session when
 * proxy_networks is set (CONTRACT 2; HAProxy's proxy-protocol.txt).
 *
 * Every accepted connection must come from proxy_networks and begin with
 * a PROXY v1 or v2 header within PROXY_ACCEPT_TIMEOUT_MS; otherwise it is
 * closed without a byte written (no greeting).  The header is read
 * straight off the socket with MSG_PEEK and then exactly the header's
 * bytes are taken (proto/proxy never uses a byte past the header), so
 * whatever follows it -- the first SMTP command, or the TLS ClientHello on
 * an implicit-TLS listener -- is still unread in the socket when the
 * session starts and reaches it through the conn as ordinary input.
 *
 * The carried source address becomes the conn's peer (conn_set_peer), so
 * the session's relay_networks check, limits, logs and Received: use it
 * without knowing about PROXY.  A v2 LOCAL header or a v1 UNKNOWN line
 * (balancer health checks) keeps the connection's own address.
 */
#ifndef MAILHOP_RELAY_PROXY_ACCEPT_H
#define MAILHOP_RELAY_PROXY_ACCEPT_H

#include <uv.h>

struct config;
struct conn;
struct proxy_accept;

/* The bound for the header (CONTRACT 2: 10 s), in ms. */
#define PROXY_ACCEPT_TIMEOUT_MS 10000
/* Bytes looked at per read: more than the longest v1 line (107) and the
 * v2 fixed part with IPv6 addresses (52); TLVs take several reads. */
#define PROXY_ACCEPT_PEEK 512

/*
 * The header was read.  c is still unowned (conn_set_owner not called),
 * its peer is the carried client, and every byte after the header is
 * unread.  tls is what proxy_accept_conn was given.  The callee owns c.
 */
typedef void (*proxy_accept_cb)(struct conn *c, int tls, void *data);

/*
 * A pre-session stage for cfg->proxy_networks.  At most max_pending
 * connections wait for their header at once; beyond that a new one is
 * closed at once.  cfg must outlive it.  Returns NULL when out of memory.
 */
struct proxy_accept *proxy_accept_new(uv_loop_t *loop, const struct config *cfg,
                                      int max_pending, proxy_accept_cb cb,
                                      void *data);

/*
 * Takes an accepted, unowned conn (from a listener callback).  Either
 * closes it without a reply (peer not in proxy_networks, too many
 * pending, a missing or malformed header, EOF, a socket error or the
 * timeout; each logged as event "rejected" with the reason), or later
 * calls cb exactly once with it.  Never calls cb from inside this call.
 */
void proxy_accept_conn(struct proxy_accept *pa, struct conn *c, int tls);

/* Connections waiting for their header now. */
int proxy_accept_pending(const struct proxy_accept *pa);

/* Closes every waiting connection (no callback for them) and frees pa
 * once its handles are closed.  No callback runs after this. */
void proxy_accept_free(struct proxy_accept *pa);

#endif
