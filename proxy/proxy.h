/*
 * proxy/proxy.h: the HTTP server and the registry API routes.
 */
#ifndef PROXY_H
#define PROXY_H

#include <sys/socket.h>

#include "nixmirror.h"

struct event_base;
struct store;

/* proxy/guard.c: limits, client checks and TLS under evhttp. */
struct bufferevent;
int	proxy_guard_tls(const char *cert, const char *key, char **cause);
struct bufferevent *proxy_guard_bev(struct event_base *, void *);
void	proxy_guard_free(void);

/* proxy/server.c */
/* Binds the listener; 0, or -1 with *cause. */
int	proxy_server_start(struct event_base *, struct store *,
	    const char *listen, char **cause);
void	proxy_server_stop(void);
/* The port it listens on (for "ADDR:0"); 0 when not listening. */
int	proxy_server_port(void);

/*
 * proxy/prefetch.c: "nixmirror prefetch", a client of a mirror (a
 * running one, or one started in this process on a loopback port) that
 * pulls each image whole, so that it is stored.  platform is "os/arch
 * [/variant]" or "all"; progress draws a live display on stderr; tls,
 * when not NULL, makes it talk https to the mirror.
 * Returns the number of images that failed, each named on stderr.
 */
struct policy_ref;
typedef struct ssl_ctx_st SSL_CTX;
struct bufferevent;
int	proxy_prefetch(struct event_base *, const char *host, int port,
	    SSL_CTX *tls, const struct policy_ref *, size_t,
	    const char *platform, int progress);

/* TLS clients (upstreams, prefetch): see proxy/upstream.c. */
SSL_CTX	*proxy_tls_client(const char *cafile, char **cause);
struct bufferevent *proxy_tls_bufferevent(struct event_base *, SSL_CTX *,
	    const char *host);

/* proxy/upstream.c: the client of upstream registries. */
struct up_req;
struct evkeyvalq;
struct evbuffer;
struct up_callbacks {
	/*
	 * The final response's status and headers (after auth, redirects and
	 * retries); return -1 to abort the transfer.
	 */
	int	(*uc_headers)(struct up_req *, int, struct evkeyvalq *, void *);
	/* A piece of the body, which the callee drains; -1 aborts. */
	int	(*uc_data)(struct up_req *, struct evbuffer *, void *);
	/*
	 * The end: status is the final one (0 when none came) and err is
	 * NULL when the whole response arrived, else a one-line reason.
	 */
	void	(*uc_done)(struct up_req *, int, const char *, void *);
};
/* Sets up TLS and DNS for upstream requests; 0, or -1 with *cause. */
int	proxy_upstream_init(struct event_base *, char **cause);
void	proxy_upstream_free(void);
/*
 * Fetches "/v2/<repo>/<what>" from an upstream with GET or HEAD, doing the
 * registry's token dance for scope repository:<repo>:pull, following
 * redirects and retrying connection errors, 429 and 5xx a few times.
 * The callbacks get the final response; there is always one uc_done.
 */
struct up_req *proxy_upstream_fetch(const struct nm_upstream *, int head,
	    const char *repo, const char *what, const char *accept,
	    const struct up_callbacks *, void *);
/* Stops (paused) or restarts reading a response's body. */
void	proxy_upstream_pause(struct up_req *, int paused);
/*
 * Ends a transfer early: its uc_done follows, from the loop, with an
 * error naming why.
 */
void	proxy_upstream_abort(struct up_req *, const char *why);
/*
 * Parses a WWW-Authenticate challenge into its scheme and the realm,
 * service and scope parameters (each NULL when absent; caller frees).
 */
int	proxy_challenge_parse(const char *, char **scheme, char **realm,
	    char **service, char **scope);

/* proxy/mirror.c: the pull-through cache. */
struct evhttp_request;
/* GET or HEAD of an upstream manifest by tag or digest. */
void	proxy_mirror_manifest(struct evhttp_request *, struct store *,
	    const struct nm_upstream *, const char *repo, const char *ref);
/*
 * The media type of a manifest or index document: its Content-Type without
 * parameters, else its own mediaType; NULL when it is not one.
 */
char	*proxy_manifest_type(const char *content_type, const char *body,
	    size_t len);
/*
 * GET or HEAD of a Nix image's blob that name links to, with a shared
 * bucket: streamed from it while it is stored, when this replica does
 * not store it; with --s3-redirect, a 307 to it when it holds it.
 */
void	proxy_mirror_nix_blob(struct evhttp_request *, struct store *,
	    const char *name, const char *digest);
/* GET or HEAD of an upstream blob: stored, joined, or fetched once. */
void	proxy_mirror_blob(struct evhttp_request *, struct store *,
	    const struct nm_upstream *, const char *repo, const char *digest);

/*
 * proxy/remote.c: the shared bucket on the serving path.  A pool job
 * looks ref (a digest: its link, unless linked says it is known, then
 * its bytes; or a tag) up in the bucket and stores what it finds; then
 * cb runs on the loop with 0 (stored now), S3_ABSENT (not there) or -1
 * (the bucket did not answer: cause), unless the client left.
 */
#define PROXY_REMOTE_BLOB	0	/* a blob or a manifest by digest */
#define PROXY_REMOTE_TAG	1	/* an upstream tag's resolution */
#define PROXY_REMOTE_LINK	2	/* only the repository's link */
/*
 * A blob whose link is found as for PROXY_REMOTE_LINK: when the bucket
 * holds it, a GET is answered with a 307 to a presigned URL of it, a HEAD
 * with its size, and cb does not run.
 */
#define PROXY_REMOTE_REDIRECT	3
typedef void (*proxy_remote_cb)(struct evhttp_request *, struct store *,
	    const char *repo, const char *ref, int rc, const char *cause,
	    const void *arg);
void	proxy_remote_lookup(struct evhttp_request *, struct store *, int kind,
	    const char *ns, const char *repo, const char *ref, int linked,
	    proxy_remote_cb, const void *arg);
/*
 * A blob streamed from the bucket as an upstream request is, to the same
 * callbacks (their up_req is NULL): one uc_headers with Content-Length,
 * the bytes, and always one uc_done, with 404 when the bucket lacks it.
 */
struct proxy_remote_fetch;
void	proxy_remote_init(struct event_base *);
struct proxy_remote_fetch *proxy_remote_fetch(struct store *,
	    const char *digest, const struct up_callbacks *, void *);
void	proxy_remote_pause(struct proxy_remote_fetch *, int paused);
void	proxy_remote_abort(struct proxy_remote_fetch *, const char *why);
/* The 503 of a blob only the unreachable bucket could have given. */
/* 503 UNAVAILABLE of a blob while the bucket does not answer (also: why
 * nothing else gave it, or NULL). */
void	proxy_remote_unavailable(struct evhttp_request *, const char *digest,
	    const char *also);

/*
 * proxy/peer.c: the replicas sharing a bucket, and which one downloads a
 * digest (rendezvous hashing over --peers).
 */
#define PROXY_PEER_HEADER	"X-Nixmirror-Peer"
int	proxy_peers_init(char **cause);
/*
 * The replica to fetch digest from as the nth choice (0: its owner), or
 * NULL when that is this replica or none is left: ask the upstream.
 */
const struct nm_upstream *proxy_peer_source(const char *digest, int nth);
/* Whether a request came from another replica. */
int	proxy_peer_request(struct evhttp_request *);
/* Who builds a Nix image key among the replicas (nix/nix.h). */
struct nix_owner;
extern const struct nix_owner proxy_peer_owner;

/* proxy/listing.c: tags/list and referrers. */
struct listing_query {
	const char	*lq_name;	/* the name as the client gave it */
	const char	*lq_ns;		/* its ns parameter, or NULL */
	long		 lq_n;		/* tags/list's n, or -1: all */
	const char	*lq_last;	/* tags/list's last, or NULL */
	const char	*lq_digest;	/* referrers: the subject; else NULL */
	const char	*lq_type;	/* referrers: artifactType, or NULL */
};
/*
 * The tags or the referrers of a pull-through repository: fetched whole
 * from its upstream, kept for tag_ttl, served stale when it is down.
 */
void	proxy_mirror_list(struct evhttp_request *, struct store *,
	    const struct nm_upstream *, const char *repo,
	    const struct listing_query *);
/*
 * The same for a Nix name (rest: after the prefix): latest plus the refs
 * of --pkgs-repo, or the image's SBOM as its referrer.
 */
void	proxy_nix_list(struct evhttp_request *, struct store *,
	    const char *rest, const struct listing_query *);
/*
 * GET or HEAD of a Nix name's fallback tag sha256-<hex> (referrers tag
 * schema): the referrers of that digest as an image index.
 */
void	proxy_nix_referrers_tag(struct evhttp_request *, struct store *,
	    const char *rest, const char *tag);
/*
 * Links a Nix image manifest's referrers to the name it is linked to;
 * blocking (a pool job); 0 or -1.
 */
int	proxy_nix_link_referrers(struct store *, const char *rest,
	    const char *digest);

/* proxy/route.c */
/* Dispatches one request to its route. */
void	proxy_route(struct evhttp_request *, void *);

/* proxy/reply.c: answering a request. */
/* Sends a reply (body may be NULL) and writes its access log line. */
void	proxy_reply(struct evhttp_request *, int status, struct evbuffer *,
	    const char *note);
/* A 200 with an in-memory body (Content-Length only for HEAD). */
void	proxy_reply_text(struct evhttp_request *, const char *type,
	    const char *text, size_t len);
/* Frees a request evhttp left to us when its client went away. */
void	proxy_orphan(struct evhttp_request *);
/*
 * The client a request is for: the connection's peer, or the client a
 * balancer in the policy's clients.proxies names in X-Forwarded-For.
 * Fills ss (family 0: not an address) and text; 1 when forwarded.
 */
int	proxy_client(struct evhttp_request *, struct sockaddr_storage *,
	    char *text, size_t);
/* The message of an upstream's error JSON, or NULL; caller frees. */
char	*proxy_error_message(struct evbuffer *);
/* Sends the OCI error JSON with the given status and code. */
void	proxy_error(struct evhttp_request *, int status, const char *code,
	    const char *fmt, ...) NM_PRINTF(4, 5);
/* len bytes of fd from off, by reference, ready for sendfile; or NULL. */
struct evbuffer *proxy_file_buffer(int fd, uint64_t off, uint64_t len);
/* Serves a stored blob or manifest (ranged: blobs, with Range). */
void	proxy_serve_file(struct evhttp_request *, struct store *,
	    const char *digest, const char *type, int ranged);
/*
 * Answers a blob's Range header (Accept-Ranges, Content-Range): 200 and
 * the whole blob, 206 and the part, or 416 once the error is sent.
 */
int	proxy_range(struct evhttp_request *, const char *range, uint64_t size,
	    uint64_t *start, uint64_t *end);
/* Adds Content-Type, Content-Length and Docker-Content-Digest. */
void	proxy_headers(struct evhttp_request *, const char *digest,
	    const char *type, uint64_t length);
/* The route of a request URI for /metrics ("manifest", "blob", ...). */
const char *proxy_route_name(const char *uri);
/* Writes the access log line of a request answered elsewhere. */
void	proxy_log(struct evhttp_request *, int status, uint64_t bytes,
	    const char *note);

#endif /* PROXY_H */
