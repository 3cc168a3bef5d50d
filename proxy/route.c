/*
 * proxy/route.c: the registry API: /v2/, manifests, blobs, and the OCI
 * error JSON for everything else.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "nixmirror.h"
#include "nix/nix.h"
#include "policy/policy.h"
#include "proxy/proxy.h"
#include "store/store.h"

#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_OCI_MANIFEST	"application/vnd.oci.image.manifest.v1+json"

enum route_kind {
	ROUTE_BASE,
	ROUTE_MANIFEST,
	ROUTE_BLOB,
	ROUTE_TAGS,
	ROUTE_REFERRERS,
};

/* One request while it waits for a build. */
struct route_pending {
	struct evhttp_request		*rp_req;
	struct evhttp_connection	*rp_conn;
	struct store			*rp_store;
	struct nix_waiter		*rp_waiter;
	struct timeval			 rp_start;
	char				*rp_name;	/* the Nix name */
	char				*rp_tag;
	char				 rp_digest[NM_DIGEST_SIZE];
	char				 rp_oci[NM_DIGEST_SIZE];
	int				 rp_rc;
	int				 rp_head;
	int				 rp_docker;	/* client takes schema2 */
};

/*
 * Whether one Accept header lists a media type (or, with any, a wildcard)
 * with a quality above zero.
 */
static int
route_accept_one(const char *value, const char *type, int any)
{
	const char	*p = value, *end, *q;
	size_t		 tlen = strlen(type), n;

	while (*p != '\0') {
		while (*p == ' ' || *p == ',')
			p++;
		end = p + strcspn(p, ",");
		n = strcspn(p, ";, ");
		if ((n == tlen && strncasecmp(p, type, n) == 0) ||
		    (any && n == 3 && strncmp(p, "*/*", 3) == 0)) {
			q = strstr(p, "q=");
			if (q == NULL || q > end || strtod(q + 2, NULL) > 0)
				return (1);
		}
		p = end;
	}
	return (0);
}

/*
 * Whether the client's Accept headers name a media type; with any set,
 * also a wildcard or no Accept header at all count.
 */
static int
route_accepts(struct evhttp_request *req, const char *type, int any)
{
	struct evkeyvalq	*ih = evhttp_request_get_input_headers(req);
	struct evkeyval		*kv;
	int			 seen = 0;

	TAILQ_FOREACH(kv, ih, next) {
		if (strcasecmp(kv->key, "Accept") != 0)
			continue;
		seen = 1;
		if (route_accept_one(kv->value, type, any))
			return (1);
	}
	return (any && !seen);
}

/* Frees a request that waited for a build. */
static void
route_pending_free(struct route_pending *rp)
{
	free(rp->rp_name);
	free(rp->rp_tag);
	free(rp);
}

/*
 * The link job of a built image: its manifest (in both forms) and what
 * they reference; then the tag records the OCI form, which prefetch
 * and export find by name and tag, and serve --offline serves.
 */
static void
route_link_job(void *arg)
{
	struct route_pending	*rp = arg;
	const char		*form[2] = { rp->rp_digest, rp->rp_oci };
	int			 i;

	rp->rp_rc = 0;
	for (i = 0; i < 2 && rp->rp_rc == 0; i++) {
		if (i == 1 && strcmp(form[0], form[1]) == 0)
			break;
		rp->rp_rc = store_link_manifest(rp->rp_store, STORE_NIX_NS,
		    rp->rp_name, form[i]);
		if (rp->rp_rc == 0)
			rp->rp_rc = proxy_nix_link_referrers(rp->rp_store,
			    rp->rp_name, form[i]);
	}
	if (rp->rp_rc == 0)
		rp->rp_rc = store_utag_put(rp->rp_store, STORE_NIX_NS,
		    rp->rp_name, rp->rp_tag, rp->rp_oci);
}

/* Whether a built image's links and tag are recorded already. */
static int
route_link_done(const struct route_pending *rp)
{
	char	 d[NM_DIGEST_SIZE];
	time_t	 checked;

	return (store_link_has(rp->rp_store, STORE_NIX_NS, rp->rp_name,
	    rp->rp_digest) && store_link_has(rp->rp_store, STORE_NIX_NS,
	    rp->rp_name, rp->rp_oci) && store_utag_get(rp->rp_store,
	    STORE_NIX_NS, rp->rp_name, rp->rp_tag, d, &checked) == 0 &&
	    strcmp(d, rp->rp_oci) == 0);
}

/* Back on the loop after the link: serve the manifest. */
static void
route_linked(void *arg)
{
	struct route_pending	*rp = arg;

	if (rp->rp_rc == -1)
		log_warnx("cannot link manifest %s to %s/%s", rp->rp_digest,
		    nm_conf->cf_nix_prefix, rp->rp_name);
	if (rp->rp_req != NULL) {
		evhttp_connection_set_closecb(rp->rp_conn, NULL, NULL);
		proxy_serve_file(rp->rp_req, rp->rp_store, rp->rp_digest,
		    rp->rp_docker ? MT_DOCKER_MANIFEST : MT_OCI_MANIFEST, 0);
	}
	route_pending_free(rp);
}

/* The client left while its image's manifest was being linked. */
static void
route_link_close_cb(struct evhttp_connection *conn, void *arg)
{
	struct route_pending	*rp = arg;

	(void)conn;
	proxy_orphan(rp->rp_req);
	rp->rp_req = NULL;
}

/*
 * Serves the manifest of a finished build in the form the client takes,
 * once the name links to it: the image's layers and config are then
 * served under this name (and only under the names it was pulled as).
 */
static void
route_manifest_built(const struct nix_build_result *res, void *arg)
{
	struct route_pending	*rp = arg;
	struct evhttp_request	*req = rp->rp_req;

	evhttp_connection_set_closecb(rp->rp_conn, NULL, NULL);
	rp->rp_waiter = NULL;
	if (res->br_status == NIX_OK) {
		snprintf(rp->rp_digest, sizeof rp->rp_digest, "%s",
		    rp->rp_docker ? res->br_docker : res->br_oci);
		snprintf(rp->rp_oci, sizeof rp->rp_oci, "%s", res->br_oci);
		if (route_link_done(rp) || !work_available() ||
		    work_submit(route_link_job, route_linked, rp) == -1) {
			if (!route_link_done(rp))
				route_link_job(rp);
			route_linked(rp);
		} else
			evhttp_connection_set_closecb(rp->rp_conn,
			    route_link_close_cb, rp);
		return;
	}
	if (res->br_status == NIX_ENOTFOUND)
		proxy_error(req, 404, "MANIFEST_UNKNOWN", "%s", res->br_cause);
	else if (res->br_status == NIX_EBUSY) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Retry-After", "10");
		proxy_error(req, 429, "TOOMANYREQUESTS", "%s", res->br_cause);
	} else if (res->br_status != NIX_OK)
		proxy_error(req, 500, "UNKNOWN", "%s", res->br_cause);
	else if (rp->rp_docker)
		proxy_serve_file(req, rp->rp_store, res->br_docker,
		    MT_DOCKER_MANIFEST, 0);
	else
		proxy_serve_file(req, rp->rp_store, res->br_oci,
		    MT_OCI_MANIFEST, 0);
	route_pending_free(rp);
}

/* The client left while its image was building: the build goes on. */
static void
route_pending_close_cb(struct evhttp_connection *conn, void *arg)
{
	struct route_pending	*rp = arg;

	(void)conn;
	log_info("client left while building; the build goes on");
	nix_build_cancel(rp->rp_waiter);
	route_pending_free(rp);
}

/*
 * Checks a parsed Nix request against the policy: nix.max_packages, then
 * nix.allow and nix.deny.  Returns 0, or -1 when 403 DENIED was sent.
 */
static int
route_nix_policy(struct evhttp_request *req, const struct nix_request *nr)
{
	struct policy_limits	 pl;
	char			*why = NULL;

	policy_limits_get(&pl);
	if (pl.pl_max_packages > 0 &&
	    nr->nr_npkgs > (size_t)pl.pl_max_packages) {
		proxy_error(req, 403, "DENIED", "the image has %zu packages, "
		    "over the policy's nix.max_packages %d", nr->nr_npkgs,
		    pl.pl_max_packages);
		return (-1);
	}
	if (!policy_nix_allowed(nr->nr_pkgs, nr->nr_npkgs, &why)) {
		proxy_error(req, 403, "DENIED", "%s", why);
		free(why);
		return (-1);
	}
	return (0);
}

/*
 * Offline: a Nix image's manifest by tag is the one last built or
 * imported under this name and tag; nothing is evaluated.
 */
static void
route_nix_offline(struct evhttp_request *req, struct store *st,
    const char *rest, const char *tag)
{
	char	 digest[NM_DIGEST_SIZE], *type = NULL;
	uint64_t size;
	time_t	 checked;

	if (store_utag_get(st, STORE_NIX_NS, rest, tag, digest, &checked) ==
	    -1 || store_blob_stat(st, digest, &size, &type) == -1 ||
	    type == NULL) {
		free(type);
		metrics_cache("manifest", "nix", METRICS_MISS);
		proxy_error(req, 404, "MANIFEST_UNKNOWN", "%s/%s:%s is not "
		    "stored, and the mirror is offline (no Nix build runs)",
		    nm_conf->cf_nix_prefix, rest, tag);
		return;
	}
	metrics_cache("manifest", "nix", METRICS_HIT);
	proxy_serve_file(req, st, digest, type, 0);
	free(type);
}

/* GET or HEAD of a Nix image's manifest by tag. */
static void
route_nix_manifest(struct evhttp_request *req, struct store *st,
    const char *rest, const char *tag)
{
	struct nix_request	 nr;
	struct route_pending	*rp;
	char			*cause = NULL;
	int			 docker, oci;

	docker = route_accepts(req, MT_DOCKER_MANIFEST, 0);
	oci = route_accepts(req, MT_OCI_MANIFEST, 1);
	if (!docker && !oci) {
		proxy_error(req, 404, "MANIFEST_UNKNOWN", "Nix images are "
		    "served as %s or %s; the client accepts neither",
		    MT_DOCKER_MANIFEST, MT_OCI_MANIFEST);
		return;
	}
	memset(&nr, 0, sizeof nr);
	if (nix_name_parse(rest, &nr, &cause) == -1) {
		proxy_error(req, 400, "NAME_INVALID", "%s", cause);
		free(cause);
		return;
	}
	if (route_nix_policy(req, &nr) == -1) {
		nix_request_clear(&nr);
		return;
	}
	/* Another replica asks: it is built here, never passed on. */
	nr.nr_peer = proxy_peer_request(req);
	if (nm_conf->cf_offline) {
		nix_request_clear(&nr);
		route_nix_offline(req, st, rest, tag);
		return;
	}
	rp = xcalloc(1, sizeof *rp);
	rp->rp_req = req;
	rp->rp_conn = evhttp_request_get_connection(req);
	rp->rp_store = st;
	rp->rp_docker = docker;
	rp->rp_name = xstrdup(rest);
	rp->rp_tag = xstrdup(tag);
	gettimeofday(&rp->rp_start, NULL);
	rp->rp_waiter = nix_build_get(&nr, tag, route_manifest_built, rp);
	if (rp->rp_waiter != NULL)
		evhttp_connection_set_closecb(rp->rp_conn,
		    route_pending_close_cb, rp);
	nix_request_clear(&nr);
}

/*
 * Checks a Nix name asked for by digest against the policy, as its tags
 * are; 0, or -1 when the error was sent.
 */
static int
route_nix_allowed(struct evhttp_request *req, const char *rest)
{
	struct nix_request	 nr;
	char			*cause = NULL;
	int			 rv;

	memset(&nr, 0, sizeof nr);
	if (nix_name_parse(rest, &nr, &cause) == -1) {
		proxy_error(req, 400, "NAME_INVALID", "%s", cause);
		free(cause);
		return (-1);
	}
	rv = route_nix_policy(req, &nr);
	nix_request_clear(&nr);
	return (rv);
}

/*
 * GET or HEAD of a Nix image's manifest by digest: one built for this
 * name and pulled by tag under it before.
 */
static void	route_manifest_digest(struct evhttp_request *, struct store *,
		    const char *, const char *, int);

/* Back from the bucket with a Nix manifest (and its link), or without. */
static void
route_manifest_remote_cb(struct evhttp_request *req, struct store *st,
    const char *rest, const char *digest, int rc, const char *cause,
    const void *arg)
{
	(void)rc;
	(void)cause;
	(void)arg;
	route_manifest_digest(req, st, rest, digest, 1);
}

/*
 * A Nix image's manifest by digest, under a name it was pulled by (here,
 * or on another replica when remote is 0 and a bucket is shared).
 */
static void
route_manifest_digest(struct evhttp_request *req, struct store *st,
    const char *rest, const char *digest, int remote)
{
	uint64_t	 size;
	char		*type = NULL;

	if (route_nix_allowed(req, rest) == -1)
		return;
	if (!remote && store_remote_on(st) && (!store_link_has(st,
	    STORE_NIX_NS, rest, digest) || store_blob_stat(st, digest, &size,
	    NULL) == -1)) {
		proxy_remote_lookup(req, st, PROXY_REMOTE_BLOB, STORE_NIX_NS,
		    rest, digest, 0, route_manifest_remote_cb, NULL);
		return;
	}
	if (!store_link_has(st, STORE_NIX_NS, rest, digest) ||
	    store_blob_stat(st, digest, &size, &type) == -1 || type == NULL ||
	    strstr(type, "manifest") == NULL) {
		free(type);
		proxy_error(req, 404, "MANIFEST_UNKNOWN",
		    "manifest %s is not known", digest);
		return;
	}
	proxy_serve_file(req, st, digest, type, 0);
	free(type);
}

/* Where a request goes: our Nix images, or an upstream. */
struct route_target {
	const char			*rt_nix;	/* packages, or NULL */
	const struct nm_upstream	*rt_up;
	char				*rt_repo;	/* upstream's name */
};

/*
 * Decides where a name goes.  Without "ns" (Docker's registry-mirrors,
 * direct pulls) a name goes to docker.io; containerd's "ns" names the
 * upstream.  Names under the Nix prefix are ours when they come as Docker
 * Hub names (no ns, or ns=docker.io), and so is every name of --nix-ns.
 * An upstream repository the policy denies gets 403 DENIED here, for
 * manifests and blobs alike.  Returns 0, or -1 when an error was sent.
 */
static int
route_target(struct evhttp_request *req, const char *name, const char *ns,
    struct route_target *rt)
{
	const char	*pre = nm_conf->cf_nix_prefix;
	size_t		 plen = strlen(pre);
	char		*why = NULL;
	int		 prefixed;

	memset(rt, 0, sizeof *rt);
	prefixed = strncmp(name, pre, plen) == 0 && name[plen] == '/';
	if (ns != NULL && nm_conf->cf_nix_ns != NULL &&
	    strcmp(ns, nm_conf->cf_nix_ns) == 0) {
		rt->rt_nix = prefixed ? name + plen + 1 : name;
		return (0);
	}
	if (prefixed && (ns == NULL || strcmp(ns, "docker.io") == 0)) {
		rt->rt_nix = name + plen + 1;
		return (0);
	}
	if ((rt->rt_up = policy_upstream_find(nm_conf, ns != NULL ? ns :
	    "docker.io")) == NULL) {
		proxy_error(req, 404, "NAME_UNKNOWN", "%s is not a namespace "
		    "this mirror serves", ns != NULL ? ns : "docker.io");
		return (-1);
	}
	/* Docker Hub's official images live under library/. */
	if (strcmp(rt->rt_up->up_ns, "docker.io") == 0 &&
	    strchr(name, '/') == NULL)
		xasprintf(&rt->rt_repo, "library/%s", name);
	else
		rt->rt_repo = xstrdup(name);
	if (!policy_upstream_allowed(rt->rt_up->up_ns, rt->rt_repo, &why)) {
		proxy_error(req, 403, "DENIED", "%s", why);
		free(why);
		free(rt->rt_repo);
		rt->rt_repo = NULL;
		return (-1);
	}
	return (0);
}

/* Whether a tag is a fallback tag of the referrers schema: sha256-<hex>. */
static int
route_fallback_tag(const char *tag)
{
	char	 d[NM_DIGEST_SIZE];

	if (strncmp(tag, "sha256-", 7) != 0 || strlen(tag) >= sizeof d)
		return (0);
	snprintf(d, sizeof d, "sha256:%s", tag + 7);
	return (policy_digest_valid(d));
}

/* Routes /v2/<name>/manifests/<ref>. */
static void
route_manifest(struct evhttp_request *req, struct store *st,
    const struct route_target *rt, const char *ref)
{
	if (policy_digest_like(ref) && !policy_digest_valid(ref)) {
		proxy_error(req, 400, "DIGEST_INVALID", "\"%.80s\" is not a "
		    "sha256 digest", ref);
		return;
	}
	if (!policy_digest_valid(ref) && !policy_tag_valid(ref)) {
		proxy_error(req, 400, "TAG_INVALID", "\"%.80s\" is not a valid "
		    "tag", ref);
		return;
	}
	if (rt->rt_up != NULL)
		proxy_mirror_manifest(req, st, rt->rt_up, rt->rt_repo, ref);
	else if (route_fallback_tag(ref)) {
		if (route_nix_allowed(req, rt->rt_nix) == 0)
			proxy_nix_referrers_tag(req, st, rt->rt_nix, ref);
	} else if (policy_digest_valid(ref))
		route_manifest_digest(req, st, rt->rt_nix, ref, 0);
	else
		route_nix_manifest(req, st, rt->rt_nix, ref);
}

/* Whether s is a media type: type/subtype of token characters. */
static int
route_media_type_valid(const char *s)
{
	size_t	 i, slash = 0;

	if (s[0] == '\0' || strlen(s) > 255)
		return (0);
	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] == '/')
			slash++;
		else if (!isalnum((unsigned char)s[i]) &&
		    strchr("!#$&^_.+-", s[i]) == NULL)
			return (0);
	}
	return (slash == 1 && s[0] != '/' && s[i - 1] != '/');
}

/*
 * Routes /v2/<name>/tags/list (digest NULL) and /v2/<name>/referrers/
 * <digest>, with their n and last, or artifactType.
 */
static void
route_list(struct evhttp_request *req, struct store *st,
    const struct route_target *rt, const char *name, const char *ns,
    struct evkeyvalq *query, const char *digest)
{
	struct listing_query	 q;
	const char		*n, *e;
	char			*end;

	memset(&q, 0, sizeof q);
	q.lq_name = name;
	q.lq_ns = ns;
	q.lq_n = -1;
	if (digest != NULL) {
		if (!policy_digest_valid(digest)) {
			proxy_error(req, 400, "DIGEST_INVALID", "\"%.80s\" is "
			    "not a sha256 digest", digest);
			return;
		}
		q.lq_digest = digest;
		if ((q.lq_type = evhttp_find_header(query,
		    "artifactType")) != NULL &&
		    !route_media_type_valid(q.lq_type)) {
			proxy_error(req, 400, "UNSUPPORTED", "artifactType "
			    "\"%.80s\" is not a media type", q.lq_type);
			return;
		}
	} else {
		if ((n = evhttp_find_header(query, "n")) != NULL) {
			q.lq_n = strtol(n, &end, 10);
			if (n[0] < '0' || n[0] > '9' || *end != '\0' ||
			    q.lq_n > 100000) {
				proxy_error(req, 400,
				    "PAGINATION_NUMBER_INVALID", "n \"%.20s\" "
				    "is not a number from 0 to 100000", n);
				return;
			}
		}
		if ((e = evhttp_find_header(query, "last")) != NULL &&
		    !policy_tag_valid(e)) {
			proxy_error(req, 400, "TAG_INVALID", "last \"%.80s\" is "
			    "not a valid tag", e);
			return;
		}
		q.lq_last = e;
	}
	if (rt->rt_up != NULL)
		proxy_mirror_list(req, st, rt->rt_up, rt->rt_repo, &q);
	else if (route_nix_allowed(req, rt->rt_nix) == 0)
		proxy_nix_list(req, st, rt->rt_nix, &q);
}

/* Routes /v2/<name>/blobs/<digest>. */
static void
route_blob(struct evhttp_request *req, struct store *st,
    const struct route_target *rt, const char *digest)
{
	if (!policy_digest_valid(digest)) {
		proxy_error(req, 400, "DIGEST_INVALID", "\"%.80s\" is not a "
		    "sha256 digest", digest);
		return;
	}
	if (rt->rt_up != NULL) {
		proxy_mirror_blob(req, st, rt->rt_up, rt->rt_repo, digest);
		return;
	}
	/* A Nix image's layer or config, under a name that pulled it. */
	if (route_nix_allowed(req, rt->rt_nix) == -1)
		return;
	if (!store_link_has(st, STORE_NIX_NS, rt->rt_nix, digest)) {
		proxy_error(req, 404, "BLOB_UNKNOWN", "blob %s is not part of "
		    "an image pulled as %s/%s", digest, nm_conf->cf_nix_prefix,
		    rt->rt_nix);
		return;
	}
	/*
	 * Built by another replica: its bytes are in the shared bucket.
	 * With --s3-redirect, the client may be sent there.
	 */
	if (store_remote_on(st) && (nm_conf->cf_s3_redirect ||
	    store_blob_stat(st, digest, NULL, NULL) == -1)) {
		proxy_mirror_nix_blob(req, st, rt->rt_nix, digest);
		return;
	}
	metrics_cache("blob", "nix", METRICS_HIT);
	proxy_serve_file(req, st, digest, "application/octet-stream", 1);
}

/*
 * Splits "/v2/<name>/<kind>/<ref>" in place; the name is everything up to
 * the last two components.  Returns the kind, or -1.
 */
static int
route_split(char *path, char **name, char **ref)
{
	char	*last, *kind;

	if (strcmp(path, "/v2/") == 0 || strcmp(path, "/v2") == 0)
		return (ROUTE_BASE);
	if (strncmp(path, "/v2/", 4) != 0)
		return (-1);
	path += 4;
	if ((last = strrchr(path, '/')) == NULL)
		return (-1);
	*last++ = '\0';
	if ((kind = strrchr(path, '/')) == NULL)
		return (-1);
	*kind++ = '\0';
	*name = path;
	*ref = last;
	if (strcmp(kind, "manifests") == 0)
		return (ROUTE_MANIFEST);
	if (strcmp(kind, "blobs") == 0)
		return (ROUTE_BLOB);
	if (strcmp(kind, "tags") == 0 && strcmp(last, "list") == 0)
		return (ROUTE_TAGS);
	if (strcmp(kind, "referrers") == 0)
		return (ROUTE_REFERRERS);
	return (-1);
}

/*
 * A /metrics or status page request while a pool job reads the store's
 * totals.
 */
enum route_scrape_kind {
	SCRAPE_METRICS,
	SCRAPE_STATUS_JSON,
	SCRAPE_STATUS_HTML,
};
struct route_scrape {
	enum route_scrape_kind	 rs_kind;
	struct evhttp_request	*rs_req;	/* NULL once the client left */
	struct evhttp_connection *rs_conn;
	struct store		*rs_store;
	struct metrics_store	 rs_ms;
};

/* The pool job: summing the blobs' sizes is a table scan. */
static void
route_scrape_job(void *arg)
{
	struct route_scrape	*rs = arg;

	(void)store_stats(rs->rs_store, &rs->rs_ms.ms_bytes,
	    &rs->rs_ms.ms_blobs);
	rs->rs_ms.ms_s3_pending = store_remote_on(rs->rs_store) ?
	    store_remote_pending(rs->rs_store) : -1;
}

/* Back on the loop: the exposition, or the status page. */
static void
route_scrape_done(void *arg)
{
	struct route_scrape	*rs = arg;
	struct evhttp_request	*req = rs->rs_req;
	json_t			*st;
	char			*text;

	if (req == NULL) {
		free(rs);
		return;
	}
	evhttp_connection_set_closecb(rs->rs_conn, NULL, NULL);
	rs->rs_ms.ms_quota = nm_conf->cf_max_store_bytes;
	if (rs->rs_kind == SCRAPE_METRICS) {
		text = metrics_text(&rs->rs_ms);
		proxy_reply_text(req, "text/plain; version=0.0.4; "
		    "charset=utf-8", text, strlen(text));
		free(text);
		free(rs);
		return;
	}
	st = status_json(&rs->rs_ms);
	if (rs->rs_kind == SCRAPE_STATUS_JSON)
		text = json_dumps(st, JSON_INDENT(1) | JSON_PRESERVE_ORDER |
		    JSON_REAL_PRECISION(6));
	else
		text = status_html(st);
	json_decref(st);
	if (text == NULL)
		fatalx("%s: no memory", __func__);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Cache-Control", "no-store");
	proxy_reply_text(req, rs->rs_kind == SCRAPE_STATUS_JSON ?
	    "application/json" : "text/html; charset=utf-8", text,
	    strlen(text));
	free(text);
	free(rs);
}

/* The client left while its scrape was in the pool. */
static void
route_scrape_close_cb(struct evhttp_connection *conn, void *arg)
{
	struct route_scrape	*rs = arg;

	(void)conn;
	proxy_orphan(rs->rs_req);
	rs->rs_req = NULL;
}

/*
 * GET /metrics (the counters in the Prometheus text format), /status.json
 * and / (the status page): for the clients in status.allow, by default
 * those on a loopback address only (they name upstreams and images).
 */
static void
route_scrape(struct evhttp_request *req, struct store *st,
    enum route_scrape_kind kind)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(req);
	struct route_scrape	*rs;
	struct sockaddr_storage	 ss;
	char			*why = NULL, text[INET6_ADDRSTRLEN + 2];

	proxy_client(req, &ss, text, sizeof text);
	if (!policy_status_allowed(ss.ss_family != 0 ?
	    (struct sockaddr *)&ss : NULL, &why)) {
		proxy_error(req, 403, "DENIED", "%s", why);
		free(why);
		return;
	}
	rs = xcalloc(1, sizeof *rs);
	rs->rs_kind = kind;
	rs->rs_req = req;
	rs->rs_conn = conn;
	rs->rs_store = st;
	if (!work_available() || work_submit(route_scrape_job,
	    route_scrape_done, rs) == -1) {
		/* No worker (shutting down): read them here. */
		route_scrape_job(rs);
		route_scrape_done(rs);
		return;
	}
	evhttp_connection_set_closecb(conn, route_scrape_close_cb, rs);
}

/* Dispatches one request to its route. */
void
proxy_route(struct evhttp_request *req, void *arg)
{
	struct store		*st = arg;
	const struct evhttp_uri	*uri;
	enum evhttp_cmd_type	 cmd = evhttp_request_get_command(req);
	struct evkeyvalq	 query;
	struct route_target	 rt;
	struct sockaddr_storage	 client;
	const char		*p, *q, *ns = NULL;
	char			*path, *name = NULL, *ref = NULL, *why = NULL;
	char			 text[INET6_ADDRSTRLEN + 2];
	int			 kind;

	/*
	 * Through a balancer: the client it names meets clients.allow, and
	 * one it cannot name is refused.
	 */
	if (proxy_client(req, &client, text, sizeof text) == 1 &&
	    (client.ss_family == 0 || !policy_client_allowed(
	    (struct sockaddr *)&client, &why))) {
		proxy_error(req, 403, "DENIED", "%s", why != NULL ? why :
		    "the balancer's X-Forwarded-For names no client address");
		free(why);
		return;
	}
	uri = evhttp_request_get_evhttp_uri(req);
	if (uri == NULL || (p = evhttp_uri_get_path(uri)) == NULL) {
		proxy_error(req, 400, "NAME_INVALID", "malformed request URI");
		return;
	}
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Allow", "GET, HEAD");
		proxy_error(req, 405, "UNSUPPORTED", "this registry is a "
		    "read-only mirror; push is not supported");
		return;
	}
	TAILQ_INIT(&query);
	if (strcmp(p, "/metrics") == 0) {
		route_scrape(req, st, SCRAPE_METRICS);
		return;
	}
	if (strcmp(p, "/status.json") == 0 || strcmp(p, "/") == 0) {
		route_scrape(req, st, p[1] == '\0' ? SCRAPE_STATUS_HTML :
		    SCRAPE_STATUS_JSON);
		return;
	}
	/* The listener opens after the store: up is ready. */
	if (strcmp(p, "/healthz") == 0) {
		proxy_reply_text(req, "application/json",
		    "{\"status\":\"ready\"}", 18);
		return;
	}
	path = xstrdup(p);
	kind = route_split(path, &name, &ref);
	if (kind == -1) {
		proxy_error(req, 404, "NAME_UNKNOWN", "no such endpoint");
		goto out;
	}
	if (kind == ROUTE_BASE) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Docker-Distribution-API-Version", "registry/2.0");
		proxy_reply_text(req, "application/json", "{}", 2);
		goto out;
	}
	if (!policy_name_valid(name)) {
		proxy_error(req, 400, "NAME_INVALID", "\"%.100s\" is not a valid "
		    "repository name", name);
		goto out;
	}
	if ((q = evhttp_uri_get_query(uri)) != NULL &&
	    evhttp_parse_query_str(q, &query) == 0)
		ns = evhttp_find_header(&query, "ns");
	if (ns != NULL && !policy_ns_valid(ns)) {
		proxy_error(req, 400, "NAME_INVALID", "ns \"%.100s\" is not a "
		    "registry host", ns);
		goto out;
	}
	if (ns != NULL)
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "OCI-Namespace", ns);
	if (route_target(req, name, ns, &rt) == -1)
		goto out;
	if (kind == ROUTE_MANIFEST)
		route_manifest(req, st, &rt, ref);
	else if (kind == ROUTE_BLOB)
		route_blob(req, st, &rt, ref);
	else
		route_list(req, st, &rt, name, ns, &query,
		    kind == ROUTE_REFERRERS ? ref : NULL);
	free(rt.rt_repo);
out:
	evhttp_clear_headers(&query);
	free(path);
}
