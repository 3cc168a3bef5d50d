/*
 * proxy/prefetch.c: "nixmirror prefetch", the client that fills a store
 * before a site goes offline.
 *
 * It pulls each image through a mirror as a client would: the manifest
 * (a Nix image is built), for an index the children of the platform
 * asked for, the referrers (a Nix image's SBOM), and every config and
 * layer, whose bytes it counts and drops.  The mirror does the rest on
 * its usual paths: coalescing, verification, policy, links and tags.
 * Images go one after another; an image's blobs PF_PARALLEL at a time.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/time.h>
#include <sys/utsname.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "nixmirror.h"
#include "policy/policy.h"
#include "proxy/proxy.h"

#define PF_PARALLEL	4		/* blob requests of one image */
#define PF_TIMEOUT	3600		/* seconds: a cold Nix build */
#define PF_MAX_JSON	(4 * 1024 * 1024)
#define PF_ACCEPT_OCI	"application/vnd.oci.image.index.v1+json, " \
			"application/vnd.oci.image.manifest.v1+json"
#define PF_ACCEPT_ALL	PF_ACCEPT_OCI ", " \
			"application/vnd.docker.distribution.manifest." \
			"list.v2+json, application/vnd.docker." \
			"distribution.manifest.v2+json"

enum pf_kind {
	PF_MANIFEST,		/* the image's, by tag or digest */
	PF_CHILD,		/* an index's child, or a referrer */
	PF_REFERRERS,		/* the referrers list of the manifest */
	PF_BLOB,		/* a config or a layer */
};

struct pf_image;

/* One request to the mirror. */
struct pf_req {
	TAILQ_ENTRY(pf_req)	 pr_entry;
	struct pf_image		*pr_img;
	enum pf_kind		 pr_kind;
	char			 pr_ref[NM_DIGEST_SIZE + 128];
	uint64_t		 pr_size;	/* a blob's, from its descriptor */
	uint64_t		 pr_got;
	int			 pr_referrer;
	struct evhttp_connection *pr_conn;	/* a child that is a referrer */
};
TAILQ_HEAD(pf_reqs, pf_req);

/* One image being prefetched. */
struct pf_image {
	const struct policy_ref	*pi_ref;
	struct pf_reqs		 pi_queue;	/* not started */
	int			 pi_running;
	char			 pi_digest[NM_DIGEST_SIZE];
	char			*pi_error;	/* the first failure */
	uint64_t		 pi_total;	/* blob bytes known */
	uint64_t		 pi_done;	/* blob bytes received */
	size_t			 pi_blobs;
	size_t			 pi_seen_n;	/* digests already queued */
	char			(*pi_seen)[NM_DIGEST_SIZE];
	struct timeval		 pi_start;
};

/* The run. */
static struct {
	struct event_base	*base;
	const char		*host;
	int			 port;
	SSL_CTX			*tls;	/* https, or NULL */
	const char		*os, *arch, *variant;	/* NULL os: all */
	int			 progress;
	struct event		*timer;
	const struct policy_ref	*refs;
	size_t			 nrefs;
	size_t			 next;
	struct pf_image		*img;
	int			 failed;
	uint64_t		 bytes;
	size_t			 done;
} pf;

static void	pf_next_image(void);
static void	pf_pump(struct pf_image *);

/* The request path of a reference's repository, with its ns query. */
static char *
pf_path(const struct policy_ref *pr, const char *kind, const char *ref)
{
	char	*path;

	if (pr->pr_ns == NULL)
		xasprintf(&path, "/v2/%s/%s/%s/%s", nm_conf->cf_nix_prefix,
		    pr->pr_repo, kind, ref);
	else
		xasprintf(&path, "/v2/%s/%s/%s?ns=%s", pr->pr_repo, kind, ref,
		    pr->pr_ns);
	return (path);
}

/* Records an image's first failure. */
static void
pf_fail(struct pf_image *pi, const char *fmt, ...)
{
	va_list	 ap;

	if (pi->pi_error != NULL)
		return;
	va_start(ap, fmt);
	xvasprintf(&pi->pi_error, fmt, ap);
	va_end(ap);
}

/* Queues a request once per digest (layers shared by children). */
static void
pf_queue(struct pf_image *pi, enum pf_kind kind, const char *ref,
    uint64_t size, int referrer)
{
	struct pf_req	*pr;
	size_t		 i;

	if (kind == PF_BLOB || kind == PF_CHILD) {
		for (i = 0; i < pi->pi_seen_n; i++)
			if (strcmp(pi->pi_seen[i], ref) == 0)
				return;
		pi->pi_seen = xreallocarray(pi->pi_seen, pi->pi_seen_n + 1,
		    sizeof *pi->pi_seen);
		snprintf(pi->pi_seen[pi->pi_seen_n++], NM_DIGEST_SIZE, "%s",
		    ref);
	}
	pr = xcalloc(1, sizeof *pr);
	pr->pr_img = pi;
	pr->pr_kind = kind;
	pr->pr_size = size;
	pr->pr_referrer = referrer;
	snprintf(pr->pr_ref, sizeof pr->pr_ref, "%s", ref);
	if (kind == PF_BLOB) {
		pi->pi_total += size;
		pi->pi_blobs++;
	}
	TAILQ_INSERT_TAIL(&pi->pi_queue, pr, pr_entry);
}

/* Whether a child of an index is for the platform asked for. */
static int
pf_platform_match(json_t *desc)
{
	json_t		*p = json_object_get(desc, "platform");
	const char	*os, *arch, *variant;

	if (pf.os == NULL)
		return (1);
	os = json_string_value(json_object_get(p, "os"));
	arch = json_string_value(json_object_get(p, "architecture"));
	variant = json_string_value(json_object_get(p, "variant"));
	if (os == NULL || arch == NULL || strcmp(os, pf.os) != 0 ||
	    strcmp(arch, pf.arch) != 0)
		return (0);
	return (pf.variant == NULL || (variant != NULL &&
	    strcmp(variant, pf.variant) == 0));
}

/* The digest of a descriptor, when valid. */
static const char *
pf_digest(json_t *d)
{
	const char	*s = json_string_value(json_object_get(d, "digest"));

	return (s != NULL && policy_digest_valid(s) ? s : NULL);
}

/* A manifest or index arrived: queue what it references. */
static void
pf_manifest_body(struct pf_req *pr, const char *body, size_t len,
    const char *digest)
{
	struct pf_image	*pi = pr->pr_img;
	json_t		*root, *v;
	const char	*d;
	char		 own[NM_DIGEST_SIZE];
	size_t		 i, matched = 0;

	if (digest == NULL) {
		nm_sha256_digest(body, len, own);
		digest = own;
	}
	if ((root = json_loadb(body, len, 0, NULL)) == NULL ||
	    !json_is_object(root)) {
		json_decref(root);
		pf_fail(pi, "%s is not a JSON manifest", pr->pr_ref);
		return;
	}
	if (pr->pr_kind == PF_MANIFEST) {
		snprintf(pi->pi_digest, sizeof pi->pi_digest, "%s", digest);
		pf_queue(pi, PF_REFERRERS, digest, 0, 0);
	}
	if (json_is_array(json_object_get(root, "manifests"))) {
		json_array_foreach(json_object_get(root, "manifests"), i, v) {
			if ((d = pf_digest(v)) == NULL ||
			    (!pr->pr_referrer && !pf_platform_match(v)))
				continue;
			pf_queue(pi, PF_CHILD, d, 0, pr->pr_referrer);
			matched++;
		}
		if (matched == 0 && !pr->pr_referrer)
			pf_fail(pi, "%s has no image for %s/%s%s%s", pr->pr_ref,
			    pf.os, pf.arch, pf.variant != NULL ? "/" : "",
			    pf.variant != NULL ? pf.variant : "");
	} else {
		if ((d = pf_digest(json_object_get(root, "config"))) != NULL)
			pf_queue(pi, PF_BLOB, d, (uint64_t)json_integer_value(
			    json_object_get(json_object_get(root, "config"),
			    "size")), 0);
		json_array_foreach(json_object_get(root, "layers"), i, v)
			if ((d = pf_digest(v)) != NULL)
				pf_queue(pi, PF_BLOB, d, (uint64_t)
				    json_integer_value(json_object_get(v,
				    "size")), 0);
	}
	json_decref(root);
}

/* A referrers list arrived: every referrer is fetched with its blobs. */
static void
pf_referrers_body(struct pf_req *pr, const char *body, size_t len)
{
	json_t		*root, *v;
	const char	*d;
	size_t		 i;

	if ((root = json_loadb(body, len, 0, NULL)) == NULL)
		return;
	json_array_foreach(json_object_get(root, "manifests"), i, v)
		if ((d = pf_digest(v)) != NULL)
			pf_queue(pr->pr_img, PF_CHILD, d, 0, 1);
	json_decref(root);
}

/* The error message of an OCI error body, or the status. */
static char *
pf_error_text(struct evhttp_request *req)
{
	struct evbuffer	*in = evhttp_request_get_input_buffer(req);
	char		*msg, *out;
	size_t		 len = evbuffer_get_length(in);

	msg = len > 0 && len < PF_MAX_JSON ? proxy_error_message(in) : NULL;
	xasprintf(&out, "%d %s", evhttp_request_get_response_code(req),
	    msg != NULL ? msg : evhttp_request_get_response_code_line(req) !=
	    NULL ? evhttp_request_get_response_code_line(req) : "");
	free(msg);
	return (out);
}

/* A blob's bytes as they arrive: counted and dropped. */
static void
pf_chunk_cb(struct evhttp_request *req, void *arg)
{
	struct pf_req	*pr = arg;
	struct evbuffer	*in = evhttp_request_get_input_buffer(req);
	size_t		 n = evbuffer_get_length(in);

	if (evhttp_request_get_response_code(req) != 200)
		return;		/* an error body: kept for the message */
	pr->pr_got += n;
	pr->pr_img->pi_done += n;
	pf.bytes += n;
	evbuffer_drain(in, n);
}

/* Frees a connection once its request's callback has returned. */
static void
pf_conn_free_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	evhttp_connection_free(arg);
}

/* The TLS error that ended a connection, or 0. */
static unsigned long
pf_tls_error(struct evhttp_connection *conn)
{
	struct bufferevent	*bev;

	if (pf.tls == NULL ||
	    (bev = evhttp_connection_get_bufferevent(conn)) == NULL)
		return (0);
	return (bufferevent_get_openssl_error(bev));
}

/* The text of a TLS error. */
static const char *
pf_tls_reason(unsigned long e)
{
	const char	*r = ERR_reason_error_string(e);

	return (r != NULL ? r : "unknown TLS error");
}

/* One request ended. */
static void
pf_done_cb(struct evhttp_request *req, void *arg)
{
	struct pf_req	*pr = arg;
	struct pf_image	*pi = pr->pr_img;
	struct evbuffer	*in;
	const char	*digest;
	char		*err;
	size_t		 len;
	unsigned long	 tlserr;

	pi->pi_running--;
	if ((req == NULL || evhttp_request_get_response_code(req) == 0) &&
	    (tlserr = pf_tls_error(pr->pr_conn)) != 0)
		pf_fail(pi, "the mirror at %s:%d failed TLS for %s: %s",
		    pf.host, pf.port, pr->pr_ref, pf_tls_reason(tlserr));
	else if (req == NULL || evhttp_request_get_response_code(req) == 0)
		pf_fail(pi, "the mirror at %s:%d did not answer for %s",
		    pf.host, pf.port, pr->pr_ref);
	else if (evhttp_request_get_response_code(req) != 200) {
		/* A registry without referrers is no failure. */
		if (pr->pr_kind != PF_REFERRERS) {
			err = pf_error_text(req);
			pf_fail(pi, "%s: %s", pr->pr_kind == PF_BLOB ?
			    pr->pr_ref : pi->pi_ref->pr_ref, err);
			free(err);
		}
	} else if (pr->pr_kind == PF_BLOB) {
		pr->pr_got += evbuffer_get_length(
		    evhttp_request_get_input_buffer(req));
		if (pr->pr_size > 0 && pr->pr_got != pr->pr_size)
			pf_fail(pi, "blob %s: %llu bytes of %llu", pr->pr_ref,
			    (unsigned long long)pr->pr_got,
			    (unsigned long long)pr->pr_size);
	} else {
		in = evhttp_request_get_input_buffer(req);
		len = evbuffer_get_length(in);
		digest = evhttp_find_header(evhttp_request_get_input_headers(
		    req), "Docker-Content-Digest");
		if (len > PF_MAX_JSON)
			pf_fail(pi, "%s: manifest over %d bytes", pr->pr_ref,
			    PF_MAX_JSON);
		else if (pr->pr_kind == PF_REFERRERS)
			pf_referrers_body(pr, (const char *)evbuffer_pullup(in,
			    -1), len);
		else
			pf_manifest_body(pr, (const char *)evbuffer_pullup(in,
			    -1), len, digest != NULL &&
			    policy_digest_valid(digest) ? digest : NULL);
	}
	if (event_base_once(pf.base, -1, EV_TIMEOUT, pf_conn_free_cb,
	    pr->pr_conn, NULL) == -1)
		fatalx("event_base_once failed");
	free(pr);
	pf_pump(pi);
}

/* Starts one request. */
static void
pf_start(struct pf_req *pr)
{
	struct evhttp_connection	*conn;
	struct evhttp_request		*req;
	struct bufferevent		*bev;
	struct evkeyvalq		*h;
	const struct policy_ref		*ref = pr->pr_img->pi_ref;
	char				*path, host[300];

	bev = NULL;
	if (pf.tls != NULL && (bev = proxy_tls_bufferevent(pf.base, pf.tls,
	    pf.host)) == NULL)
		fatalx("cannot set up TLS to %s", pf.host);
	if ((conn = evhttp_connection_base_bufferevent_new(pf.base, NULL, bev,
	    pf.host, (ev_uint16_t)pf.port)) == NULL)
		fatalx("evhttp_connection_base_bufferevent_new failed");
	evhttp_connection_set_timeout(conn, PF_TIMEOUT);
	pr->pr_conn = conn;
	req = evhttp_request_new(pf_done_cb, pr);
	if (pr->pr_kind == PF_BLOB)
		evhttp_request_set_chunked_cb(req, pf_chunk_cb);
	h = evhttp_request_get_output_headers(req);
	snprintf(host, sizeof host, "%s:%d", pf.host, pf.port);
	evhttp_add_header(h, "Host", host);
	evhttp_add_header(h, "User-Agent", "nixmirror-prefetch/"
	    PACKAGE_VERSION);
	switch (pr->pr_kind) {
	case PF_MANIFEST:
	case PF_CHILD:
		/* Nix images come in both forms: the OCI one is recorded. */
		evhttp_add_header(h, "Accept", ref->pr_ns == NULL ?
		    PF_ACCEPT_OCI : PF_ACCEPT_ALL);
		path = pf_path(ref, "manifests", pr->pr_ref);
		break;
	case PF_REFERRERS:
		path = pf_path(ref, "referrers", pr->pr_ref);
		break;
	default:
		path = pf_path(ref, "blobs", pr->pr_ref);
		break;
	}
	pr->pr_img->pi_running++;
	if (evhttp_make_request(conn, req, EVHTTP_REQ_GET, path) == -1) {
		pr->pr_img->pi_running--;
		pf_fail(pr->pr_img, "cannot send a request to %s", host);
		evhttp_connection_free(conn);
		free(pr);
	}
	free(path);
}

/* The size as the display shows it. */
static const char *
pf_size(uint64_t n, char *buf, size_t len)
{
	if (n >= 1024 * 1024 * 1024)
		snprintf(buf, len, "%.1f GiB", (double)n / (1 << 30));
	else if (n >= 1024 * 1024)
		snprintf(buf, len, "%.1f MiB", (double)n / (1 << 20));
	else
		snprintf(buf, len, "%.0f KiB", (double)n / 1024);
	return (buf);
}

/* Redraws the terminal line of the image in progress. */
static void
pf_draw(void)
{
	struct pf_image	*pi = pf.img;
	struct timeval	 now;
	char		 a[32], b[32], eta[32] = "";
	double		 secs, rate;

	if (!pf.progress || pi == NULL)
		return;
	gettimeofday(&now, NULL);
	secs = (double)(now.tv_sec - pi->pi_start.tv_sec) +
	    (double)(now.tv_usec - pi->pi_start.tv_usec) / 1e6;
	if (pi->pi_blobs == 0)
		snprintf(eta, sizeof eta, "resolving %.0fs", secs);
	else if (secs > 0.5 && pi->pi_done > 0 && pi->pi_total > pi->pi_done) {
		rate = (double)pi->pi_done / secs;
		snprintf(eta, sizeof eta, "ETA %.0fs",
		    (double)(pi->pi_total - pi->pi_done) / rate);
	}
	fprintf(stderr, "\r\033[K[%zu/%zu] %s  %s / %s  %s", pf.next, pf.nrefs,
	    pi->pi_ref->pr_ref, pf_size(pi->pi_done, a, sizeof a),
	    pf_size(pi->pi_total, b, sizeof b), eta);
}

static void
pf_timer_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	(void)arg;
	pf_draw();
}

/* Starts what an image may start; at its end, the next image. */
static void
pf_pump(struct pf_image *pi)
{
	struct pf_req	*pr;
	char		 a[32];

	while (pi->pi_error == NULL && pi->pi_running < PF_PARALLEL &&
	    (pr = TAILQ_FIRST(&pi->pi_queue)) != NULL) {
		TAILQ_REMOVE(&pi->pi_queue, pr, pr_entry);
		pf_start(pr);
	}
	if (pi->pi_running > 0 || (pi->pi_error == NULL &&
	    !TAILQ_EMPTY(&pi->pi_queue)))
		return;
	while ((pr = TAILQ_FIRST(&pi->pi_queue)) != NULL) {
		TAILQ_REMOVE(&pi->pi_queue, pr, pr_entry);
		free(pr);
	}
	if (pf.progress)
		fprintf(stderr, "\r\033[K");
	if (pi->pi_error != NULL) {
		fprintf(stderr, "failed %s: %s\n", pi->pi_ref->pr_ref,
		    pi->pi_error);
		pf.failed++;
	} else {
		printf("stored %s %s (%zu blobs, %s)\n", pi->pi_ref->pr_ref,
		    pi->pi_digest, pi->pi_blobs, pf_size(pi->pi_total, a,
		    sizeof a));
		fflush(stdout);
		pf.done++;
	}
	free(pi->pi_error);
	free(pi->pi_seen);
	free(pi);
	pf.img = NULL;
	pf_next_image();
}

/* Starts the next image, or ends the run. */
static void
pf_next_image(void)
{
	struct pf_image	*pi;
	const char	*ref;

	if (pf.next == pf.nrefs) {
		event_base_loopexit(pf.base, NULL);
		return;
	}
	pi = xcalloc(1, sizeof *pi);
	pi->pi_ref = &pf.refs[pf.next++];
	TAILQ_INIT(&pi->pi_queue);
	gettimeofday(&pi->pi_start, NULL);
	pf.img = pi;
	ref = pi->pi_ref->pr_digest != NULL ? pi->pi_ref->pr_digest :
	    pi->pi_ref->pr_tag;
	pf_queue(pi, PF_MANIFEST, ref, 0, 0);
	pf_draw();
	pf_pump(pi);
}

/* The host's platform, as an index names it. */
static void
pf_host_platform(char *buf, size_t len)
{
	struct utsname	 u;
	const char	*arch = "amd64";

	if (uname(&u) == 0 && (strcmp(u.machine, "aarch64") == 0 ||
	    strcmp(u.machine, "arm64") == 0))
		arch = "arm64";
	snprintf(buf, len, "linux/%s", arch);
}

/* Prefetches the images; see proxy.h. */
int
proxy_prefetch(struct event_base *base, const char *host, int port,
    SSL_CTX *tls, const struct policy_ref *refs, size_t nrefs,
    const char *platform, int progress)
{
	struct timeval	 tv = { 0, 200 * 1000 };
	char		 plat[128], *p, a[32];

	memset(&pf, 0, sizeof pf);
	pf.base = base;
	pf.host = host;
	pf.port = port;
	pf.tls = tls;
	pf.refs = refs;
	pf.nrefs = nrefs;
	pf.progress = progress;
	if (platform == NULL)
		pf_host_platform(plat, sizeof plat);
	else
		snprintf(plat, sizeof plat, "%s", platform);
	if (strcmp(plat, "all") != 0) {
		pf.os = plat;
		if ((p = strchr(plat, '/')) != NULL) {
			*p++ = '\0';
			pf.arch = p;
			if ((p = strchr(p, '/')) != NULL) {
				*p++ = '\0';
				pf.variant = p;
			}
		}
	}
	if (progress) {
		pf.timer = event_new(base, -1, EV_PERSIST, pf_timer_cb, NULL);
		event_add(pf.timer, &tv);
	}
	pf_next_image();
	event_base_dispatch(base);
	/* The connections of the last requests are freed by now. */
	event_base_loop(base, EVLOOP_NONBLOCK);
	if (pf.timer != NULL)
		event_free(pf.timer);
	fprintf(stderr, "prefetch: %zu stored (%s received), %d failed\n",
	    pf.done, pf_size(pf.bytes, a, sizeof a), pf.failed);
	return (pf.failed);
}
