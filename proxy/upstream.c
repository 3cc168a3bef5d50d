/*
 * proxy/upstream.c: the client of upstream registries, on libevent's evhttp
 * with OpenSSL bufferevents for https.
 *
 * One request goes through these steps until it has a final response:
 * a 401 with a Bearer challenge fetches an anonymous (or, with configured
 * credentials, a Basic-authenticated) token from the realm the upstream
 * named, caches it per upstream and scope, and retries once; a redirect is
 * followed to any http or https URL, without the Authorization header, at
 * most UP_MAX_REDIRECTS times; a connection error, timeout, 429 or 5xx is
 * retried after a short backoff at most UP_MAX_RETRIES times.  Nothing of
 * the client's own request (headers, credentials) is ever sent upstream.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>	/* ntoread, chunked */
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "nixmirror.h"
#include "policy/policy.h"
#include "proxy/proxy.h"

#define UP_MAX_REDIRECTS	5
#define UP_MAX_RETRIES		2
#define UP_BACKOFF_MS		250
#define UP_MAX_TOKEN_BODY	(64 * 1024)
#define UP_MAX_TOKEN		(16 * 1024)	/* longer tokens are refused */
#define UP_TOKEN_CACHE_MAX	1024		/* tokens kept, at most */
#define UP_TOKEN_CACHE_BYTES	(4 * 1024 * 1024) /* their bytes, at most */
/*
 * Body bytes per read.  libevent rounds a chain's size plus its header up
 * to a power of two, so a flat 256 KiB would allocate 512 KiB chains and
 * push the heap of a cold download past the trim threshold.
 */
#define UP_READ_AHEAD		(256 * 1024 - 512)
#define UP_TOKEN_DEFAULT_TTL	60
#define UP_USER_AGENT		"nixmirror/" PACKAGE_VERSION

/* A kept-alive connection to one scheme://host:port. */
struct up_conn {
	char			*co_key;
	struct evhttp_connection *co_evcon;
	int			 co_busy;
	int			 co_dead;
	int			 co_tls;
	TAILQ_ENTRY(up_conn)	 co_entry;
};

/* A cached token of an upstream for a scope. */
struct up_token {
	char			*tk_key;	/* "ns scope" */
	char			*tk_token;
	size_t			 tk_size;	/* bytes of key and token */
	time_t			 tk_expires;
	TAILQ_ENTRY(up_token)	 tk_entry;
};

enum up_state {
	UP_SENDING,		/* waiting for the response headers */
	UP_AUTH,		/* 401: read it, then fetch a token */
	UP_REDIRECT,		/* 3xx: read it, then follow */
	UP_RETRY,		/* 429/5xx: read it, then retry */
	UP_DELIVER,		/* the final response: hand it on */
};

struct up_req {
	const struct nm_upstream *ur_up;
	enum evhttp_cmd_type	 ur_method;
	char			*ur_url;	/* the URL asked now */
	char			*ur_scope;	/* repository:<repo>:pull or NULL */
	char			*ur_accept;
	char			*ur_auth;	/* Authorization header, or NULL */
	int			 ur_redirects;
	int			 ur_retries;
	int			 ur_authtried;
	enum up_state		 ur_state;
	int			 ur_status;
	char			*ur_location;
	char			*ur_challenge;
	char			*ur_error;	/* why the last try failed */
	struct up_conn		*ur_conn;
	struct evhttp_request	*ur_req;	/* the try in flight, or NULL */
	struct event		*ur_timer;
	struct event		*ur_cut;	/* cancels a refused transfer */
	struct event		*ur_more;	/* reads a body ahead */
	struct event		*ur_stall;	/* the progress check of a try */
	uint64_t		 ur_got;	/* body bytes in this window */
	int			 ur_paused;	/* the caller stopped reading */
	int			 ur_waspaused;	/* ... at some time this window */
	char			*ur_connect;	/* checked address of a hop */
	int			 ur_refused;	/* a hop to a refused address */
	int			 ur_own;	/* this try is to its own host */
	int			 ur_slot;	/* holds one of its upstream's */
	int			 ur_queued;	/* waits for one */
	TAILQ_ENTRY(up_req)	 ur_qentry;
	struct up_callbacks	 ur_cb;
	void			*ur_arg;
	/* A token request collects its body here for its parent. */
	struct up_req		*ur_parent;
	struct evbuffer		*ur_body;
};

static struct event_base	*up_base;
static struct evdns_base	*up_dns;
static SSL_CTX			*up_ssl;
static TAILQ_HEAD(, up_conn)	 up_conns = TAILQ_HEAD_INITIALIZER(up_conns);
static TAILQ_HEAD(up_token_head, up_token) up_tokens =
    TAILQ_HEAD_INITIALIZER(up_tokens);
/*
 * What is known of each upstream: the address its own host was last
 * reached at, and its requests in flight (at most
 * upstream_max_connections; the rest wait in order).
 */
struct up_peer {
	const struct nm_upstream *pe_up;
	char			*pe_host;	/* the host of its URL */
	struct sockaddr_storage	 pe_addr;
	int			 pe_known;
	int			 pe_active;	/* slots held */
	size_t			 pe_nqueued;
	TAILQ_HEAD(, up_req)	 pe_queue;
	struct up_peer		*pe_next;
};
static struct up_peer		*up_peers;
static size_t			 up_ntokens;	/* in up_tokens */
static size_t			 up_token_bytes; /* their tk_size */

static void	up_send(struct up_req *);
static void	up_finish(struct up_req *, const char *);
static void	up_token_fetch(struct up_req *);
static void	up_token_drop(struct up_token *);
static void	up_more_cb(evutil_socket_t, short, void *);
static void	up_stall_arm(struct up_req *);
static void	up_stall_cb(evutil_socket_t, short, void *);
static int	up_hop_needs_check(struct up_req *, const char *);
static void	up_peer_note(struct up_req *);
static void	up_hop_check(struct up_req *, const char *, int);
static int	up_slot_take(struct up_req *);
static void	up_slot_unqueue(struct up_req *);
static void	up_slot_put(struct up_req *);
static void	up_conn_done(struct up_req *);

/* Sets up TLS (system CAs plus --upstream-ca) and the resolver. */
int
proxy_upstream_init(struct event_base *base, char **cause)
{
	up_base = base;
	if ((up_dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
	    EVDNS_BASE_DISABLE_WHEN_INACTIVE)) == NULL &&
	    (up_dns = evdns_base_new(base, 0)) != NULL)
		(void)evdns_base_load_hosts(up_dns, NULL);
	if ((up_ssl = proxy_tls_client(nm_conf->cf_upstream_ca, cause)) ==
	    NULL) {
		char *c = *cause;

		xasprintf(cause, "upstream_ca: %s", c);
		free(c);
		return (-1);
	}
	return (0);
}

/*
 * A TLS client context that checks certificates against the system CAs
 * and, if not NULL, a PEM file of more; NULL with *cause.
 */
SSL_CTX *
proxy_tls_client(const char *cafile, char **cause)
{
	SSL_CTX	*ctx;

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		fatalx("%s: SSL_CTX_new", __func__);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (SSL_CTX_set_default_verify_paths(ctx) != 1)
		log_warnx("%s: no system CA store", __func__);
	if (cafile != NULL &&
	    SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) {
		xasprintf(cause, "cannot load %s", cafile);
		SSL_CTX_free(ctx);
		return (NULL);
	}
	return (ctx);
}

/* Frees connections, tokens, TLS and the resolver at exit. */
void
proxy_upstream_free(void)
{
	struct up_conn	*co;
	struct up_token	*tk;
	struct up_peer	*pe;

	while ((co = TAILQ_FIRST(&up_conns)) != NULL) {
		TAILQ_REMOVE(&up_conns, co, co_entry);
		evhttp_connection_free(co->co_evcon);
		free(co->co_key);
		free(co);
	}
	while ((tk = TAILQ_FIRST(&up_tokens)) != NULL)
		up_token_drop(tk);
	while ((pe = up_peers) != NULL) {
		up_peers = pe->pe_next;
		free(pe->pe_host);
		free(pe);
	}
	if (up_ssl != NULL)
		SSL_CTX_free(up_ssl);
	if (up_dns != NULL)
		evdns_base_free(up_dns, 0);
	up_ssl = NULL;
	up_dns = NULL;
}

/*
 * Parses a WWW-Authenticate challenge: a scheme, then comma-separated
 * name=value parameters whose values are tokens or quoted strings.
 */
int
proxy_challenge_parse(const char *hdr, char **scheme, char **realm,
    char **service, char **scope)
{
	const char	*p = hdr, *name;
	size_t		 nlen;
	char		*val, **dst;
	size_t		 vlen;

	*scheme = *realm = *service = *scope = NULL;
	while (*p == ' ' || *p == '\t')
		p++;
	for (name = p; isalnum((unsigned char)*p) || *p == '-'; p++)
		;
	if (p == name || p - name > 32)
		return (-1);
	*scheme = xmalloc((size_t)(p - name) + 1);
	memcpy(*scheme, name, (size_t)(p - name));
	(*scheme)[p - name] = '\0';
	while (*p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		for (name = p; isalnum((unsigned char)*p) || *p == '_' ||
		    *p == '-'; p++)
			;
		nlen = (size_t)(p - name);
		if (nlen == 0 || *p++ != '=')
			goto fail;
		val = xmalloc(strlen(p) + 1);
		vlen = 0;
		if (*p == '"') {
			for (p++; *p != '"'; p++) {
				if (*p == '\\' && p[1] != '\0')
					p++;
				if (*p == '\0') {
					free(val);
					goto fail;
				}
				val[vlen++] = *p;
			}
			p++;
		} else {
			while (*p != '\0' && *p != ',' && *p != ' ')
				val[vlen++] = *p++;
		}
		val[vlen] = '\0';
		dst = NULL;
		if (nlen == 5 && strncasecmp(name, "realm", 5) == 0)
			dst = realm;
		else if (nlen == 7 && strncasecmp(name, "service", 7) == 0)
			dst = service;
		else if (nlen == 5 && strncasecmp(name, "scope", 5) == 0)
			dst = scope;
		if (dst != NULL) {
			free(*dst);
			*dst = val;
		} else
			free(val);
	}
	return (0);
fail:
	free(*scheme);
	free(*realm);
	free(*service);
	free(*scope);
	*scheme = *realm = *service = *scope = NULL;
	return (-1);
}

/* Drops a cached token. */
static void
up_token_drop(struct up_token *tk)
{
	TAILQ_REMOVE(&up_tokens, tk, tk_entry);
	up_ntokens--;
	up_token_bytes -= tk->tk_size;
	free(tk->tk_key);
	free(tk->tk_token);
	free(tk);
}

/*
 * A cached token of the upstream for the scope, or NULL.  The cache is
 * kept in least-recently-used order, most recent first.
 */
static const char *
up_token_get(const struct nm_upstream *up, const char *scope)
{
	struct up_token	*tk, *next;
	char		*key;
	time_t		 now = time(NULL);
	const char	*found = NULL;

	xasprintf(&key, "%s %s", up->up_ns, scope != NULL ? scope : "");
	for (tk = TAILQ_FIRST(&up_tokens); tk != NULL; tk = next) {
		next = TAILQ_NEXT(tk, tk_entry);
		if (tk->tk_expires <= now)
			up_token_drop(tk);
		else if (found == NULL && strcmp(tk->tk_key, key) == 0) {
			found = tk->tk_token;
			TAILQ_REMOVE(&up_tokens, tk, tk_entry);
			TAILQ_INSERT_HEAD(&up_tokens, tk, tk_entry);
		}
	}
	free(key);
	return (found);
}

/*
 * Caches a token until a little before it expires, in place of an older
 * one for the scope.  Past UP_TOKEN_CACHE_MAX tokens or their bytes, the
 * least recently used go.
 */
static void
up_token_put(const struct nm_upstream *up, const char *scope,
    const char *token, long ttl)
{
	struct up_token	*tk, *old, *next;
	static time_t	 warned;
	size_t		 dropped = 0;

	tk = xcalloc(1, sizeof *tk);
	xasprintf(&tk->tk_key, "%s %s", up->up_ns, scope != NULL ? scope : "");
	tk->tk_token = xstrdup(token);
	tk->tk_size = strlen(tk->tk_key) + strlen(tk->tk_token) + sizeof *tk;
	if (ttl > 30)
		ttl -= 10;	/* do not use it up to the last second */
	tk->tk_expires = time(NULL) + ttl;
	for (old = TAILQ_FIRST(&up_tokens); old != NULL; old = next) {
		next = TAILQ_NEXT(old, tk_entry);
		if (strcmp(old->tk_key, tk->tk_key) == 0)
			up_token_drop(old);
	}
	while (!TAILQ_EMPTY(&up_tokens) && (up_ntokens >= UP_TOKEN_CACHE_MAX ||
	    up_token_bytes + tk->tk_size > UP_TOKEN_CACHE_BYTES)) {
		up_token_drop(TAILQ_LAST(&up_tokens, up_token_head));
		dropped++;
	}
	if (dropped > 0 && warned != time(NULL)) {
		warned = time(NULL);
		log_info("upstream token cache full (%zu tokens, %zu bytes): "
		    "dropped the least recently used", up_ntokens,
		    up_token_bytes);
	}
	TAILQ_INSERT_HEAD(&up_tokens, tk, tk_entry);
	up_ntokens++;
	up_token_bytes += tk->tk_size;
}

/* The Authorization header a request starts with: a cached token. */
static void
up_auth_cached(struct up_req *ur)
{
	const char	*tok;

	free(ur->ur_auth);
	ur->ur_auth = NULL;
	if (ur->ur_parent == NULL &&
	    (tok = up_token_get(ur->ur_up, ur->ur_scope)) != NULL)
		xasprintf(&ur->ur_auth, "Bearer %s", tok);
}

/* Frees a connection from a fresh event, outside libevent's callbacks. */
static void
up_conn_free_cb(evutil_socket_t fd, short events, void *arg)
{
	struct up_conn	*co = arg;

	(void)fd;
	(void)events;
	TAILQ_REMOVE(&up_conns, co, co_entry);
	evhttp_connection_free(co->co_evcon);
	free(co->co_key);
	free(co);
}

/* The peer closed a connection: it is not reused (TLS cannot be). */
static void
up_conn_close_cb(struct evhttp_connection *evcon, void *arg)
{
	struct up_conn	*co = arg;

	(void)evcon;
	if (co->co_dead)
		return;
	co->co_dead = 1;
	if (!co->co_busy)
		event_base_once(up_base, -1, EV_TIMEOUT, up_conn_free_cb, co,
		    NULL);
}

/* Gives a connection back for reuse, or frees it when it died. */
static void
up_conn_release(struct up_conn *co)
{
	if (co == NULL)
		return;
	co->co_busy = 0;
	if (co->co_dead)
		event_base_once(up_base, -1, EV_TIMEOUT, up_conn_free_cb, co,
		    NULL);
}

/*
 * A TLS bufferevent (connecting) that checks the certificate and that it
 * names host; NULL on error.
 */
struct bufferevent *
proxy_tls_bufferevent(struct event_base *base, SSL_CTX *ctx,
    const char *host)
{
	struct bufferevent	*bev;
	struct in6_addr		 a6;
	SSL			*ssl;
	char			 sni[256];
	int			 ip;

	if ((ssl = SSL_new(ctx)) == NULL)
		return (NULL);
	ip = inet_pton(AF_INET, host, &a6) == 1 ||
	    inet_pton(AF_INET6, host, &a6) == 1;
	/* The macro casts its argument: give it a copy it may own. */
	snprintf(sni, sizeof sni, "%s", host);
	if (!ip)
		SSL_set_tlsext_host_name(ssl, sni);
	if ((ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) :
	    SSL_set1_host(ssl, host)) != 1) {
		SSL_free(ssl);
		return (NULL);
	}
	bev = bufferevent_openssl_socket_new(base, -1, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE |
	    BEV_OPT_DEFER_CALLBACKS);
	if (bev == NULL) {
		SSL_free(ssl);
		return (NULL);
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return (bev);
}

/*
 * An idle kept-alive connection to scheme://host:port, or a new one; addr
 * is the address to connect to (host itself, or the checked address of a
 * hop), and TLS checks the certificate against host.
 */
static struct up_conn *
up_conn_get(int tls, const char *host, const char *addr, int port)
{
	struct up_conn		*co;
	struct bufferevent	*bev = NULL;
	char			*key;

	xasprintf(&key, "%s://%s:%d@%s", tls ? "https" : "http", host, port,
	    addr);
	TAILQ_FOREACH(co, &up_conns, co_entry) {
		if (!co->co_busy && !co->co_dead &&
		    strcmp(co->co_key, key) == 0) {
			free(key);
			co->co_busy = 1;
			return (co);
		}
	}
	if (tls && (bev = proxy_tls_bufferevent(up_base, up_ssl, host)) ==
	    NULL) {
		free(key);
		return (NULL);
	}
	co = xcalloc(1, sizeof *co);
	co->co_key = key;
	co->co_tls = tls;
	co->co_evcon = evhttp_connection_base_bufferevent_new(up_base, up_dns,
	    bev, addr, (unsigned short)port);
	if (co->co_evcon == NULL)
		fatalx("%s: evhttp_connection_base_bufferevent_new", __func__);
	evhttp_connection_set_timeout(co->co_evcon,
	    nm_conf->cf_upstream_timeout);
	evhttp_connection_set_retries(co->co_evcon, 0);
	evhttp_connection_set_closecb(co->co_evcon, up_conn_close_cb, co);
	co->co_busy = 1;
	TAILQ_INSERT_TAIL(&up_conns, co, co_entry);
	return (co);
}

/* Runs a request again after a delay (0: at the next loop turn). */
static void
up_timer_cb(evutil_socket_t fd, short events, void *arg)
{
	struct up_req	*ur = arg;

	(void)fd;
	(void)events;
	if (ur->ur_error != NULL) {	/* aborted while it waited */
		up_slot_put(ur);
		up_finish(ur, ur->ur_error);
		return;
	}
	up_send(ur);
}

static void
up_schedule(struct up_req *ur, int ms)
{
	struct timeval	 tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(ur->ur_timer, &tv);
}

/* Sets the error of the current try (the first one wins). */
static void
up_error_set(struct up_req *ur, const char *what)
{
	char	*text;

	if (ur->ur_error != NULL)
		return;
	/*
	 * What failed, for the client too: the URL (which may come from an
	 * upstream's Location) goes only to the log.
	 */
	log_debug("upstream %s: %s", ur->ur_url, what);
	text = xstrvis(what);
	ur->ur_error = text;
}

/* Logs the rate-limit headers an upstream sends. */
static void
up_log_ratelimit(struct up_req *ur, struct evkeyvalq *hdrs)
{
	const char	*rem;
	char		*vis;

	if ((rem = evhttp_find_header(hdrs, "ratelimit-remaining")) != NULL) {
		if (rem[0] >= '0' && rem[0] <= '9')
			metrics_upstream_ratelimit(ur->ur_up->up_ns,
			    strtoll(rem, NULL, 10));
		vis = xstrvis(rem);
		log_info("upstream %s: ratelimit-remaining %.64s",
		    ur->ur_up->up_ns, vis);
		free(vis);
	}
}

/* The response headers: decide whether this response is the final one. */
static int
up_header_cb(struct evhttp_request *req, void *arg)
{
	struct up_req		*ur = arg;
	struct evkeyvalq	*hdrs = evhttp_request_get_input_headers(req);
	const char		*v;
	int			 st;

	st = ur->ur_status = evhttp_request_get_response_code(req);
	up_peer_note(ur);
	log_debug("upstream %s %s: %d", ur->ur_method == EVHTTP_REQ_HEAD ?
	    "HEAD" : "GET", ur->ur_url, st);
	up_log_ratelimit(ur, hdrs);
	if (st == 401 && ur->ur_parent == NULL && !ur->ur_authtried &&
	    (v = evhttp_find_header(hdrs, "WWW-Authenticate")) != NULL) {
		free(ur->ur_challenge);
		ur->ur_challenge = xstrdup(v);
		ur->ur_state = UP_AUTH;
	} else if ((st == 301 || st == 302 || st == 303 || st == 307 ||
	    st == 308) && (v = evhttp_find_header(hdrs, "Location")) != NULL) {
		free(ur->ur_location);
		ur->ur_location = xstrdup(v);
		ur->ur_state = UP_REDIRECT;
	} else if ((st == 429 || st >= 500) && ur->ur_retries < UP_MAX_RETRIES)
		ur->ur_state = UP_RETRY;
	else {
		ur->ur_state = UP_DELIVER;
		if (ur->ur_cb.uc_headers != NULL &&
		    ur->ur_cb.uc_headers(ur, st, hdrs, ur->ur_arg) == -1) {
			up_error_set(ur, "transfer aborted");
			return (-1);
		}
	}
	return (0);
}

/*
 * The body's bytes still to come into the connection's input, when they
 * may be read ahead: a plain (not TLS) connection, a body of known length
 * still being read, and reading not paused; else 0.
 */
static size_t
up_more_wanted(struct up_req *ur, struct bufferevent **bevp)
{
	struct bufferevent	*bev;

	if (ur->ur_req == NULL || ur->ur_conn == NULL ||
	    ur->ur_conn->co_tls || ur->ur_state != UP_DELIVER ||
	    ur->ur_error != NULL || ur->ur_req->chunked ||
	    ur->ur_req->ntoread <= 0 ||
	    (bev = evhttp_connection_get_bufferevent(
	    ur->ur_conn->co_evcon)) == NULL ||
	    (bufferevent_get_enabled(bev) & EV_READ) == 0 ||
	    bufferevent_getfd(bev) == -1 ||
	    evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		return (0);
	*bevp = bev;
	return (ur->ur_req->ntoread < UP_READ_AHEAD ?
	    (size_t)ur->ur_req->ntoread : UP_READ_AHEAD);
}

/* Shortens a reservation's vectors to len bytes in all. */
static void
up_iov_clamp(struct evbuffer_iovec *vec, int nvec, size_t len)
{
	int	 i;

	for (i = 0; i < nvec; i++) {
		if (vec[i].iov_len > len)
			vec[i].iov_len = len;
		len -= vec[i].iov_len;
	}
}

/*
 * libevent 2.1 reads a plain socket 4 KiB per loop turn, with three
 * syscalls and a pass through the parser each time: a blob of 64 MiB
 * took 16,000 turns.  After each piece of a body this reads what the
 * socket holds of the rest (never past the body's end) in one go, and
 * has libevent parse it, from the loop and outside libevent's callbacks.
 */
static void
up_more_cb(evutil_socket_t fd, short events, void *arg)
{
	struct up_req		*ur = arg;
	struct bufferevent	*bev = NULL;
	struct evbuffer		*in;
	struct evbuffer_iovec	 vec[2];
	size_t			 want;
	ssize_t			 n;
	int			 nvec;

	(void)fd;
	(void)events;
	if ((want = up_more_wanted(ur, &bev)) == 0)
		return;
	/* A bufferevent's input is closed at its end to all but itself. */
	in = bufferevent_get_input(bev);
	evbuffer_unfreeze(in, 0);
	nvec = evbuffer_reserve_space(in, (ev_ssize_t)want, vec, 2);
	up_iov_clamp(vec, nvec, want);
	/* Nothing there, the end or an error: libevent's own read sees it. */
	n = nvec > 0 ? readv(bufferevent_getfd(bev), vec, nvec) : -1;
	up_iov_clamp(vec, nvec, n > 0 ? (size_t)n : 0);
	if (nvec > 0)
		evbuffer_commit_space(in, vec, n > 0 ? nvec : 0);
	evbuffer_freeze(in, 0);
	if (n <= 0)
		return;
	/* The parser hands the bytes to up_chunk_cb; ur may be gone after. */
	bufferevent_trigger(bev, EV_READ, 0);
}

/* A piece of the body: to the caller, to a token's buffer, or away. */
static void
up_chunk_cb(struct evhttp_request *req, void *arg)
{
	struct up_req		*ur = arg;
	struct evbuffer		*buf = evhttp_request_get_input_buffer(req);
	struct bufferevent	*bev;

	ur->ur_got += evbuffer_get_length(buf);
	metrics_upstream_bytes(ur->ur_up->up_ns, evbuffer_get_length(buf));
	if (ur->ur_state == UP_DELIVER && ur->ur_parent != NULL &&
	    evbuffer_get_length(ur->ur_body) < UP_MAX_TOKEN_BODY) {
		evbuffer_add_buffer(ur->ur_body, buf);
		return;
	}
	if (ur->ur_state == UP_DELIVER && ur->ur_cb.uc_data != NULL &&
	    ur->ur_error == NULL) {
		if (ur->ur_cb.uc_data(ur, buf, ur->ur_arg) == -1) {
			up_error_set(ur, "transfer aborted");
			/* Cut it from the loop, outside libevent's callback. */
			event_active(ur->ur_cut, EV_TIMEOUT, 0);
		}
	}
	evbuffer_drain(buf, evbuffer_get_length(buf));
	if (up_more_wanted(ur, &bev) > 0)
		event_active(ur->ur_more, EV_TIMEOUT, 0);
}

/*
 * A refused body: cancel the request instead of reading (maybe endless)
 * bytes only to throw them away.  The connection is reset, so it is not
 * kept; libevent calls no callback of the request any more.
 */
static void
up_cut_cb(evutil_socket_t fd, short events, void *arg)
{
	struct up_req	*ur = arg;
	struct up_conn	*co = ur->ur_conn;

	(void)fd;
	(void)events;
	if (ur->ur_queued) {		/* still waiting for a slot */
		up_slot_unqueue(ur);
		evtimer_del(ur->ur_timer);
		up_finish(ur, ur->ur_error);
		return;
	}
	if (ur->ur_req == NULL)
		return;		/* it ended by itself in between */
	evhttp_cancel_request(ur->ur_req);
	ur->ur_req = NULL;
	if (co != NULL)
		co->co_dead = 1;
	up_conn_done(ur);
	up_finish(ur, ur->ur_error);
}

/* A failed try: connection error, timeout, early close. */
static void
up_error_cb(enum evhttp_request_error err, void *arg)
{
	struct up_req	*ur = arg;

	switch (err) {
	case EVREQ_HTTP_TIMEOUT:
		up_error_set(ur, "timed out");
		break;
	case EVREQ_HTTP_EOF:
		up_error_set(ur, ur->ur_state == UP_DELIVER ?
		    "connection closed before the whole body arrived" :
		    "connection failed or closed");
		break;
	case EVREQ_HTTP_INVALID_HEADER:
		up_error_set(ur, "invalid response");
		break;
	case EVREQ_HTTP_DATA_TOO_LONG:
		up_error_set(ur, "response too long");
		break;
	default:
		up_error_set(ur, "request failed");
		break;
	}
}

/* Resolves a Location against the URL it came from; NULL if not http(s). */
static char *
up_redirect_url(const char *base, const char *loc)
{
	const char	*p;
	char		*url;
	size_t		 n;

	if (strncmp(loc, "http://", 7) == 0 || strncmp(loc, "https://", 8) == 0)
		url = xstrdup(loc);
	else if (strncmp(loc, "//", 2) == 0)
		xasprintf(&url, "%.*s%s", (int)(strchr(base, ':') - base + 1),
		    base, loc);
	else if (loc[0] == '/') {
		p = strchr(strstr(base, "://") + 3, '/');
		n = p != NULL ? (size_t)(p - base) : strlen(base);
		xasprintf(&url, "%.*s%s", (int)n, base, loc);
	} else if (strchr(loc, ':') == NULL) {
		p = strrchr(base, '/');
		xasprintf(&url, "%.*s/%s", (int)(p - base), base, loc);
	} else
		return (NULL);
	if (strpbrk(url, " \t\r\n") != NULL) {
		free(url);
		return (NULL);
	}
	return (url);
}

/* Follows a redirect, without credentials. */
static void
up_redirect(struct up_req *ur)
{
	char	*url;

	if (++ur->ur_redirects > UP_MAX_REDIRECTS) {
		up_error_set(ur, "too many redirects");
		up_finish(ur, ur->ur_error);
		return;
	}
	if ((url = up_redirect_url(ur->ur_url, ur->ur_location)) == NULL) {
		up_error_set(ur, "redirect to a URL that is not http or https");
		up_finish(ur, ur->ur_error);
		return;
	}
	log_debug("upstream redirect %s -> %s", ur->ur_url, url);
	free(ur->ur_url);
	ur->ur_url = url;
	free(ur->ur_connect);
	ur->ur_connect = NULL;
	free(ur->ur_auth);
	ur->ur_auth = NULL;
	ur->ur_authtried = 1;
	up_schedule(ur, 0);
}

/* Done with a try: the next step, or the end. */
static void
up_done_cb(struct evhttp_request *req, void *arg)
{
	struct up_req	*ur = arg;
	char		*text;

	ur->ur_req = NULL;
	evtimer_del(ur->ur_stall);
	up_conn_done(ur);
	if (req == NULL || evhttp_request_get_response_code(req) == 0)
		up_error_set(ur, "connection failed");
	if (ur->ur_error != NULL) {
		if (ur->ur_state != UP_DELIVER &&
		    ur->ur_retries < UP_MAX_RETRIES) {
			text = xstrvis(ur->ur_url);
			log_info("upstream %s: %s; retrying", text,
			    ur->ur_error);
			free(text);
			free(ur->ur_error);
			ur->ur_error = NULL;
			up_schedule(ur, UP_BACKOFF_MS << ur->ur_retries++);
			return;
		}
		text = xstrvis(ur->ur_url);
		log_info("upstream %s: %s", text, ur->ur_error);
		free(text);
		up_finish(ur, ur->ur_error);
		return;
	}
	switch (ur->ur_state) {
	case UP_AUTH:
		up_token_fetch(ur);
		break;
	case UP_REDIRECT:
		up_redirect(ur);
		break;
	case UP_RETRY:
		log_info("upstream %s: status %d; retrying", ur->ur_url,
		    ur->ur_status);
		up_schedule(ur, UP_BACKOFF_MS << ur->ur_retries++);
		break;
	default:
		up_finish(ur, NULL);
		break;
	}
}

/*
 * The stall rule: every upstream_timeout seconds of a try, its response
 * headers must have come, and then at least upstream_min_rate bytes a
 * second of its body (windows in which the caller paused reading do not
 * count).  Each byte resets libevent's own timeout, so without this an
 * upstream trickling a byte a second would hold a connection and a temp
 * file for ever, with clients or without.  A stalled try is cut, with no
 * retry.
 */
static void
up_stall_arm(struct up_req *ur)
{
	struct timeval	 tv;

	ur->ur_got = 0;
	ur->ur_waspaused = ur->ur_paused;
	tv.tv_sec = nm_conf->cf_upstream_timeout;
	tv.tv_usec = 0;
	evtimer_add(ur->ur_stall, &tv);
}

static void
up_stall_cb(evutil_socket_t fd, short events, void *arg)
{
	struct up_req	*ur = arg;
	uint64_t	 want;
	char		 why[160], *url;

	(void)fd;
	(void)events;
	if (ur->ur_req == NULL)
		return;
	want = (uint64_t)nm_conf->cf_upstream_min_rate *
	    (uint64_t)nm_conf->cf_upstream_timeout;
	if (ur->ur_state == UP_SENDING)
		snprintf(why, sizeof why, "no response headers within %d "
		    "seconds", nm_conf->cf_upstream_timeout);
	else if (!ur->ur_waspaused && ur->ur_got < want)
		snprintf(why, sizeof why, "stalled: %llu bytes in %d seconds, "
		    "under the minimum of %d bytes a second",
		    (unsigned long long)ur->ur_got,
		    nm_conf->cf_upstream_timeout, nm_conf->cf_upstream_min_rate);
	else {
		up_stall_arm(ur);
		return;
	}
	url = xstrvis(ur->ur_url);
	log_warnx("upstream %s: %s; cut off", url, why);
	free(url);
	proxy_upstream_abort(ur, why);
}

/* The record of an upstream's own address, made on first use. */
static struct up_peer *
up_peer_get(const struct nm_upstream *up)
{
	struct up_peer		*pe;
	struct evhttp_uri	*uri;
	const char		*h;

	for (pe = up_peers; pe != NULL; pe = pe->pe_next)
		if (pe->pe_up == up)
			return (pe);
	pe = xcalloc(1, sizeof *pe);
	pe->pe_up = up;
	TAILQ_INIT(&pe->pe_queue);
	uri = evhttp_uri_parse(up->up_url);
	h = uri != NULL ? evhttp_uri_get_host(uri) : NULL;
	pe->pe_host = xstrdup(h != NULL ? h : "");
	if (uri != NULL)
		evhttp_uri_free(uri);
	pe->pe_next = up_peers;
	up_peers = pe;
	return (pe);
}

/* Notes the address a try to the upstream's own host is connected to. */
static void
up_peer_note(struct up_req *ur)
{
	struct up_peer		*pe;
	struct bufferevent	*bev;
	socklen_t		 len;
	evutil_socket_t		 fd;

	if (!ur->ur_own || ur->ur_conn == NULL ||
	    (bev = evhttp_connection_get_bufferevent(
	    ur->ur_conn->co_evcon)) == NULL ||
	    (fd = bufferevent_getfd(bev)) == -1)
		return;
	pe = up_peer_get(ur->ur_up);
	len = sizeof pe->pe_addr;
	if (getpeername(fd, (struct sockaddr *)&pe->pe_addr, &len) == 0)
		pe->pe_known = 1;
}

/*
 * Takes one of the upstream's upstream_max_connections slots for a try,
 * or puts the request in line for one (0): up_conn_done hands the slot
 * of a finished try straight to the first in line, so later arrivals
 * cannot overtake it.
 */
static int
up_slot_take(struct up_req *ur)
{
	struct up_peer	*pe;
	int		 cap = nm_conf->cf_upstream_max_connections;

	if (ur->ur_slot)
		return (1);
	pe = up_peer_get(ur->ur_up);
	if (cap == 0 || pe->pe_active < cap) {
		pe->pe_active++;
		ur->ur_slot = 1;
		return (1);
	}
	TAILQ_INSERT_TAIL(&pe->pe_queue, ur, ur_qentry);
	ur->ur_queued = 1;
	if (pe->pe_nqueued++ == 0)
		log_info("upstream %s: all %d connections busy; requests wait "
		    "in line", ur->ur_up->up_ns, cap);
	return (0);
}

/* Takes a request out of the line without a slot (it ends). */
static void
up_slot_unqueue(struct up_req *ur)
{
	struct up_peer	*pe;

	if (!ur->ur_queued)
		return;
	pe = up_peer_get(ur->ur_up);
	TAILQ_REMOVE(&pe->pe_queue, ur, ur_qentry);
	pe->pe_nqueued--;
	ur->ur_queued = 0;
}

/* Gives up a request's slot: to the first in line, or back. */
static void
up_slot_put(struct up_req *ur)
{
	struct up_peer	*pe;
	struct up_req	*next;

	if (!ur->ur_slot)
		return;
	ur->ur_slot = 0;
	pe = up_peer_get(ur->ur_up);
	if ((next = TAILQ_FIRST(&pe->pe_queue)) == NULL) {
		pe->pe_active--;
		return;
	}
	up_slot_unqueue(next);
	next->ur_slot = 1;
	up_schedule(next, 0);
}

/* The end of a try: its connection goes back to the pool, its slot on. */
static void
up_conn_done(struct up_req *ur)
{
	up_conn_release(ur->ur_conn);
	ur->ur_conn = NULL;
	up_slot_put(ur);
}

/*
 * Whether a try to host must have its address checked first: a redirect
 * or token realm that leaves the upstream's own host and is not one of
 * its redirect_hosts.
 */
static int
up_hop_needs_check(struct up_req *ur, const char *host)
{
	struct up_peer	*pe = up_peer_get(ur->ur_up);

	ur->ur_own = strcasecmp(host, pe->pe_host) == 0;
	return (!ur->ur_own && !policy_hop_listed(ur->ur_up, host));
}

/*
 * Ends a request whose hop leads to a refused address: one log line, and
 * no retry (the caller answers 502).
 */
static void
up_hop_refuse(struct up_req *ur, const char *addr, const char *why)
{
	char	*url;

	url = xstrvis(ur->ur_url);
	log_warnx("upstream %s: %s refused: %s is %s (redirect_hosts of the "
	    "upstream may allow it)", ur->ur_up->up_ns, url, addr, why);
	free(url);
	ur->ur_refused = 1;
	ur->ur_status = 0;
	up_error_set(ur, "it redirected to an address that is not allowed");
	up_finish(ur, ur->ur_error);
}

/* The text of an address, or "" for another family. */
static void
up_addr_text(const struct sockaddr *sa, char *addr, size_t len)
{
	const struct sockaddr_in	*s4;
	const struct sockaddr_in6	*s6;

	addr[0] = '\0';
	if (sa->sa_family == AF_INET) {
		s4 = (const struct sockaddr_in *)(const void *)sa;
		evutil_inet_ntop(AF_INET, &s4->sin_addr, addr, len);
	} else if (sa->sa_family == AF_INET6) {
		s6 = (const struct sockaddr_in6 *)(const void *)sa;
		evutil_inet_ntop(AF_INET6, &s6->sin6_addr, addr, len);
	}
}

/*
 * Sends a hop's try to the first of its addresses the rule allows (to
 * that very address: DNS may say otherwise next time), or refuses it.
 */
static void
up_hop_go(struct up_req *ur, const struct evutil_addrinfo *ai)
{
	struct up_peer	*pe = up_peer_get(ur->ur_up);
	const char	*why, *first = NULL;
	char		 addr[INET6_ADDRSTRLEN], shown[INET6_ADDRSTRLEN];

	shown[0] = '\0';
	for (; ai != NULL; ai = ai->ai_next) {
		up_addr_text(ai->ai_addr, addr, sizeof addr);
		why = policy_hop_refused(pe->pe_known ?
		    (const struct sockaddr *)&pe->pe_addr : NULL, ai->ai_addr);
		if (addr[0] != '\0' && why == NULL) {
			free(ur->ur_connect);
			ur->ur_connect = xstrdup(addr);
			up_send(ur);
			return;
		}
		if (first == NULL) {
			first = why != NULL ? why : "of an unknown family";
			snprintf(shown, sizeof shown, "%s", addr);
		}
	}
	up_hop_refuse(ur, shown[0] != '\0' ? shown : "its address",
	    first != NULL ? first : "unknown");
}

/* The resolver's answer for a hop's host. */
static void
up_hop_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
	struct up_req	*ur = arg;

	if (result != 0 || res == NULL) {
		if (res != NULL)
			evutil_freeaddrinfo(res);
		log_warnx("upstream %s: cannot resolve a redirect's host: %s",
		    ur->ur_up->up_ns, evutil_gai_strerror(result));
		up_error_set(ur, "cannot resolve the host it redirected to");
		up_finish(ur, ur->ur_error);
		return;
	}
	if (ur->ur_error != NULL)	/* aborted while resolving */
		up_finish(ur, ur->ur_error);
	else
		up_hop_go(ur, res);
	evutil_freeaddrinfo(res);
}

/* Resolves a hop's host (at once for an address), then up_hop_go. */
static void
up_hop_check(struct up_req *ur, const char *host, int port)
{
	struct evutil_addrinfo	 hints, ai;
	struct sockaddr_in	 s4;
	struct sockaddr_in6	 s6;
	char			 serv[16];

	memset(&s4, 0, sizeof s4);
	memset(&s6, 0, sizeof s6);
	memset(&ai, 0, sizeof ai);
	if (evutil_inet_pton(AF_INET, host, &s4.sin_addr) == 1) {
		s4.sin_family = AF_INET;
		ai.ai_addr = (struct sockaddr *)&s4;
		up_hop_go(ur, &ai);
		return;
	}
	if (evutil_inet_pton(AF_INET6, host, &s6.sin6_addr) == 1) {
		s6.sin6_family = AF_INET6;
		ai.ai_addr = (struct sockaddr *)&s6;
		up_hop_go(ur, &ai);
		return;
	}
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	/* The callback may run before this returns: ur is not used after. */
	snprintf(serv, sizeof serv, "%d", port);
	(void)evdns_getaddrinfo(up_dns, host, serv, &hints, up_hop_resolved,
	    ur);
}

/* Sends the current try of a request. */
static void
up_send(struct up_req *ur)
{
	struct evhttp_uri	*uri;
	struct evhttp_request	*req;
	struct evkeyvalq	*oh;
	const char		*scheme, *host, *path, *query;
	char			 hosthdr[300], *target;
	int			 port, tls;

	ur->ur_state = UP_SENDING;
	ur->ur_status = 0;
	if ((uri = evhttp_uri_parse(ur->ur_url)) == NULL ||
	    (scheme = evhttp_uri_get_scheme(uri)) == NULL ||
	    (host = evhttp_uri_get_host(uri)) == NULL || *host == '\0' ||
	    (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
		if (uri != NULL)
			evhttp_uri_free(uri);
		up_error_set(ur, "not an http or https URL");
		up_finish(ur, ur->ur_error);
		return;
	}
	tls = strcmp(scheme, "https") == 0;
	if ((port = evhttp_uri_get_port(uri)) == -1)
		port = tls ? 443 : 80;
	path = evhttp_uri_get_path(uri);
	query = evhttp_uri_get_query(uri);
	xasprintf(&target, "%s%s%s", path != NULL && *path != '\0' ? path : "/",
	    query != NULL ? "?" : "", query != NULL ? query : "");
	snprintf(hosthdr, sizeof hosthdr, strchr(host, ':') != NULL ?
	    "[%s]" : "%s", host);
	if (port != (tls ? 443 : 80))
		snprintf(hosthdr + strlen(hosthdr), sizeof hosthdr -
		    strlen(hosthdr), ":%d", port);
	if (up_hop_needs_check(ur, host) && ur->ur_connect == NULL) {
		/* It sends this try again once the address is checked. */
		free(target);
		up_hop_check(ur, host, port);
		evhttp_uri_free(uri);
		return;
	}
	if (!up_slot_take(ur)) {
		/* up_conn_done sends it when a slot is free. */
		evhttp_uri_free(uri);
		free(target);
		return;
	}
	if ((ur->ur_conn = up_conn_get(tls, host, ur->ur_connect != NULL ?
	    ur->ur_connect : host, port)) == NULL) {
		evhttp_uri_free(uri);
		free(target);
		up_slot_put(ur);
		up_error_set(ur, "cannot set up TLS");
		up_finish(ur, ur->ur_error);
		return;
	}
	req = evhttp_request_new(up_done_cb, ur);
	ur->ur_req = req;
	evhttp_request_set_header_cb(req, up_header_cb);
	evhttp_request_set_chunked_cb(req, up_chunk_cb);
	evhttp_request_set_error_cb(req, up_error_cb);
	oh = evhttp_request_get_output_headers(req);
	evhttp_add_header(oh, "Host", hosthdr);
	evhttp_add_header(oh, "User-Agent", UP_USER_AGENT);
	if (ur->ur_accept != NULL)
		evhttp_add_header(oh, "Accept", ur->ur_accept);
	if (ur->ur_auth != NULL)
		evhttp_add_header(oh, "Authorization", ur->ur_auth);
	if (ur->ur_up->up_peer)
		evhttp_add_header(oh, PROXY_PEER_HEADER, "1");
	log_debug("upstream %s %s", ur->ur_method == EVHTTP_REQ_HEAD ? "HEAD" :
	    "GET", ur->ur_url);
	if (evhttp_make_request(ur->ur_conn->co_evcon, req, ur->ur_method,
	    target) == -1) {
		/* libevent has freed req. */
		ur->ur_req = NULL;
		up_conn_done(ur);
		up_error_set(ur, "cannot send the request");
		if (ur->ur_retries < UP_MAX_RETRIES) {
			free(ur->ur_error);
			ur->ur_error = NULL;
			up_schedule(ur, UP_BACKOFF_MS << ur->ur_retries++);
		} else
			up_finish(ur, ur->ur_error);
	} else
		up_stall_arm(ur);
	evhttp_uri_free(uri);
	free(target);
}

/* A new request object. */
static struct up_req *
up_req_new(const struct nm_upstream *up, int head, const char *url,
    const char *accept, const struct up_callbacks *cb, void *arg)
{
	struct up_req	*ur;

	ur = xcalloc(1, sizeof *ur);
	ur->ur_up = up;
	ur->ur_method = head ? EVHTTP_REQ_HEAD : EVHTTP_REQ_GET;
	ur->ur_url = xstrdup(url);
	ur->ur_accept = accept != NULL ? xstrdup(accept) : NULL;
	if (cb != NULL)
		ur->ur_cb = *cb;
	ur->ur_arg = arg;
	ur->ur_timer = evtimer_new(up_base, up_timer_cb, ur);
	ur->ur_cut = event_new(up_base, -1, 0, up_cut_cb, ur);
	ur->ur_more = event_new(up_base, -1, 0, up_more_cb, ur);
	ur->ur_stall = evtimer_new(up_base, up_stall_cb, ur);
	return (ur);
}

/* What the status page shows of a finished request's upstream. */
static void
up_status(const struct up_req *ur, const char *err)
{
	char	*why = NULL;

	if (err == NULL && ur->ur_status == 0)
		err = "no response";
	if (err == NULL && ur->ur_status == 429)
		xasprintf(&why, "rate limited (429)");
	else if (err == NULL && ur->ur_status >= 500)
		xasprintf(&why, "HTTP %d", ur->ur_status);
	status_upstream(ur->ur_up->up_ns, why != NULL ? why : err);
	free(why);
}

/* The end of a request: one uc_done, then it is freed. */
static void
up_finish(struct up_req *ur, const char *err)
{
	up_slot_unqueue(ur);
	up_slot_put(ur);
	metrics_upstream(ur->ur_up->up_ns, err != NULL || ur->ur_status == 0 ||
	    ur->ur_status >= 500);
	up_status(ur, err);
	if (ur->ur_cb.uc_done != NULL)
		ur->ur_cb.uc_done(ur, ur->ur_status, err, ur->ur_arg);
	event_free(ur->ur_timer);
	event_free(ur->ur_cut);
	event_free(ur->ur_more);
	event_free(ur->ur_stall);
	if (ur->ur_body != NULL)
		evbuffer_free(ur->ur_body);
	free(ur->ur_url);
	free(ur->ur_scope);
	free(ur->ur_accept);
	free(ur->ur_auth);
	free(ur->ur_location);
	free(ur->ur_challenge);
	free(ur->ur_error);
	free(ur->ur_connect);
	free(ur);
}

/*
 * Stops or restarts reading the response body (flow control for a caller
 * whose disk is slower than the upstream); see proxy.h.
 */
void
proxy_upstream_pause(struct up_req *ur, int paused)
{
	struct bufferevent	*bev;

	ur->ur_paused = paused;
	ur->ur_waspaused |= paused;
	if (ur->ur_req == NULL || ur->ur_conn == NULL ||
	    (bev = evhttp_connection_get_bufferevent(
	    ur->ur_conn->co_evcon)) == NULL)
		return;
	if (paused)
		bufferevent_disable(bev, EV_READ);
	else
		bufferevent_enable(bev, EV_READ);
}

/* Ends a transfer early, from the loop; see proxy.h. */
void
proxy_upstream_abort(struct up_req *ur, const char *why)
{
	up_error_set(ur, why);
	event_active(ur->ur_cut, EV_TIMEOUT, 0);
}

/* Fetches /v2/<repo>/<what> from an upstream; see proxy.h. */
struct up_req *
proxy_upstream_fetch(const struct nm_upstream *up, int head,
    const char *repo, const char *what, const char *accept,
    const struct up_callbacks *cb, void *arg)
{
	struct up_req	*ur;
	char		*url;

	xasprintf(&url, "%s/v2/%s/%s", up->up_url, repo, what);
	ur = up_req_new(up, head, url, accept, cb, arg);
	free(url);
	xasprintf(&ur->ur_scope, "repository:%s:pull", repo);
	up_auth_cached(ur);
	up_schedule(ur, 0);
	return (ur);
}

/* "Basic base64(user:password)" for an upstream with credentials. */
static char *
up_basic_auth(const struct nm_upstream *up)
{
	unsigned char	*out;
	char		*plain, *hdr;
	int		 n, len;

	if (up->up_user == NULL)
		return (NULL);
	n = xasprintf(&plain, "%s:%s", up->up_user, up->up_pass);
	out = xmalloc(4 * (((size_t)n + 2) / 3) + 1);
	len = EVP_EncodeBlock(out, (unsigned char *)plain, n);
	xasprintf(&hdr, "Basic %.*s", len, (char *)out);
	explicit_bzero(plain, (size_t)n);
	free(plain);
	free(out);
	return (hdr);
}

/* The token answer: cache it and send the parent again, or give up. */
static void
up_token_done(struct up_req *tr, int status, const char *err, void *arg)
{
	struct up_req	*ur = arg;
	json_t		*doc = NULL, *tok, *ttl;
	char		*body;
	size_t		 len;

	len = evbuffer_get_length(tr->ur_body);
	body = xmalloc(len + 1);
	evbuffer_remove(tr->ur_body, body, len);
	body[len] = '\0';
	if (err == NULL && status == 200)
		doc = json_loads(body, 0, NULL);
	free(body);
	if ((tok = json_object_get(doc, "token")) == NULL ||
	    !json_is_string(tok) || json_string_length(tok) == 0)
		tok = json_object_get(doc, "access_token");
	if (tr->ur_refused) {
		ur->ur_status = 0;
		xasprintf(&ur->ur_error, "token request for %s failed: the "
		    "token realm is on an address that is not allowed",
		    ur->ur_up->up_ns);
		json_decref(doc);
		up_finish(ur, ur->ur_error);
		return;
	}
	if (len >= UP_MAX_TOKEN_BODY || (json_is_string(tok) &&
	    json_string_length(tok) > UP_MAX_TOKEN)) {
		ur->ur_status = 0;
		xasprintf(&ur->ur_error, "token request for %s failed: the "
		    "token server sent a token over %d bytes", ur->ur_up->up_ns,
		    UP_MAX_TOKEN);
		log_warnx("%s", ur->ur_error);
		json_decref(doc);
		up_finish(ur, ur->ur_error);
		return;
	}
	if (!json_is_string(tok) || json_string_length(tok) == 0 ||
	    strpbrk(json_string_value(tok), "\r\n") != NULL) {
		ur->ur_status = status == 200 || status == 0 ? 401 : status;
		xasprintf(&ur->ur_error, "token request for %s failed: %s",
		    ur->ur_up->up_ns, err != NULL ? err : status == 200 ?
		    "no token in the answer" : "denied by the token server");
		json_decref(doc);
		up_finish(ur, ur->ur_error);
		return;
	}
	ttl = json_object_get(doc, "expires_in");
	up_token_put(ur->ur_up, ur->ur_scope, json_string_value(tok),
	    json_is_integer(ttl) && json_integer_value(ttl) > 0 ?
	    (long)json_integer_value(ttl) : UP_TOKEN_DEFAULT_TTL);
	free(ur->ur_auth);
	xasprintf(&ur->ur_auth, "Bearer %s", json_string_value(tok));
	json_decref(doc);
	log_debug("upstream %s: token for %s", ur->ur_up->up_ns, ur->ur_scope);
	up_schedule(ur, 0);
}

/*
 * A 401: fetch a token from the realm of the Bearer challenge (the realm
 * host may be another host: the upstream itself named it), or answer a
 * Basic challenge with the configured credentials.
 */
static void
up_token_fetch(struct up_req *ur)
{
	static const struct up_callbacks tcb = { NULL, NULL, up_token_done };
	struct up_req	*tr;
	char		*scheme, *realm, *service, *scope, *url, *es, *esc;

	ur->ur_authtried = 1;
	if (proxy_challenge_parse(ur->ur_challenge, &scheme, &realm, &service,
	    &scope) == -1) {
		up_error_set(ur, "unreadable WWW-Authenticate challenge");
		up_finish(ur, ur->ur_error);
		return;
	}
	if (strcasecmp(scheme, "Basic") == 0 && ur->ur_up->up_user != NULL) {
		free(ur->ur_auth);
		ur->ur_auth = up_basic_auth(ur->ur_up);
		up_schedule(ur, 0);
	} else if (strcasecmp(scheme, "Bearer") == 0 && realm != NULL &&
	    (strncmp(realm, "https://", 8) == 0 ||
	    strncmp(realm, "http://", 7) == 0)) {
		es = evhttp_uriencode(service != NULL ? service : "", -1, 0);
		esc = evhttp_uriencode(scope != NULL ? scope :
		    ur->ur_scope != NULL ? ur->ur_scope : "", -1, 0);
		xasprintf(&url, "%s%cservice=%s&scope=%s", realm,
		    strchr(realm, '?') != NULL ? '&' : '?', es, esc);
		free(es);
		free(esc);
		tr = up_req_new(ur->ur_up, 0, url, "application/json", &tcb, ur);
		free(url);
		tr->ur_parent = ur;
		tr->ur_body = evbuffer_new();
		tr->ur_auth = up_basic_auth(ur->ur_up);
		up_schedule(tr, 0);
	} else {
		up_error_set(ur, "authentication required and no way to "
		    "get a token");
		up_finish(ur, ur->ur_error);
	}
	free(scheme);
	free(realm);
	free(service);
	free(scope);
}
