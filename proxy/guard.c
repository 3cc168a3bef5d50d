/*
 * proxy/guard.c: the connection guard.  It watches every connection's
 * bytes as they arrive, before evhttp parses them (a callback on the
 * input buffer of the connection's bufferevent).  The guard checks the
 * client address against the policy and the connection limits on the
 * first bytes, and watches each request head: a request line with a URI
 * over 4 KiB gets 414, a head over 16 KiB gets 431, a head that is not
 * whole within GUARD_HEAD_TIMEOUT seconds gets 408, a method other than
 * GET or HEAD gets 405 before its body is read.  Each of these answers is
 * written by the guard itself, and the connection is closed after it.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <jansson.h>
#include <openssl/ssl.h>

#include "nixmirror.h"
#include "policy/policy.h"
#include "proxy/proxy.h"

#define GUARD_MAX_URI		4096
#define GUARD_MAX_HEAD		(16 * 1024)
#define GUARD_MAX_WRITE		(1024 * 1024)	/* bytes per write call */
#define GUARD_HEAD_TIMEOUT	10

enum guard_state {
	GUARD_NEW,		/* no byte seen yet */
	GUARD_IDLE,		/* between requests */
	GUARD_METHOD,		/* reading the method */
	GUARD_URI,		/* reading the request target */
	GUARD_LINE,		/* the rest of the request line */
	GUARD_HEADERS,		/* header lines */
	GUARD_CLOSING,		/* answered by the guard; closing */
};

enum guard_field {
	FIELD_START,		/* a header line's first byte */
	FIELD_NAME,		/* its name */
	FIELD_VALUE,		/* the value of another header */
	FIELD_CL,		/* Content-Length's digits, or white space */
	FIELD_CL_END,		/* white space after them */
};

struct guard {
	struct bufferevent	*gd_bev;	/* socket or TLS, evhttp's */
	struct evbuffer_cb_entry *gd_incb;
	enum guard_state	 gd_state;
	size_t			 gd_head;	/* bytes of the current head */
	size_t			 gd_uri;	/* bytes of its URI */
	size_t			 gd_line;	/* bytes of the current line */
	char			 gd_method[16];
	size_t			 gd_mlen;
	char			 gd_version[16];	/* HTTP/1.1 */
	size_t			 gd_vlen;
	int			 gd_lax;	/* no method: evhttp answers */
	enum guard_field	 gd_field;	/* where in a header line */
	char			 gd_name[24];	/* its name, lower case */
	size_t			 gd_nlen;
	int			 gd_ncl;	/* Content-Length headers */
	int			 gd_cldigits;	/* digits of the current one */
	int			 gd_clnonzero;	/* it announces a body */
	struct sockaddr_storage	 gd_peer;
	socklen_t		 gd_peerlen;
	char			 gd_host[64];
	struct event		*gd_timer;	/* head timeout */
	/* evhttp's callbacks, while the guard answers on its own. */
	bufferevent_data_cb	 gd_hread;
	bufferevent_data_cb	 gd_hwrite;
	bufferevent_event_cb	 gd_hevent;
	void			*gd_harg;
	TAILQ_ENTRY(guard)	 gd_entry;
};

static void	guard_sweep_cb(evutil_socket_t, short, void *);

static TAILQ_HEAD(, guard)	 guard_list = TAILQ_HEAD_INITIALIZER(guard_list);
static size_t			 guard_count;
static SSL_CTX			*guard_ssl;
static struct event		*guard_sweep;

/* Sets up TLS serving with a certificate chain and key; 0 or -1. */
int
proxy_guard_tls(const char *cert, const char *key, char **cause)
{
	if ((guard_ssl = SSL_CTX_new(TLS_server_method())) == NULL)
		fatalx("%s: SSL_CTX_new", __func__);
	SSL_CTX_set_min_proto_version(guard_ssl, TLS1_2_VERSION);
	SSL_CTX_set_options(guard_ssl, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(guard_ssl, cert) != 1) {
		xasprintf(cause, "tls_cert: cannot load %s", cert);
		return (-1);
	}
	if (SSL_CTX_use_PrivateKey_file(guard_ssl, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(guard_ssl) != 1) {
		xasprintf(cause, "tls_key: %s does not load or does not match "
		    "%s", key, cert);
		return (-1);
	}
	return (0);
}

/* The numeric host of a socket address. */
static void
guard_host(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	const struct sockaddr_in	*s4 = (const struct sockaddr_in *)ss;
	const struct sockaddr_in6	*s6 = (const struct sockaddr_in6 *)ss;

	snprintf(buf, len, "-");
	if (ss->ss_family == AF_INET)
		evutil_inet_ntop(AF_INET, &s4->sin_addr, buf, len);
	else if (ss->ss_family == AF_INET6)
		evutil_inet_ntop(AF_INET6, &s6->sin6_addr, buf, len);
}

/*
 * The guard's answer left (or could not): hand the connection back to
 * evhttp as if the client had closed it, so evhttp frees it.
 */
static void
guard_done_write_cb(struct bufferevent *bev, void *arg)
{
	struct guard	*gd = arg;

	bufferevent_setcb(bev, gd->gd_hread, gd->gd_hwrite, gd->gd_hevent,
	    gd->gd_harg);
	bufferevent_trigger_event(bev, BEV_EVENT_EOF | BEV_EVENT_READING,
	    BEV_TRIG_DEFER_CALLBACKS);
}

static void
guard_done_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	guard_done_write_cb(bev, arg);
}

/*
 * Answers a request the guard refuses, in OCI error JSON, and closes the
 * connection after it.  evhttp's callbacks are set aside meanwhile, so
 * that it sees nothing of it but the end.
 */
static void
guard_refuse(struct guard *gd, int status, const char *reason,
    const char *code, const char *msg, const char *extra)
{
	struct timeval	 tv = { GUARD_HEAD_TIMEOUT, 0 };
	json_t		*doc;
	char		*body, *head;

	doc = json_pack("{s:[{s:s,s:s,s:{}}]}", "errors", "code", code,
	    "message", msg, "detail");
	if (doc == NULL || (body = json_dumps(doc, JSON_COMPACT)) == NULL)
		fatalx("%s: json", __func__);
	json_decref(doc);
	xasprintf(&head, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n%s\r\n", status,
	    reason, strlen(body), extra != NULL ? extra : "");
	log_info("%s - guard %d %s: %s", gd->gd_host, status, code, msg);
	metrics_refused(status);
	gd->gd_state = GUARD_CLOSING;
	evtimer_del(gd->gd_timer);
	bufferevent_getcb(gd->gd_bev, &gd->gd_hread, &gd->gd_hwrite,
	    &gd->gd_hevent, &gd->gd_harg);
	bufferevent_setcb(gd->gd_bev, NULL, guard_done_write_cb,
	    guard_done_event_cb, gd);
	bufferevent_set_timeouts(gd->gd_bev, NULL, &tv);
	bufferevent_setwatermark(gd->gd_bev, EV_WRITE, 0, 0);
	bufferevent_disable(gd->gd_bev, EV_READ);
	bufferevent_write(gd->gd_bev, head, strlen(head));
	bufferevent_write(gd->gd_bev, body, strlen(body));
	bufferevent_enable(gd->gd_bev, EV_WRITE);
	free(head);
	free(body);
}

/* The head took too long to arrive. */
static void
guard_timeout_cb(evutil_socket_t fd, short events, void *arg)
{
	struct guard	*gd = arg;

	(void)fd;
	(void)events;
	if (gd->gd_state != GUARD_IDLE && gd->gd_state != GUARD_CLOSING)
		guard_refuse(gd, 408, "Request Timeout", "UNKNOWN",
		    "the request head did not arrive in time", NULL);
}

/*
 * The first bytes of a connection: is the client allowed, and is there
 * room for it?  0 to go on, -1 when refused.
 */
static int
guard_admit(struct guard *gd)
{
	struct policy_limits	 pl;
	struct sockaddr_storage	 fwd;
	struct guard		*o;
	size_t			 mine = 0;
	char			*why = NULL, *msg;
	int			 fd = bufferevent_getfd(gd->gd_bev), proxy;

	gd->gd_peerlen = sizeof gd->gd_peer;
	if (fd == -1 || getpeername(fd, (struct sockaddr *)&gd->gd_peer,
	    &gd->gd_peerlen) == -1)
		memset(&gd->gd_peer, 0, sizeof gd->gd_peer);
	guard_host(&gd->gd_peer, gd->gd_host, sizeof gd->gd_host);
	/*
	 * A balancer (clients.proxies) carries many clients: each request
	 * is checked for the one it names (proxy_client), and it is held to
	 * max_connections alone.
	 */
	proxy = policy_client_forwarded((struct sockaddr *)&gd->gd_peer, NULL,
	    &fwd);
	if (!proxy && !policy_client_allowed((struct sockaddr *)&gd->gd_peer,
	    &why)) {
		if (why != NULL)
			msg = xstrdup(why);
		else
			xasprintf(&msg, "client %s is denied by the policy",
			    gd->gd_host);
		guard_refuse(gd, 403, "Forbidden", "DENIED", msg, NULL);
		free(msg);
		free(why);
		return (-1);
	}
	policy_limits_get(&pl);
	guard_sweep_cb(-1, 0, NULL);	/* count only the living */
	TAILQ_FOREACH(o, &guard_list, gd_entry)
		if (o != gd && strcmp(o->gd_host, gd->gd_host) == 0)
			mine++;
	if ((pl.pl_max_connections > 0 &&
	    guard_count > (size_t)pl.pl_max_connections) ||
	    (!proxy && pl.pl_max_connections_per_client > 0 &&
	    mine >= (size_t)pl.pl_max_connections_per_client)) {
		xasprintf(&msg, "too many connections (%zu in all, %zu from %s)",
		    guard_count, mine + 1, gd->gd_host);
		guard_refuse(gd, 429, "Too Many Requests", "TOOMANYREQUESTS",
		    msg, "Retry-After: 5\r\n");
		free(msg);
		return (-1);
	}
	return (0);
}

/* Checks the method once it is read: only GET and HEAD go on. */
static int
guard_method(struct guard *gd)
{
	char	*msg;

	gd->gd_method[gd->gd_mlen] = '\0';
	if (strcmp(gd->gd_method, "GET") == 0 ||
	    strcmp(gd->gd_method, "HEAD") == 0)
		return (0);
	xasprintf(&msg, "method %s is not supported: this registry is a "
	    "read-only mirror", gd->gd_method);
	guard_refuse(gd, 405, "Method Not Allowed", "UNSUPPORTED", msg,
	    "Allow: GET, HEAD\r\n");
	free(msg);
	return (-1);
}

/* The request line ended: is its version one we speak?  0 or -1. */
static int
guard_version(struct guard *gd)
{
	const char	*v = gd->gd_version;

	gd->gd_version[gd->gd_vlen] = '\0';
	if (gd->gd_lax || strcmp(v, "HTTP/1.1") == 0 ||
	    strcmp(v, "HTTP/1.0") == 0)
		return (0);
	if (gd->gd_vlen == 8 && strncmp(v, "HTTP/", 5) == 0 &&
	    v[5] >= '0' && v[5] <= '9' && v[6] == '.' &&
	    v[7] >= '0' && v[7] <= '9') {
		guard_refuse(gd, 505, "HTTP Version Not Supported",
		    "UNSUPPORTED", "only HTTP/1.0 and HTTP/1.1 are spoken here",
		    NULL);
		return (-1);
	}
	guard_refuse(gd, 400, "Bad Request", "UNKNOWN",
	    "the request line has no valid HTTP version", NULL);
	return (-1);
}

/* A bad header: 400, and the connection closes; returns -1. */
static int
guard_bad_header(struct guard *gd, const char *why)
{
	guard_refuse(gd, 400, "Bad Request", "UNKNOWN", why, NULL);
	return (-1);
}

/*
 * Follows one byte of a header line (the line's end excluded).  Returns
 * 0, or -1 when the guard answered.
 */
static int
guard_header_byte(struct guard *gd, unsigned char c)
{
	int	 ws = c == ' ' || c == '\t';

	if (c == '\r')
		return (0);
	switch (gd->gd_field) {
	case FIELD_START:
		if (ws)
			return (guard_bad_header(gd,
			    "a folded header line is not accepted"));
		gd->gd_field = FIELD_NAME;
		gd->gd_nlen = 0;
		/* FALLTHROUGH */
	case FIELD_NAME:
		if (ws)
			return (guard_bad_header(gd,
			    "white space before a header's colon"));
		if (c != ':') {
			if (gd->gd_nlen + 1 < sizeof gd->gd_name)
				gd->gd_name[gd->gd_nlen] = (char)(c >= 'A' &&
				    c <= 'Z' ? c - 'A' + 'a' : c);
			gd->gd_nlen++;
			return (0);
		}
		gd->gd_name[gd->gd_nlen < sizeof gd->gd_name ?
		    gd->gd_nlen : sizeof gd->gd_name - 1] = '\0';
		if (strcmp(gd->gd_name, "transfer-encoding") == 0)
			return (guard_bad_header(gd,
			    "Transfer-Encoding on a GET or HEAD request"));
		if (strcmp(gd->gd_name, "content-length") != 0) {
			gd->gd_field = FIELD_VALUE;
			return (0);
		}
		if (++gd->gd_ncl > 1)
			return (guard_bad_header(gd,
			    "more than one Content-Length"));
		gd->gd_field = FIELD_CL;
		gd->gd_cldigits = gd->gd_clnonzero = 0;
		return (0);
	case FIELD_CL:
	case FIELD_CL_END:
		if (ws) {
			if (gd->gd_cldigits > 0)
				gd->gd_field = FIELD_CL_END;
			return (0);
		}
		if (c < '0' || c > '9' || gd->gd_field == FIELD_CL_END)
			return (guard_bad_header(gd,
			    "Content-Length is not one number"));
		gd->gd_cldigits++;
		if (c != '0')
			gd->gd_clnonzero = 1;
		return (0);
	default:
		return (0);
	}
}

/* A header line ended.  0, or -1 when the guard answered. */
static int
guard_header_end(struct guard *gd)
{
	enum guard_field	 f = gd->gd_field;

	gd->gd_field = FIELD_START;
	if (f == FIELD_NAME)
		return (guard_bad_header(gd, "a header line has no colon"));
	if ((f == FIELD_CL || f == FIELD_CL_END) && gd->gd_cldigits == 0)
		return (guard_bad_header(gd, "Content-Length is empty"));
	if ((f == FIELD_CL || f == FIELD_CL_END) && gd->gd_clnonzero)
		return (guard_bad_header(gd,
		    "a GET or HEAD request has no body"));
	return (0);
}

/*
 * Follows one byte of a request head.  Returns 0, or -1 when the guard
 * answered and the connection is closing.
 */
static int
guard_byte(struct guard *gd, unsigned char c)
{
	struct timeval	 tv = { GUARD_HEAD_TIMEOUT, 0 };

	if (gd->gd_state == GUARD_IDLE) {
		if (c == '\r' || c == '\n')
			return (0);
		gd->gd_state = GUARD_METHOD;
		gd->gd_head = gd->gd_uri = gd->gd_line = gd->gd_mlen = 0;
		gd->gd_vlen = 0;
		gd->gd_lax = gd->gd_ncl = 0;
		gd->gd_field = FIELD_START;
		evtimer_add(gd->gd_timer, &tv);
	}
	if (++gd->gd_head > GUARD_MAX_HEAD) {
		guard_refuse(gd, 431, "Request Header Fields Too Large",
		    "UNKNOWN", "the request head is over 16 KiB", NULL);
		return (-1);
	}
	switch (gd->gd_state) {
	case GUARD_METHOD:
		if (c == ' ')
			gd->gd_state = GUARD_URI;
		else if (gd->gd_mlen + 1 < sizeof gd->gd_method &&
		    c >= 'A' && c <= 'Z') {
			gd->gd_method[gd->gd_mlen++] = (char)c;
			return (0);
		} else {
			/* Not a method: evhttp answers the bad request. */
			gd->gd_state = GUARD_LINE;
			gd->gd_lax = 1;
			return (0);
		}
		return (guard_method(gd));
	case GUARD_URI:
		if (c == ' ')
			gd->gd_state = GUARD_LINE;
		else if (c == '\r' || c == '\n')
			return (guard_version(gd));	/* none */
		else if (++gd->gd_uri > GUARD_MAX_URI) {
			guard_refuse(gd, 414, "URI Too Long", "UNKNOWN",
			    "the request URI is over 4 KiB", NULL);
			return (-1);
		}
		return (0);
	case GUARD_LINE:
		if (gd->gd_vlen == SIZE_MAX)
			;			/* checked at the line's \r */
		else if (c == '\r' || c == '\n') {
			if (guard_version(gd) == -1)
				return (-1);
			gd->gd_vlen = SIZE_MAX;
		} else if (gd->gd_vlen + 1 < sizeof gd->gd_version)
			gd->gd_version[gd->gd_vlen++] = (char)c;
		else	/* too long: no version of ours */
			gd->gd_vlen = sizeof gd->gd_version - 1;
		if (c == '\n') {
			gd->gd_state = GUARD_HEADERS;
			gd->gd_line = 0;
		}
		return (0);
	case GUARD_HEADERS:
		if (c == '\n') {
			if (gd->gd_line == 0) {
				/* An empty line: the head is whole. */
				gd->gd_state = GUARD_IDLE;
				evtimer_del(gd->gd_timer);
				return (0);
			}
			gd->gd_line = 0;
			return (gd->gd_lax ? 0 : guard_header_end(gd));
		}
		if (c != '\r')
			gd->gd_line++;
		return (gd->gd_lax ? 0 : guard_header_byte(gd, c));
	default:
		return (0);
	}
}

/*
 * Turns Nagle's algorithm off on a client's socket: a response's headers
 * and its file body go out in separate calls (writev, then sendfile), and
 * the small second one must not wait for the client's delayed ACK.
 */
static void
guard_nodelay(struct guard *gd)
{
	int	 fd = bufferevent_getfd(gd->gd_bev), on = 1;

	if (fd != -1 && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on,
	    sizeof on) == -1)
		log_debug("%s: TCP_NODELAY: %s", __func__, strerror(errno));
}

/*
 * New bytes in a connection's input, before evhttp's read callback sees
 * them: follow the request head; when refused, take the bytes away.
 */
static void
guard_input_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct guard		*gd = arg;
	struct evbuffer_ptr	 at;
	struct evbuffer_iovec	 v[16];
	size_t			 len, i, j, left;
	int			 n;

	if (info->n_added == 0)
		return;
	len = evbuffer_get_length(buf);
	if (gd->gd_state == GUARD_NEW) {
		gd->gd_state = GUARD_IDLE;
		if (guard_admit(gd) == -1)
			goto refused;
		guard_nodelay(gd);
	}
	if (gd->gd_state == GUARD_CLOSING)
		goto refused;
	left = info->n_added;
	if (evbuffer_ptr_set(buf, &at, len - left, EVBUFFER_PTR_SET) == -1)
		return;
	while (left > 0) {
		n = evbuffer_peek(buf, (ev_ssize_t)left, &at, v, 16);
		if (n <= 0)
			return;
		for (i = 0; i < (size_t)n && i < 16 && left > 0; i++) {
			for (j = 0; j < v[i].iov_len && left > 0; j++, left--) {
				if (guard_byte(gd,
				    ((unsigned char *)v[i].iov_base)[j]) == -1)
					goto refused;
			}
			evbuffer_ptr_set(buf, &at, v[i].iov_len, EVBUFFER_PTR_ADD);
		}
	}
	return;
refused:
	evbuffer_drain(buf, len);
}

/*
 * Forgets connections that evhttp has freed: bufferevent_free() clears
 * their callbacks, and the guard's own reference kept them until now.
 */
static void
guard_sweep_cb(evutil_socket_t fd, short events, void *arg)
{
	struct guard		*gd, *next;
	bufferevent_data_cb	 r, w;
	bufferevent_event_cb	 e;
	void			*a;

	(void)fd;
	(void)events;
	(void)arg;
	for (gd = TAILQ_FIRST(&guard_list); gd != NULL; gd = next) {
		next = TAILQ_NEXT(gd, gd_entry);
		bufferevent_getcb(gd->gd_bev, &r, &w, &e, &a);
		if (r != NULL || w != NULL || e != NULL)
			continue;
		TAILQ_REMOVE(&guard_list, gd, gd_entry);
		guard_count--;
		metrics_connection(-1);
		evbuffer_remove_cb_entry(bufferevent_get_input(gd->gd_bev),
		    gd->gd_incb);
		bufferevent_decref(gd->gd_bev);
		event_free(gd->gd_timer);
		free(gd);
	}
}

/*
 * evhttp's bufferevent for a new connection: the socket, or TLS over it,
 * watched by a guard.  evhttp sets the socket later.
 */
struct bufferevent *
proxy_guard_bev(struct event_base *base, void *arg)
{
	struct timeval		 tv = { 1, 0 };
	struct bufferevent	*bev;
	struct guard		*gd;
	SSL			*ssl;

	(void)arg;
	if (guard_sweep == NULL) {
		guard_sweep = event_new(base, -1, EV_PERSIST, guard_sweep_cb,
		    NULL);
		event_add(guard_sweep, &tv);
	}
	/* No deferred callbacks: the guard must see bytes before evhttp. */
	if (guard_ssl != NULL) {
		if ((ssl = SSL_new(guard_ssl)) == NULL)
			return (NULL);
		bev = bufferevent_openssl_socket_new(base, -1, ssl,
		    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	} else
		bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		return (NULL);
	/* Blob bytes go out by sendfile: more than libevent's 16 KiB a call. */
	if (guard_ssl == NULL)
		bufferevent_set_max_single_write(bev, GUARD_MAX_WRITE);
	gd = xcalloc(1, sizeof *gd);
	gd->gd_bev = bev;
	gd->gd_state = GUARD_NEW;
	gd->gd_timer = evtimer_new(base, guard_timeout_cb, gd);
	gd->gd_incb = evbuffer_add_cb(bufferevent_get_input(bev),
	    guard_input_cb, gd);
	/* Keeps the bufferevent until the sweep sees evhttp freed it. */
	bufferevent_incref(bev);
	TAILQ_INSERT_TAIL(&guard_list, gd, gd_entry);
	guard_count++;
	metrics_connection(1);
	return (bev);
}

/* Frees the guards of connections still open at exit. */
void
proxy_guard_free(void)
{
	if (guard_sweep != NULL) {
		guard_sweep_cb(-1, 0, NULL);
		event_free(guard_sweep);
		guard_sweep = NULL;
	}
	if (guard_ssl != NULL)
		SSL_CTX_free(guard_ssl);
	guard_ssl = NULL;
}
