/*
 * proxy/listing.c: the lists of the pull API, tags/list and referrers.
 *
 * A pull-through repository's tags are fetched whole from its upstream
 * (following the upstream's own pages), kept in the store's lists table,
 * and paged here with n and last, so a page is the same whether it came
 * fresh, from the cache within tag_ttl, or stale while the upstream is
 * down; with no list kept, the tags the mirror itself resolved stand in.
 * A Nix name's tags are "latest" plus the tags and branches of
 * --pkgs-repo.
 *
 * Referrers (OCI 1.1) are asked of the upstream's referrers API; an
 * upstream without one (a 404) is asked for the fallback tag
 * sha256-<hex> instead, and with neither the list is empty.  The index is
 * kept like the tags, and filtered by artifactType here.
 */
#include <sys/types.h>
#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "nixmirror.h"
#include "nix/nix.h"
#include "policy/policy.h"
#include "proxy/proxy.h"
#include "store/store.h"

#define LS_MAX_BODY	(4 * 1024 * 1024)	/* one upstream page */
#define LS_MAX_PAGES	100			/* upstream pages followed */
#define LS_MAX_TAGS	100000			/* tags kept per repository */
#define LS_NIX_NS	STORE_NIX_NS
#define MT_INDEX	"application/vnd.oci.image.index.v1+json"

enum ls_phase {
	LS_TAGS,		/* GET tags/list, page by page */
	LS_REFERRERS,		/* GET referrers/<digest> */
	LS_FALLBACK,		/* GET manifests/sha256-<hex> */
};

/* One list request: the client's question and the upstream's answer. */
struct ls_req {
	struct evhttp_request	*ls_req;	/* NULL once the client left */
	struct evhttp_connection *ls_conn;
	struct store		*ls_store;
	const struct nm_upstream *ls_up;	/* NULL: a Nix name */
	char			*ls_repo;	/* the upstream's name */
	struct listing_query	 ls_q;		/* the client's, on these: */
	char			*ls_own[5];
	char			*ls_kind;	/* the lists table's kind */
	enum ls_phase		 ls_phase;
	json_t			*ls_list;	/* tags or referrer descriptors */
	int			 ls_pages;
	char			*ls_next;	/* query of the next page */
	struct evbuffer		*ls_body;
	char			*ls_denied;
	/* A Nix name's refs come from a pool job. */
	char			**ls_refs;
	int			 ls_rc;
	char			*ls_cause;
};

static void	ls_fetch(struct ls_req *, enum ls_phase, const char *what);

/* Copies the client's question. */
static void
ls_query_copy(struct ls_req *ls, const struct listing_query *src)
{
	char	**own = ls->ls_own;

	ls->ls_q = *src;
	ls->ls_q.lq_name = own[0] = xstrdup(src->lq_name);
	if (src->lq_ns != NULL)
		ls->ls_q.lq_ns = own[1] = xstrdup(src->lq_ns);
	if (src->lq_last != NULL)
		ls->ls_q.lq_last = own[2] = xstrdup(src->lq_last);
	if (src->lq_digest != NULL)
		ls->ls_q.lq_digest = own[3] = xstrdup(src->lq_digest);
	if (src->lq_type != NULL)
		ls->ls_q.lq_type = own[4] = xstrdup(src->lq_type);
}

static void
ls_free(struct ls_req *ls)
{
	size_t	 i;

	if (ls->ls_req != NULL)
		evhttp_connection_set_closecb(ls->ls_conn, NULL, NULL);
	free(ls->ls_repo);
	for (i = 0; i < sizeof ls->ls_own / sizeof ls->ls_own[0]; i++)
		free(ls->ls_own[i]);
	free(ls->ls_kind);
	json_decref(ls->ls_list);
	free(ls->ls_next);
	if (ls->ls_body != NULL)
		evbuffer_free(ls->ls_body);
	free(ls->ls_denied);
	nix_refs_free(ls->ls_refs);
	free(ls->ls_cause);
	free(ls);
}

/* Sends a JSON document (no body for HEAD). */
static void
ls_send_json(struct evhttp_request *req, json_t *doc, const char *type)
{
	char	*text;

	text = json_dumps(doc, JSON_COMPACT);
	proxy_reply_text(req, type, text, strlen(text));
	free(text);
}

static int
ls_strcmp(const void *a, const void *b)
{
	return (strcmp(*(const char *const *)a, *(const char *const *)b));
}

/*
 * Sorts a JSON array of tags and drops repeats and non-strings: the order
 * n and last page by.
 */
static json_t *
ls_tags_sorted(json_t *in)
{
	const char	**v;
	json_t		*out, *t;
	size_t		 i, n = 0;

	v = xcalloc(json_array_size(in) + 1, sizeof *v);
	json_array_foreach(in, i, t)
		if (json_is_string(t) && policy_tag_valid(json_string_value(t)))
			v[n++] = json_string_value(t);
	qsort(v, n, sizeof *v, ls_strcmp);
	out = json_array();
	for (i = 0; i < n && i < LS_MAX_TAGS; i++)
		if (i == 0 || strcmp(v[i], v[i - 1]) != 0)
			json_array_append_new(out, json_string(v[i]));
	free(v);
	return (out);
}

/*
 * Answers tags/list from a sorted array: the tags after last, at most n,
 * and a Link to the next page when more remain.
 */
static void
ls_send_tags(struct evhttp_request *req, const struct listing_query *q,
    json_t *tags)
{
	json_t		*doc, *page, *t;
	size_t		 i;
	const char	*tag = NULL;
	char		*link;
	int		 more = 0;

	page = json_array();
	json_array_foreach(tags, i, t) {
		if (q->lq_last != NULL &&
		    strcmp(json_string_value(t), q->lq_last) <= 0)
			continue;
		if (q->lq_n >= 0 && json_array_size(page) >= (size_t)q->lq_n) {
			more = q->lq_n > 0;
			break;
		}
		tag = json_string_value(t);
		json_array_append(page, t);
	}
	if (more && tag != NULL) {
		xasprintf(&link, "</v2/%s/tags/list?n=%ld&last=%s%s%s>; "
		    "rel=\"next\"", q->lq_name, q->lq_n, tag,
		    q->lq_ns != NULL ? "&ns=" : "",
		    q->lq_ns != NULL ? q->lq_ns : "");
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Link", link);
		free(link);
	}
	doc = json_pack("{s:s, s:o}", "name", q->lq_name, "tags", page);
	ls_send_json(req, doc, "application/json");
	json_decref(doc);
}

/*
 * Answers referrers from an index's descriptors, keeping those of the
 * asked artifactType only.
 */
static void
ls_send_referrers(struct evhttp_request *req, const struct listing_query *q,
    json_t *list)
{
	json_t		*doc, *out, *d;
	const char	*at;
	size_t		 i;

	out = json_array();
	json_array_foreach(list, i, d) {
		if (!json_is_object(d))
			continue;
		at = json_string_value(json_object_get(d, "artifactType"));
		if (q->lq_type != NULL && (at == NULL ||
		    strcmp(at, q->lq_type) != 0))
			continue;
		json_array_append(out, d);
	}
	if (q->lq_type != NULL)
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "OCI-Filters-Applied", "artifactType");
	doc = json_pack("{s:i, s:s, s:o}", "schemaVersion", 2, "mediaType",
	    MT_INDEX, "manifests", out);
	ls_send_json(req, doc, MT_INDEX);
	json_decref(doc);
}

/* Answers from a kept list's text: a tags array, or referrers. */
static int
ls_send_kept(struct evhttp_request *req, const struct listing_query *q,
    const char *text)
{
	json_t	*list;

	if ((list = json_loads(text, 0, NULL)) == NULL ||
	    !json_is_array(list)) {
		json_decref(list);
		return (-1);
	}
	if (q->lq_digest != NULL)
		ls_send_referrers(req, q, list);
	else
		ls_send_tags(req, q, list);
	json_decref(list);
	return (0);
}

/* The client went away; the fetch goes on and keeps what it gets. */
static void
ls_close_cb(struct evhttp_connection *conn, void *arg)
{
	struct ls_req	*ls = arg;

	(void)conn;
	proxy_orphan(ls->ls_req);
	ls->ls_req = NULL;
}

/* Detaches the client to answer it; NULL when it left. */
static struct evhttp_request *
ls_client(struct ls_req *ls)
{
	struct evhttp_request	*req = ls->ls_req;

	if (req != NULL) {
		evhttp_connection_set_closecb(ls->ls_conn, NULL, NULL);
		ls->ls_req = NULL;
	}
	return (req);
}

/* The list is whole: keep it, answer, free. */
static void
ls_done(struct ls_req *ls)
{
	struct evhttp_request	*req;
	char			*text;

	text = json_dumps(ls->ls_list, JSON_COMPACT);
	if (store_list_put(ls->ls_store, ls->ls_up != NULL ? ls->ls_up->up_ns :
	    LS_NIX_NS, ls->ls_repo, ls->ls_kind, text) == -1)
		log_warnx("cannot keep the %s list of %s", ls->ls_kind,
		    ls->ls_repo);
	if ((req = ls_client(ls)) != NULL)
		ls_send_kept(req, &ls->ls_q, text);
	free(text);
	ls_free(ls);
}

/*
 * The upstream failed: a kept list, however old, or for tags the ones
 * the mirror resolved; else the error that fits.
 */
static void
ls_fail(struct ls_req *ls, int status, const char *err)
{
	struct evhttp_request	*req;
	const char		*ns = ls->ls_up != NULL ? ls->ls_up->up_ns :
				    LS_NIX_NS;
	const char		*what = ls->ls_q.lq_digest != NULL ?
				    "referrers" : "tags";
	char			*text = NULL;
	time_t			 fetched;

	if (status != 404 && status != 401 && status != 403 &&
	    (store_list_get(ls->ls_store, ns, ls->ls_repo, ls->ls_kind, &text,
	    &fetched) == 0 || (ls->ls_q.lq_digest == NULL && ls->ls_up != NULL &&
	    (text = store_utag_list(ls->ls_store, ns, ls->ls_repo)) != NULL))) {
		log_warnx("%s: the %s of %s cannot be fetched (%s); serving "
		    "what is kept", ns, what, ls->ls_repo, err != NULL ? err :
		    "unexpected status");
		if ((req = ls_client(ls)) != NULL &&
		    ls_send_kept(req, &ls->ls_q, text) == -1)
			proxy_error(req, 500, "UNKNOWN", "the kept %s of %s "
			    "cannot be read", what, ls->ls_q.lq_name);
		free(text);
		ls_free(ls);
		return;
	}
	if ((req = ls_client(ls)) == NULL) {
		ls_free(ls);
		return;
	}
	if (ls->ls_up == NULL)
		proxy_error(req, 502, "UNKNOWN", "the tags of %s cannot be "
		    "listed: %s", ls->ls_q.lq_name, err != NULL ? err :
		    "failed");
	else if (status == 404)
		proxy_error(req, 404, "NAME_UNKNOWN", "repository %s is not "
		    "known to %s", ls->ls_repo, ns);
	else if (status == 401 || status == 403)
		proxy_error(req, 403, "DENIED", "upstream %s denied %s: %s", ns,
		    ls->ls_repo, ls->ls_denied != NULL ? ls->ls_denied :
		    err != NULL ? err : "access denied");
	else {
		log_warnx("upstream %s (%s) failed for the %s of %s: %s", ns,
		    ls->ls_up->up_url, what, ls->ls_repo, err != NULL ? err :
		    "unexpected status");
		proxy_error(req, 502, "UNKNOWN", "upstream %s failed: %s", ns,
		    err != NULL ? err : "unexpected status");
	}
	ls_free(ls);
}

/* The query of a Link header's next page of tags/list, or NULL. */
static char *
ls_link_next(const char *link)
{
	const char	*p, *e;
	char		*q;

	if (strstr(link, "rel=\"next\"") == NULL &&
	    strstr(link, "rel=next") == NULL)
		return (NULL);
	if ((p = strstr(link, "/tags/list?")) == NULL ||
	    (e = strchr(p, '>')) == NULL)
		return (NULL);
	p += strlen("/tags/list?");
	if (e - p == 0 || e - p > 1024)
		return (NULL);
	q = xmalloc((size_t)(e - p) + 1);
	memcpy(q, p, (size_t)(e - p));
	q[e - p] = '\0';
	if (strpbrk(q, " \t\r\n\"<>#/") != NULL) {
		free(q);
		return (NULL);
	}
	return (q);
}

static int
ls_headers_cb(struct up_req *ur, int status, struct evkeyvalq *h, void *arg)
{
	struct ls_req	*ls = arg;
	const char	*v;

	(void)ur;
	free(ls->ls_next);
	ls->ls_next = NULL;
	if (status == 200 && ls->ls_phase == LS_TAGS &&
	    (v = evhttp_find_header(h, "Link")) != NULL)
		ls->ls_next = ls_link_next(v);
	if ((v = evhttp_find_header(h, "Content-Length")) != NULL &&
	    strtoull(v, NULL, 10) > LS_MAX_BODY)
		return (-1);
	return (0);
}

static int
ls_data_cb(struct up_req *ur, struct evbuffer *buf, void *arg)
{
	struct ls_req	*ls = arg;

	(void)ur;
	if (evbuffer_get_length(ls->ls_body) + evbuffer_get_length(buf) >
	    LS_MAX_BODY)
		return (-1);
	evbuffer_add_buffer(ls->ls_body, buf);
	return (0);
}

/* The upstream's JSON answer, or NULL. */
static json_t *
ls_body_json(struct ls_req *ls)
{
	size_t	 len = evbuffer_get_length(ls->ls_body);

	return (json_loadb((const char *)evbuffer_pullup(ls->ls_body, -1), len,
	    0, NULL));
}

/* A page of tags came: collect it, and ask for the next or finish. */
static void
ls_tags_page(struct ls_req *ls)
{
	json_t	*doc, *tags, *t, *sorted;
	size_t	 i;
	char	*what;

	doc = ls_body_json(ls);
	tags = json_object_get(doc, "tags");
	if (doc == NULL || (!json_is_array(tags) && !json_is_null(tags))) {
		json_decref(doc);
		ls_fail(ls, 0, "the tag list is not JSON");
		return;
	}
	json_array_foreach(tags, i, t)
		if (json_is_string(t) && json_array_size(ls->ls_list) <
		    LS_MAX_TAGS)
			json_array_append(ls->ls_list, t);
	json_decref(doc);
	if (ls->ls_next != NULL && ++ls->ls_pages < LS_MAX_PAGES &&
	    json_array_size(ls->ls_list) < LS_MAX_TAGS) {
		xasprintf(&what, "tags/list?%s", ls->ls_next);
		ls_fetch(ls, LS_TAGS, what);
		free(what);
		return;
	}
	if (ls->ls_next != NULL)
		log_warnx("upstream %s: the tags of %s are cut at %zu",
		    ls->ls_up->up_ns, ls->ls_repo, json_array_size(ls->ls_list));
	sorted = ls_tags_sorted(ls->ls_list);
	json_decref(ls->ls_list);
	ls->ls_list = sorted;
	ls_done(ls);
}

/* An index came (referrers or the fallback tag): its descriptors. */
static void
ls_index(struct ls_req *ls)
{
	json_t	*doc, *m;

	doc = ls_body_json(ls);
	m = json_object_get(doc, "manifests");
	if (doc == NULL || !json_is_array(m)) {
		json_decref(doc);
		ls_fail(ls, 0, "the referrers are not an image index");
		return;
	}
	json_decref(ls->ls_list);
	ls->ls_list = json_incref(m);
	json_decref(doc);
	ls_done(ls);
}

static void
ls_done_cb(struct up_req *ur, int status, const char *err, void *arg)
{
	struct ls_req	*ls = arg;
	char		*what;

	(void)ur;
	if (err == NULL && status == 200) {
		if (ls->ls_phase == LS_TAGS)
			ls_tags_page(ls);
		else
			ls_index(ls);
		return;
	}
	if (err == NULL && status == 404 && ls->ls_phase == LS_REFERRERS) {
		/* No referrers API: the fallback tag. */
		xasprintf(&what, "manifests/sha256-%s", ls->ls_q.lq_digest +
		    strlen("sha256:"));
		ls_fetch(ls, LS_FALLBACK, what);
		free(what);
		return;
	}
	if (err == NULL && status == 404 && ls->ls_phase == LS_FALLBACK) {
		/* Neither: no referrers. */
		ls_done(ls);
		return;
	}
	if (err == NULL && (status == 401 || status == 403))
		ls->ls_denied = proxy_error_message(ls->ls_body);
	ls_fail(ls, err != NULL && status == 200 ? 0 : status, err);
}

static void
ls_fetch(struct ls_req *ls, enum ls_phase phase, const char *what)
{
	static const struct up_callbacks cb = {
		ls_headers_cb, ls_data_cb, ls_done_cb
	};

	ls->ls_phase = phase;
	if (ls->ls_body != NULL)
		evbuffer_free(ls->ls_body);
	ls->ls_body = evbuffer_new();
	proxy_upstream_fetch(ls->ls_up, 0, ls->ls_repo, what, phase ==
	    LS_TAGS ? "application/json" : MT_INDEX, &cb, ls);
}

/* The lists table's kind of a question: "tags" or "referrers <digest>". */
static char *
ls_kind(const struct listing_query *q)
{
	char	*kind;

	if (q->lq_digest == NULL)
		return (xstrdup(STORE_LIST_TAGS));
	xasprintf(&kind, "%s%s", STORE_LIST_REFERRERS, q->lq_digest);
	return (kind);
}

/* A new list request for a client. */
static struct ls_req *
ls_new(struct evhttp_request *req, struct store *st,
    const struct nm_upstream *up, const char *repo,
    const struct listing_query *q)
{
	struct ls_req	*ls;

	ls = xcalloc(1, sizeof *ls);
	ls->ls_req = req;
	ls->ls_conn = evhttp_request_get_connection(req);
	ls->ls_store = st;
	ls->ls_up = up;
	ls->ls_repo = xstrdup(repo);
	ls_query_copy(ls, q);
	ls->ls_kind = ls_kind(q);
	ls->ls_list = json_array();
	evhttp_connection_set_closecb(ls->ls_conn, ls_close_cb, ls);
	return (ls);
}

/*
 * Answers from the kept list when it is fresh (or the mirror is
 * offline); 0 when answered.
 */
static int
ls_kept(struct evhttp_request *req, struct store *st, const char *ns,
    const char *repo, const struct listing_query *q)
{
	char	*kind, *text = NULL;
	time_t	 fetched;
	int	 rv = -1;

	kind = ls_kind(q);
	if (store_list_get(st, ns, repo, kind, &text, &fetched) == 0 &&
	    (nm_conf->cf_offline || time(NULL) - fetched < nm_conf->cf_tag_ttl))
		rv = ls_send_kept(req, q, text);
	free(text);
	free(kind);
	return (rv);
}

/* tags/list or referrers of a pull-through repository; see proxy.h. */
void
proxy_mirror_list(struct evhttp_request *req, struct store *st,
    const struct nm_upstream *up, const char *repo,
    const struct listing_query *q)
{
	struct ls_req	*ls;
	char		*text, *what;

	if (ls_kept(req, st, up->up_ns, repo, q) == 0)
		return;
	if (nm_conf->cf_offline) {
		if (q->lq_digest != NULL)
			ls_send_referrers(req, q, NULL);
		else if ((text = store_utag_list(st, up->up_ns, repo)) != NULL) {
			ls_send_kept(req, q, text);
			free(text);
		} else
			proxy_error(req, 404, "NAME_UNKNOWN", "no tags of %s "
			    "are stored, and the mirror is offline", repo);
		return;
	}
	ls = ls_new(req, st, up, repo, q);
	if (q->lq_digest != NULL) {
		xasprintf(&what, "referrers/%s", q->lq_digest);
		ls_fetch(ls, LS_REFERRERS, what);
		free(what);
	} else
		ls_fetch(ls, LS_TAGS, "tags/list");
}

/* The pool job of a Nix name's tags: git ls-remote --pkgs-repo. */
static void
ls_refs_job(void *arg)
{
	struct ls_req	*ls = arg;
	size_t		 n;

	ls->ls_rc = nix_git_refs(nm_conf->cf_pkgs_repo,
	    nm_conf->cf_build_timeout, &ls->ls_refs, &n, &ls->ls_cause);
}

static void
ls_refs_done(void *arg)
{
	struct ls_req	*ls = arg;
	json_t		*sorted;
	size_t		 i;

	if (ls->ls_rc != NIX_OK) {
		ls_fail(ls, 0, ls->ls_cause);
		return;
	}
	json_array_append_new(ls->ls_list, json_string("latest"));
	for (i = 0; ls->ls_refs[i] != NULL; i++)
		json_array_append_new(ls->ls_list, json_string(ls->ls_refs[i]));
	sorted = ls_tags_sorted(ls->ls_list);
	json_decref(ls->ls_list);
	ls->ls_list = sorted;
	ls_done(ls);
}

/*
 * The referrers a build recorded for a Nix image's manifest, stored ones
 * only; NULL when none.
 */
static json_t *
ls_nix_kept(struct store *st, const char *digest)
{
	json_t		*list, *out, *d;
	char		*kind, *text = NULL, *type;
	const char	*dg;
	uint64_t	 size;
	time_t		 t;
	size_t		 i;

	xasprintf(&kind, "%s%s", STORE_LIST_REFERRERS, digest);
	list = store_list_get(st, LS_NIX_NS, "", kind, &text, &t) == 0 ?
	    json_loads(text, 0, NULL) : NULL;
	free(kind);
	free(text);
	if (!json_is_array(list)) {
		json_decref(list);
		return (NULL);
	}
	out = json_array();
	json_array_foreach(list, i, d) {
		type = NULL;
		if ((dg = json_string_value(json_object_get(d, "digest"))) !=
		    NULL && policy_digest_valid(dg) &&
		    store_blob_stat(st, dg, &size, &type) == 0)
			json_array_append(out, d);
		free(type);
	}
	json_decref(list);
	return (out);
}

/*
 * A Nix image's referrers (its SBOM), for a name that links to the
 * image: another name's image is not this name's to describe.
 */
static void
ls_nix_referrers(struct evhttp_request *req, struct store *st,
    const char *rest, const struct listing_query *q)
{
	json_t	*list = NULL;

	if (store_link_has(st, STORE_NIX_NS, rest, q->lq_digest))
		list = ls_nix_kept(st, q->lq_digest);
	ls_send_referrers(req, q, list);
	json_decref(list);
}

/*
 * The referrers tag schema's fallback tag sha256-<hex> of a Nix image:
 * its referrers as an image index, served as a manifest; see proxy.h.
 */
void
proxy_nix_referrers_tag(struct evhttp_request *req, struct store *st,
    const char *rest, const char *tag)
{
	json_t		*list = NULL, *doc;
	char		 digest[NM_DIGEST_SIZE], dg[NM_DIGEST_SIZE], *text;
	size_t		 len;

	snprintf(digest, sizeof digest, "sha256:%s", tag + strlen("sha256-"));
	if (store_link_has(st, STORE_NIX_NS, rest, digest))
		list = ls_nix_kept(st, digest);
	if (json_array_size(list) == 0) {
		json_decref(list);
		proxy_error(req, 404, "MANIFEST_UNKNOWN", "no referrers of %s "
		    "under %s", digest, rest);
		return;
	}
	doc = json_pack("{s:i, s:s, s:o}", "schemaVersion", 2, "mediaType",
	    MT_INDEX, "manifests", list);
	text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(doc);
	len = strlen(text);
	nm_sha256_digest(text, len, dg);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Docker-Content-Digest", dg);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Docker-Distribution-API-Version", "registry/2.0");
	proxy_reply_text(req, MT_INDEX, text, len);
	free(text);
}

/*
 * Links the referrers of a Nix image's manifest (and what they
 * reference) to the name the image is linked to; see proxy.h.  Blocking:
 * a pool job.
 */
int
proxy_nix_link_referrers(struct store *st, const char *rest,
    const char *digest)
{
	json_t		*list, *d;
	const char	*dg;
	size_t		 i;
	int		 rv = 0;

	if ((list = ls_nix_kept(st, digest)) == NULL)
		return (0);
	json_array_foreach(list, i, d) {
		dg = json_string_value(json_object_get(d, "digest"));
		if (store_link_manifest(st, STORE_NIX_NS, rest, dg) == -1)
			rv = -1;
	}
	json_decref(list);
	return (rv);
}

/*
 * tags/list or referrers of a Nix name; see proxy.h.  Every Nix name has
 * the same tags: the revisions of the package set.
 */
void
proxy_nix_list(struct evhttp_request *req, struct store *st,
    const char *rest, const struct listing_query *q)
{
	struct ls_req	*ls;
	json_t		*tags;

	if (q->lq_digest != NULL) {
		ls_nix_referrers(req, st, rest, q);
		return;
	}
	if (nm_conf->cf_pkgs_repo == NULL) {
		tags = json_pack("[s]", "latest");
		ls_send_tags(req, q, tags);
		json_decref(tags);
		return;
	}
	if (ls_kept(req, st, LS_NIX_NS, "", q) == 0)
		return;
	ls = ls_new(req, st, NULL, "", q);
	if (work_submit_long(ls_refs_job, ls_refs_done, ls) == -1) {
		ls->ls_rc = NIX_EFAIL;
		ls->ls_cause = xstrdup("no worker is free to read the package "
		    "repository");
		ls_refs_done(ls);
	}
}
