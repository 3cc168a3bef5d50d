/*
 * proxy/mirror.c: the credential-free pull-through cache.
 *
 * Manifests by digest and blobs are immutable: fetched once, checked
 * against their digest, stored, and served from the store from then on.
 * A tag is checked upstream with a HEAD when its last check is older than
 * --tag-ttl; when the upstream fails, the last stored manifest is served.
 * A missing blob is downloaded once into a temp file, however many clients
 * ask; each of them is streamed the bytes as they reach the disk, and the
 * last byte of every response is held back until the whole blob matched
 * its digest, so that a bad download fails every transfer it fed.
 *
 * A blob over the policy's limits.max_blob_bytes is refused with 403
 * DENIED: before anything is written when its Content-Length says so,
 * else as soon as the bytes that arrived pass the limit; nothing is stored.
 */
#include <sys/types.h>
#include <sys/queue.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "nixmirror.h"
#include "policy/policy.h"
#include "proxy/proxy.h"
#include "store/store.h"

#define MIRROR_ACCEPT \
	"application/vnd.oci.image.index.v1+json, " \
	"application/vnd.oci.image.manifest.v1+json, " \
	"application/vnd.docker.distribution.manifest.list.v2+json, " \
	"application/vnd.docker.distribution.manifest.v2+json"
#define MIRROR_MAX_MANIFEST	(4 * 1024 * 1024)
#define MIRROR_FLUSH		(256 * 1024)	/* upstream bytes per write */
/*
 * Unwritten bytes at which reading stops until the write job is done.  A
 * write job takes about as long as reading its bytes, so more read ahead
 * gains nothing, and each MiB is memory a download has to fault in: with
 * 4 MiB a cold 64 MiB blob took 5,000 page faults, with 2 MiB 3,700.
 * (1 MiB took 700, but twelve clients of one download a tenth more CPU.)
 */
#define MIRROR_BACKLOG		(2 * 1024 * 1024)
#define MIRROR_PUMP		(256 * 1024)	/* new bytes worth a send */
#define MIRROR_CHUNK		(4 * 1024 * 1024) /* most bytes per send */
/*
 * Seconds without a download after which the heap's free pages go back
 * to the kernel: a pull's layers come one after another, and each would
 * fault in again the buffers a trim at its predecessor's end gave back.
 */
#define MIRROR_TRIM_DELAY	2

enum mf_phase {
	MF_CHECK,		/* HEAD of a tag we have */
	MF_GET,			/* GET of a tag or digest */
	MF_CONFIRM,		/* HEAD of a digest stored for another repo */
};

/* One client's manifest request that needs the upstream. */
struct mf_req {
	struct evhttp_request	*mf_req;	/* NULL once the client left */
	struct evhttp_connection *mf_conn;
	struct store		*mf_store;
	const struct nm_upstream *mf_up;
	char			*mf_repo;
	char			*mf_ref;
	int			 mf_bydigest;
	enum mf_phase		 mf_phase;
	char			 mf_stored[NM_DIGEST_SIZE];	/* or "" */
	char			 mf_updigest[NM_DIGEST_SIZE];	/* header */
	char			*mf_type;
	char			*mf_denied;	/* upstream's message on 401/403 */
	struct evbuffer		*mf_body;
	/* The commit is a job of the worker pool; these carry it. */
	char			*mf_ctype;
	char			*mf_cause;
	int			 mf_rc;
	char			 mf_cdigest[NM_DIGEST_SIZE];
};

static void	mf_fetch(struct mf_req *, enum mf_phase);

/* The media type of a stored manifest, or NULL. */
static char *
mirror_stored_type(struct store *st, const char *digest)
{
	uint64_t	 size;
	char		*type = NULL;

	if (store_blob_stat(st, digest, &size, &type) == -1)
		return (NULL);
	return (type);
}

/* Serves a stored manifest with its stored media type. */
static int
mirror_serve_manifest(struct evhttp_request *req, struct store *st,
    const char *digest)
{
	char	*type;

	if ((type = mirror_stored_type(st, digest)) == NULL)
		return (-1);
	proxy_serve_file(req, st, digest, type, 0);
	free(type);
	return (0);
}

/* The client went away; the fetch goes on and stores what it gets. */
static void
mf_close_cb(struct evhttp_connection *conn, void *arg)
{
	struct mf_req	*mf = arg;

	(void)conn;
	proxy_orphan(mf->mf_req);
	mf->mf_req = NULL;
}

/* Frees a manifest request, detaching it from its client. */
static void
mf_free(struct mf_req *mf)
{
	if (mf->mf_req != NULL)
		evhttp_connection_set_closecb(mf->mf_conn, NULL, NULL);
	free(mf->mf_repo);
	free(mf->mf_ref);
	free(mf->mf_type);
	free(mf->mf_denied);
	free(mf->mf_ctype);
	free(mf->mf_cause);
	if (mf->mf_body != NULL)
		evbuffer_free(mf->mf_body);
	free(mf);
}

/* Answers the client (if still there) with a stored manifest or an error. */
static void
mf_answer(struct mf_req *mf, const char *digest, int status,
    const char *code, const char *msg)
{
	struct evhttp_request	*req = mf->mf_req;

	if (req != NULL) {
		evhttp_connection_set_closecb(mf->mf_conn, NULL, NULL);
		mf->mf_req = NULL;
		if (digest == NULL)
			proxy_error(req, status, code, "%s", msg);
		else if (mirror_serve_manifest(req, mf->mf_store, digest) == -1)
			/* Evicted or removed since it was looked up. */
			proxy_error(req, 500, "UNKNOWN", "stored manifest %s of "
			    "%s:%s cannot be read", digest, mf->mf_repo,
			    mf->mf_ref);
	}
	mf_free(mf);
}

/*
 * An upstream failure: the stored manifest of the tag when there is one
 * (stale-if-error), else the error that fits the upstream's answer.
 */
static void
mf_fail(struct mf_req *mf, int status, const char *err)
{
	char	*msg;

	if (mf->mf_stored[0] != '\0' && status != 404) {
		log_warnx("upstream %s failed for %s:%s (%s); serving the stale "
		    "%s", mf->mf_up->up_ns, mf->mf_repo, mf->mf_ref,
		    err != NULL ? err : "no answer", mf->mf_stored);
		mf_answer(mf, mf->mf_stored, 0, NULL, NULL);
		return;
	}
	if (status == 404) {
		xasprintf(&msg, "manifest %s:%s is not known to %s", mf->mf_repo,
		    mf->mf_ref, mf->mf_up->up_ns);
		mf_answer(mf, NULL, 404, "MANIFEST_UNKNOWN", msg);
	} else if (status == 401 || status == 403) {
		xasprintf(&msg, "upstream %s denied %s: %s", mf->mf_up->up_ns,
		    mf->mf_repo, mf->mf_denied != NULL ? mf->mf_denied :
		    err != NULL ? err : "access denied");
		mf_answer(mf, NULL, 403, "DENIED", msg);
	} else {
		log_warnx("upstream %s (%s) failed for %s:%s: %s",
		    mf->mf_up->up_ns, mf->mf_up->up_url, mf->mf_repo,
		    mf->mf_ref, err != NULL ? err : "unexpected status");
		xasprintf(&msg, "upstream %s failed: %s", mf->mf_up->up_ns,
		    err != NULL ? err : "unexpected status");
		mf_answer(mf, NULL, 502, "UNKNOWN", msg);
	}
	free(msg);
}

/* Manifest response headers: keep the digest and media type. */
static int
mf_headers_cb(struct up_req *ur, int status, struct evkeyvalq *h, void *arg)
{
	struct mf_req	*mf = arg;
	const char	*v;

	(void)ur;
	mf->mf_updigest[0] = '\0';
	if ((v = evhttp_find_header(h, "Docker-Content-Digest")) != NULL &&
	    policy_digest_valid(v))
		snprintf(mf->mf_updigest, sizeof mf->mf_updigest, "%s", v);
	if (status == 200 && (v = evhttp_find_header(h, "Content-Type")) != NULL) {
		free(mf->mf_type);
		mf->mf_type = xstrdup(v);
	}
	if ((v = evhttp_find_header(h, "Content-Length")) != NULL &&
	    strtoull(v, NULL, 10) > MIRROR_MAX_MANIFEST)
		return (-1);
	return (0);
}

/* Manifest body bytes, kept in memory (manifests are small). */
static int
mf_data_cb(struct up_req *ur, struct evbuffer *buf, void *arg)
{
	struct mf_req	*mf = arg;

	(void)ur;
	if (evbuffer_get_length(mf->mf_body) + evbuffer_get_length(buf) >
	    MIRROR_MAX_MANIFEST)
		return (-1);
	evbuffer_add_buffer(mf->mf_body, buf);
	return (0);
}

/*
 * Whether text is a bare media type, "type/subtype" of RFC 6838's
 * restricted names (it is served back as Content-Type): at most 127
 * characters each, no spaces, controls or parameters.
 */
static int
mirror_media_type_valid(const char *t)
{
	static const char	 ok[] = "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&-^_.+";
	const char		*slash;
	size_t			 a, b;

	if ((slash = strchr(t, '/')) == NULL)
		return (0);
	a = (size_t)(slash - t);
	b = strlen(slash + 1);
	return (a > 0 && a <= 127 && b > 0 && b <= 127 &&
	    strspn(t, ok) == a && strspn(slash + 1, ok) == b);
}

/* A media type without parameters, or NULL when it is not a manifest's. */
char *
proxy_manifest_type(const char *type, const char *body, size_t len)
{
	json_t	*doc, *mt;
	char	*t = NULL;

	if (type != NULL) {
		t = xstrdup(type);
		t[strcspn(t, "; \t")] = '\0';
	}
	if (t == NULL || (strstr(t, "manifest") == NULL &&
	    strstr(t, "index") == NULL)) {
		free(t);
		t = NULL;
		/* No usable Content-Type: the document names its own. */
		if ((doc = json_loadb(body, len, 0, NULL)) != NULL) {
			mt = json_object_get(doc, "mediaType");
			if (json_is_string(mt))
				t = xstrdup(json_string_value(mt));
			json_decref(doc);
		}
	}
	if (t != NULL && ((strstr(t, "manifest") == NULL &&
	    strstr(t, "index") == NULL) || !mirror_media_type_valid(t))) {
		free(t);
		t = NULL;
	}
	return (t);
}

/* The commit job: the blob, its manifest row and the tag. */
static void
mf_commit_job(void *arg)
{
	struct mf_req	*mf = arg;
	const char	*body;
	size_t		 len = evbuffer_get_length(mf->mf_body);

	body = (const char *)evbuffer_pullup(mf->mf_body, -1);
	mf->mf_rc = 0;
	if (store_blob_put_mem(mf->mf_store, body, len, mf->mf_ctype,
	    mf->mf_cdigest, &mf->mf_cause) == -1 ||
	    store_manifest_put(mf->mf_store, mf->mf_cdigest,
	    mf->mf_ctype) == -1 || store_link_manifest(mf->mf_store,
	    mf->mf_up->up_ns, mf->mf_repo, mf->mf_cdigest) == -1 ||
	    (!mf->mf_bydigest && store_utag_put(mf->mf_store,
	    mf->mf_up->up_ns, mf->mf_repo, mf->mf_ref, mf->mf_cdigest) == -1))
		mf->mf_rc = -1;
}

/* The link job of a confirmed manifest: it and what it references. */
static void
mf_link_job(void *arg)
{
	struct mf_req	*mf = arg;

	mf->mf_rc = store_link_manifest(mf->mf_store, mf->mf_up->up_ns,
	    mf->mf_repo, mf->mf_ref);
}

/* Back on the loop after the link: serve the stored manifest. */
static void
mf_linked(void *arg)
{
	struct mf_req	*mf = arg;

	if (mf->mf_rc == -1)
		log_warnx("cannot link manifest %s to %s/%s", mf->mf_ref,
		    mf->mf_up->up_ns, mf->mf_repo);
	mf_answer(mf, mf->mf_ref, 0, NULL, NULL);
}

/*
 * The end of the HEAD that asks whether the upstream holds a manifest
 * stored for another repository under this one: link and serve it, or
 * pass on the upstream's 401, 403 or 404.  When the upstream cannot say,
 * the manifest is not known here.
 */
static void
mf_confirmed(struct mf_req *mf, int status, const char *err)
{
	char	*msg;

	if (err == NULL && status == 200) {
		if (work_submit(mf_link_job, mf_linked, mf) == -1) {
			mf_link_job(mf);
			mf_linked(mf);
		}
		return;
	}
	if (err == NULL && (status == 401 || status == 403 || status == 404)) {
		mf_fail(mf, status, err);
		return;
	}
	log_warnx("upstream %s cannot confirm manifest %s of %s: %s",
	    mf->mf_up->up_ns, mf->mf_ref, mf->mf_repo, err != NULL ? err :
	    "unexpected status");
	xasprintf(&msg, "manifest %s is not known in %s, and upstream %s "
	    "cannot confirm it now", mf->mf_ref, mf->mf_repo, mf->mf_up->up_ns);
	mf_answer(mf, NULL, 404, "MANIFEST_UNKNOWN", msg);
	free(msg);
}

/* Back on the loop after the commit: answer the client. */
static void
mf_committed(void *arg)
{
	struct mf_req	*mf = arg;
	char		*msg;

	if (mf->mf_rc == -1) {
		xasprintf(&msg, "cannot store manifest %s: %s", mf->mf_cdigest,
		    mf->mf_cause != NULL ? mf->mf_cause : "database error");
		mf_answer(mf, NULL, 500, "UNKNOWN", msg);
		free(msg);
		return;
	}
	log_info("stored manifest %s of %s/%s:%s (%s, %zu bytes)",
	    mf->mf_cdigest, mf->mf_up->up_ns, mf->mf_repo, mf->mf_ref,
	    mf->mf_ctype, evbuffer_get_length(mf->mf_body));
	mf_answer(mf, mf->mf_cdigest, 0, NULL, NULL);
}

/* A whole manifest arrived: verify, store, record the tag, serve. */
static void
mf_store(struct mf_req *mf)
{
	char		 digest[NM_DIGEST_SIZE];
	char		*type, *msg;
	const char	*body;
	size_t		 len = evbuffer_get_length(mf->mf_body);

	body = (const char *)evbuffer_pullup(mf->mf_body, -1);
	nm_sha256_digest(body, len, digest);
	if ((mf->mf_bydigest && strcmp(digest, mf->mf_ref) != 0) ||
	    (!mf->mf_bydigest && mf->mf_updigest[0] != '\0' &&
	    strcmp(digest, mf->mf_updigest) != 0)) {
		xasprintf(&msg, "upstream %s sent a manifest for %s:%s whose "
		    "digest is %s, not %s", mf->mf_up->up_ns, mf->mf_repo,
		    mf->mf_ref, digest, mf->mf_bydigest ? mf->mf_ref :
		    mf->mf_updigest);
		log_warnx("%s", msg);
		mf_answer(mf, NULL, 502, "UNKNOWN", msg);
		free(msg);
		return;
	}
	if ((type = proxy_manifest_type(mf->mf_type, body, len)) == NULL) {
		xasprintf(&msg, "upstream %s sent no manifest for %s:%s",
		    mf->mf_up->up_ns, mf->mf_repo, mf->mf_ref);
		mf_answer(mf, NULL, 502, "UNKNOWN", msg);
		free(msg);
		return;
	}
	/* The fsyncs and SQLite writes of the commit go to the pool. */
	mf->mf_ctype = type;
	if (work_submit(mf_commit_job, mf_committed, mf) == -1) {
		xasprintf(&msg, "cannot store manifest %s:%s now: no worker",
		    mf->mf_repo, mf->mf_ref);
		mf_answer(mf, NULL, 503, "UNAVAILABLE", msg);
		free(msg);
	}
}

/* The end of an upstream manifest request. */
static void
mf_done_cb(struct up_req *ur, int status, const char *err, void *arg)
{
	struct mf_req	*mf = arg;

	(void)ur;
	if (mf->mf_phase == MF_CONFIRM) {
		mf_confirmed(mf, status, err);
		return;
	}
	if (mf->mf_phase == MF_CHECK && err == NULL && status == 200) {
		if (mf->mf_updigest[0] != '\0' &&
		    strcmp(mf->mf_updigest, mf->mf_stored) == 0) {
			store_utag_put(mf->mf_store, mf->mf_up->up_ns,
			    mf->mf_repo, mf->mf_ref, mf->mf_stored);
			mf_answer(mf, mf->mf_stored, 0, NULL, NULL);
		} else
			mf_fetch(mf, MF_GET);
		return;
	}
	if (err == NULL && status == 200 && mf->mf_phase == MF_GET) {
		mf_store(mf);
		return;
	}
	if (err == NULL && (status == 401 || status == 403))
		mf->mf_denied = proxy_error_message(mf->mf_body);
	mf_fail(mf, err != NULL && status == 200 ? 0 : status, err);
}

/* Asks the upstream: a HEAD to check a tag, or a GET. */
static void
mf_fetch(struct mf_req *mf, enum mf_phase phase)
{
	static const struct up_callbacks cb = {
		mf_headers_cb, mf_data_cb, mf_done_cb
	};
	char	*what;

	mf->mf_phase = phase;
	if (mf->mf_body != NULL)
		evbuffer_free(mf->mf_body);
	mf->mf_body = evbuffer_new();
	xasprintf(&what, "manifests/%s", mf->mf_ref);
	proxy_upstream_fetch(mf->mf_up, phase != MF_GET, mf->mf_repo, what,
	    MIRROR_ACCEPT, &cb, mf);
	free(what);
}

static void	mirror_manifest(struct evhttp_request *, struct store *,
		    const struct nm_upstream *, const char *, const char *, int);

/* Back from the bucket: the manifest goes on, from what is stored now. */
static void
mirror_manifest_remote_cb(struct evhttp_request *req, struct store *st,
    const char *repo, const char *ref, int rc, const char *cause,
    const void *arg)
{
	(void)rc;
	(void)cause;
	mirror_manifest(req, st, arg, repo, ref, 1);
}

/* GET or HEAD of an upstream manifest by tag or digest; see proxy.h. */
void
proxy_mirror_manifest(struct evhttp_request *req, struct store *st,
    const struct nm_upstream *up, const char *repo, const char *ref)
{
	mirror_manifest(req, st, up, repo, ref, 0);
}

/*
 * A manifest request; remote says the shared bucket was asked already
 * (a tag another replica resolved, a manifest it fetched).
 */
static void
mirror_manifest(struct evhttp_request *req, struct store *st,
    const struct nm_upstream *up, const char *repo, const char *ref,
    int remote)
{
	struct mf_req	*mf;
	char		 stored[NM_DIGEST_SIZE] = "", *type;
	time_t		 checked = 0;
	int		 bydigest = policy_digest_valid(ref), unlinked = 0;
	int		 have = 0;

	/*
	 * A manifest by digest is served when this repository links to it;
	 * one stored for another repository only once the upstream says
	 * this one holds it too.  A tag's manifest was fetched for it.
	 */
	if (bydigest) {
		if ((type = mirror_stored_type(st, ref)) != NULL &&
		    (strstr(type, "manifest") != NULL ||
		    strstr(type, "index") != NULL)) {
			have = 1;
			if (store_link_has(st, up->up_ns, repo, ref)) {
				metrics_cache("manifest", up->up_ns,
				    METRICS_HIT);
				proxy_serve_file(req, st, ref, type, 0);
				free(type);
				return;
			}
			unlinked = 1;
		}
		free(type);
	} else if (store_utag_get(st, up->up_ns, repo, ref, stored,
	    &checked) == 0 && (type = mirror_stored_type(st, stored)) != NULL) {
		free(type);
		if (nm_conf->cf_offline ||
		    time(NULL) - checked < nm_conf->cf_tag_ttl) {
			metrics_cache("manifest", up->up_ns, METRICS_HIT);
			mirror_serve_manifest(req, st, stored);
			return;
		}
	} else
		stored[0] = '\0';
	/*
	 * Another replica may have it: a manifest and its link, or a newer
	 * resolution of the tag.  The bucket is no upstream, so this holds
	 * offline too; when it does not answer, the upstream is asked.
	 */
	if (!remote && store_remote_on(st) && (!bydigest || !have ||
	    unlinked)) {
		proxy_remote_lookup(req, st, bydigest ? PROXY_REMOTE_BLOB :
		    PROXY_REMOTE_TAG, up->up_ns, repo, ref, 0,
		    mirror_manifest_remote_cb, up);
		return;
	}
	if (nm_conf->cf_offline) {
		proxy_error(req, 404, "MANIFEST_UNKNOWN", "%s%s%s of %s is not "
		    "stored, and the mirror is offline", repo, bydigest ? "@" :
		    ":", ref, up->up_ns);
		return;
	}
	metrics_cache("manifest", up->up_ns, METRICS_MISS);
	mf = xcalloc(1, sizeof *mf);
	mf->mf_req = req;
	mf->mf_conn = evhttp_request_get_connection(req);
	mf->mf_store = st;
	mf->mf_up = up;
	mf->mf_repo = xstrdup(repo);
	mf->mf_ref = xstrdup(ref);
	mf->mf_bydigest = bydigest;
	memcpy(mf->mf_stored, stored, sizeof mf->mf_stored);
	evhttp_connection_set_closecb(mf->mf_conn, mf_close_cb, mf);
	mf_fetch(mf, unlinked ? MF_CONFIRM : stored[0] != '\0' ? MF_CHECK :
	    MF_GET);
}

enum dl_state {
	DL_WAITING,		/* no response from the upstream yet */
	DL_STREAMING,		/* bytes arrive into the temp file */
	DL_CHECKED,		/* whole and digest checked; being committed */
	DL_VERIFIED,		/* whole, digest checked, stored */
};

/* One upstream blob download, shared by every client that wants it. */
struct dl {
	char			 dl_digest[NM_DIGEST_SIZE];
	struct store		*dl_store;
	const struct nm_upstream *dl_up;
	/*
	 * Where the bytes come from: the upstream, or the replica that owns
	 * the digest (dl_nth: which choice of proxy_peer_source).
	 */
	const struct nm_upstream *dl_src;
	int			 dl_nth;
	int			 dl_bucket;	/* from the shared bucket */
	int			 dl_nobucket;	/* which did not answer */
	int			 dl_peering;	/* may ask the owner replica */
	struct proxy_remote_fetch *dl_rf;	/* its transfer */
	char			*dl_repo;
	enum dl_state		 dl_state;
	struct store_writer	*dl_w;
	int64_t			 dl_size;	/* Content-Length, or -1 */
	uint64_t		 dl_have;
	uint64_t		 dl_max;	/* policy's limit, 0: none */
	char			*dl_denied;	/* why the policy refused it */
	uint64_t		 dl_tmpmax;	/* policy's tmp/ limit, 0: none */
	uint64_t		 dl_held;	/* its part of mirror_tmp_held */
	int			 dl_full;	/* refused: tmp/ limit reached */
	uint64_t		 dl_got;	/* dl_have, writing, pending */
	struct evbuffer		*dl_pending;	/* arrived, not yet written */
	/*
	 * Bytes are hashed and written by a pool job, one at a time, while
	 * the loop reads on; the upstream is paused while a backlog waits.
	 */
	struct evbuffer		*dl_writing;	/* the job's bytes */
	struct iovec		*dl_iov;	/* dl_writing's chunks */
	int			 dl_niov;
	int			 dl_iovcap;
	int			 dl_wbusy;	/* a write job runs */
	int			 dl_wrc;	/* its result */
	size_t			 dl_wlen;	/* bytes it wrote */
	int			 dl_paused;	/* upstream reading stopped */
	int			 dl_ended;	/* whole body arrived */
	int			 dl_failed;	/* failed while a job ran */
	struct up_req		*dl_ur;		/* the upstream request */
	int			 dl_status;
	int			 dl_done;	/* the upstream request ended */
	struct evbuffer		*dl_errbody;
	/* The commit (fsync, rename) is a job of the worker pool. */
	int			 dl_rc;
	char			*dl_cause;
	TAILQ_HEAD(, bl_client)	 dl_clients;
	TAILQ_ENTRY(dl)		 dl_entry;
};

enum bc_state {
	BC_WAITING,		/* no headers sent: the size is not known */
	BC_IDLE,		/* headers sent, no chunk being written */
	BC_SENDING,		/* a chunk is being written */
	BC_CUT,			/* its connection is to be cut */
};

/* Why a client of a download ends. */
enum bc_end {
	BC_END_ANSWERED,	/* a whole reply or an error went out */
	BC_END_SENT,		/* the streamed response is complete */
	BC_END_LEFT,		/* the client closed its connection */
	BC_END_FAILED,		/* the download failed mid-response */
};

/* One client of a download. */
struct bl_client {
	struct evhttp_request	*bc_req;
	struct evhttp_connection *bc_conn;
	struct dl		*bc_dl;
	int			 bc_head;
	enum bc_state		 bc_state;
	int			 bc_status;
	int			 bc_fd;		/* reader of the blob's bytes */
	uint64_t		 bc_off;	/* next byte to send */
	uint64_t		 bc_end;	/* last byte to send */
	uint64_t		 bc_sent;
	char			*bc_range;
	TAILQ_ENTRY(bl_client)	 bc_entry;
};

static TAILQ_HEAD(, dl)	 mirror_dls = TAILQ_HEAD_INITIALIZER(mirror_dls);
static struct event_base *mirror_base;	/* the loop of the downloads */
static uintptr_t	 mirror_dl_gen;	/* downloads started, ever */

static void	dl_request(struct dl *);

/* Stops or restarts reading the download's source. */
static void
dl_source_pause(struct dl *dl, int paused)
{
	if (dl->dl_ur != NULL)
		proxy_upstream_pause(dl->dl_ur, paused);
	else if (dl->dl_rf != NULL)
		proxy_remote_pause(dl->dl_rf, paused);
}

static void	bc_pump(struct bl_client *);
static void	bc_close(struct bl_client *, enum bc_end, const char *);

/*
 * Bytes of tmp/ that downloads in flight hold or will hold: a download
 * counts its Content-Length from its headers on, or (without one) what
 * arrived, until it is freed.  Over limits.max_tmp_bytes, a download is
 * refused (503) rather than filling the disk.
 */
static uint64_t		 mirror_tmp_held;

/* Takes n more bytes of tmp/ for a download; 0, or -1 when over. */
static int
dl_hold(struct dl *dl, uint64_t n)
{
	if (dl->dl_tmpmax > 0 && (mirror_tmp_held + n > dl->dl_tmpmax ||
	    mirror_tmp_held + n < mirror_tmp_held)) {
		dl->dl_full = 1;
		free(dl->dl_denied);
		xasprintf(&dl->dl_denied, "downloads in flight would hold "
		    "%llu bytes of temporary space, over the policy's "
		    "limits.max_tmp_bytes %llu; retry later",
		    (unsigned long long)(mirror_tmp_held + n),
		    (unsigned long long)dl->dl_tmpmax);
		return (-1);
	}
	mirror_tmp_held += n;
	dl->dl_held += n;
	return (0);
}

/* No download started since the last one ended: the heap is trimmed. */
static void
dl_trim_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	if (TAILQ_EMPTY(&mirror_dls) && (uintptr_t)arg == mirror_dl_gen)
		xheap_trim();
}

/*
 * The last download ended: its buffers' heap goes back to the kernel
 * unless another download starts within MIRROR_TRIM_DELAY.
 */
static void
dl_trim_later(void)
{
	struct timeval	 tv = { MIRROR_TRIM_DELAY, 0 };

	if (mirror_base == NULL ||
	    event_base_once(mirror_base, -1, EV_TIMEOUT, dl_trim_cb,
	    (void *)mirror_dl_gen, &tv) == -1)
		xheap_trim();
}

/* Frees a download no client and no upstream request holds any more. */
static void
dl_free(struct dl *dl)
{
	mirror_tmp_held -= dl->dl_held;
	if (dl->dl_w != NULL)
		store_writer_abort(dl->dl_w);
	if (dl->dl_pending != NULL)
		evbuffer_free(dl->dl_pending);
	if (dl->dl_writing != NULL)
		evbuffer_free(dl->dl_writing);
	free(dl->dl_iov);
	if (dl->dl_errbody != NULL)
		evbuffer_free(dl->dl_errbody);
	free(dl->dl_denied);
	free(dl->dl_repo);
	free(dl);
	if (TAILQ_EMPTY(&mirror_dls))
		dl_trim_later();
}

/* Frees a download once it ended and no client and no job hold it. */
static void
dl_release(struct dl *dl)
{
	if (dl->dl_done && TAILQ_EMPTY(&dl->dl_clients) && !dl->dl_wbusy)
		dl_free(dl);
}

/* Detaches a client from its connection and download, and frees it. */
static void
bc_release(struct bl_client *bc)
{
	struct dl	*dl = bc->bc_dl;

	if (bc->bc_conn != NULL)
		evhttp_connection_set_closecb(bc->bc_conn, NULL, NULL);
	TAILQ_REMOVE(&dl->dl_clients, bc, bc_entry);
	if (bc->bc_fd != -1)
		close(bc->bc_fd);
	free(bc->bc_range);
	free(bc);
	dl_release(dl);
}

/* Cuts a failed client's connection, outside libevent's callbacks. */
static void
bc_cut_cb(evutil_socket_t fd, short events, void *arg)
{
	struct bl_client	*bc = arg;

	(void)fd;
	(void)events;
	if (bc->bc_conn != NULL) {
		evhttp_connection_set_closecb(bc->bc_conn, NULL, NULL);
		evhttp_connection_free(bc->bc_conn);
		bc->bc_conn = NULL;
	}
	bc_release(bc);
}

/*
 * Ends a client for a reason; the one way a client goes.  A failed client
 * whose response has started has its connection closed before the
 * response is whole, so it sees a failed transfer.
 */
static void
bc_close(struct bl_client *bc, enum bc_end why, const char *note)
{
	struct evhttp_request	*req;

	switch (why) {
	case BC_END_ANSWERED:
		bc_release(bc);
		break;
	case BC_END_SENT:
		proxy_log(bc->bc_req, bc->bc_status, bc->bc_sent, note);
		/*
		 * The client is freed first: with "Connection: close" the end
		 * may free the connection at once, and its close callback
		 * must not find the client any more.
		 */
		req = bc->bc_req;
		bc_release(bc);
		evhttp_send_reply_end(req);
		break;
	case BC_END_LEFT:
		if (bc->bc_state != BC_CUT && bc->bc_state != BC_WAITING)
			proxy_log(bc->bc_req, bc->bc_status, bc->bc_sent,
			    "client left mid-transfer");
		proxy_orphan(bc->bc_req);
		bc->bc_req = NULL;
		bc->bc_conn = NULL;
		if (bc->bc_state == BC_CUT)
			return;		/* bc_cut_cb frees it */
		log_debug("client of %s left after %llu bytes",
		    bc->bc_dl->dl_digest, (unsigned long long)bc->bc_sent);
		bc_release(bc);
		break;
	case BC_END_FAILED:
		if (bc->bc_state == BC_CUT)
			return;
		bc->bc_state = BC_CUT;
		proxy_log(bc->bc_req, bc->bc_status, bc->bc_sent, note);
		event_base_once(evhttp_connection_get_base(bc->bc_conn), -1,
		    EV_TIMEOUT, bc_cut_cb, bc, NULL);
		break;
	}
}

/* The client went away: the download goes on for the others. */
static void
bc_close_cb(struct evhttp_connection *conn, void *arg)
{
	(void)conn;
	bc_close(arg, BC_END_LEFT, NULL);
}

/* Starts a client's response once the blob's size is known. */
static void
bc_start(struct bl_client *bc)
{
	struct dl		*dl = bc->bc_dl;
	uint64_t		 size = (uint64_t)dl->dl_size, start, end;

	if ((bc->bc_status = proxy_range(bc->bc_req, bc->bc_range, size,
	    &start, &end)) == 416) {
		bc_close(bc, BC_END_ANSWERED, NULL);
		return;
	}
	proxy_headers(bc->bc_req, dl->dl_digest, "application/octet-stream",
	    size == 0 ? 0 : end - start + 1);
	if (bc->bc_head || size == 0) {
		proxy_log(bc->bc_req, bc->bc_status, 0, "from upstream");
		evhttp_send_reply(bc->bc_req, bc->bc_status, NULL, NULL);
		bc_close(bc, BC_END_ANSWERED, NULL);
		return;
	}
	bc->bc_fd = dl->dl_state == DL_VERIFIED ? store_blob_open(dl->dl_store,
	    dl->dl_digest, &size) : store_writer_reader(dl->dl_w);
	if (bc->bc_fd == -1) {
		proxy_error(bc->bc_req, 500, "UNKNOWN", "cannot read %s",
		    dl->dl_digest);
		bc_close(bc, BC_END_ANSWERED, NULL);
		return;
	}
	bc->bc_off = start;
	bc->bc_end = end;
	bc->bc_state = BC_IDLE;
	evhttp_send_reply_start(bc->bc_req, bc->bc_status,
	    bc->bc_status == 206 ? "Partial Content" : "OK");
	bc_pump(bc);
}

/* A chunk went out to the client: send the next. */
static void
bc_sent_cb(struct evhttp_connection *conn, void *arg)
{
	struct bl_client	*bc = arg;

	(void)conn;
	if (bc->bc_state == BC_SENDING)
		bc->bc_state = BC_IDLE;
	bc_pump(bc);
}

/*
 * Sends the client what is on disk, one chunk at a time, straight from
 * the file (so a slow client holds a reference, never the bytes).  While
 * the download runs a chunk waits until MIRROR_PUMP new bytes are there,
 * so the cost per response does not grow with the number of reads; and
 * until the blob is verified the last byte of the response is held back:
 * a bad download cannot look whole.
 */
static void
bc_pump(struct bl_client *bc)
{
	struct dl	*dl = bc->bc_dl;
	struct evbuffer	*buf;
	uint64_t	 limit, n;

	if (bc->bc_state != BC_IDLE)
		return;
	if (bc->bc_off > bc->bc_end) {
		bc_close(bc, BC_END_SENT, "streamed from upstream");
		return;
	}
	if (dl->dl_state >= DL_CHECKED)
		limit = bc->bc_end + 1;
	else
		limit = dl->dl_have < bc->bc_end ? dl->dl_have : bc->bc_end;
	if (limit <= bc->bc_off)
		return;
	n = limit - bc->bc_off;
	if (dl->dl_state < DL_CHECKED && n < MIRROR_PUMP)
		return;
	if (n > MIRROR_CHUNK)
		n = MIRROR_CHUNK;
	buf = proxy_file_buffer(bc->bc_fd, bc->bc_off, n);
	if (buf == NULL) {
		log_warnx("%s: cannot read %s", __func__, dl->dl_digest);
		bc_close(bc, BC_END_FAILED, "transfer cut: the blob cannot be "
		    "read");
		return;
	}
	bc->bc_off += n;
	bc->bc_sent += n;
	bc->bc_state = BC_SENDING;
	evhttp_send_reply_chunk_with_cb(bc->bc_req, buf, bc_sent_cb, bc);
	evbuffer_free(buf);
}

/* Ends a download that failed: nothing is stored, every client fails. */
static void
dl_fail(struct dl *dl, int status, const char *err)
{
	struct bl_client	*bc, *next;
	char			*msg, *upmsg = NULL, *vis;

	TAILQ_REMOVE(&mirror_dls, dl, dl_entry);
	/* A running write job still uses the writer: it ends it. */
	if (dl->dl_wbusy)
		dl->dl_failed = 1;
	else {
		store_writer_abort(dl->dl_w);
		dl->dl_w = NULL;
	}
	if (dl->dl_errbody != NULL)
		upmsg = proxy_error_message(dl->dl_errbody);
	if (dl->dl_denied != NULL)
		xasprintf(&msg, "not fetched from %s: %s", dl->dl_up->up_ns,
		    dl->dl_denied);
	else if (dl->dl_up->up_url == NULL)
		xasprintf(&msg, "the shared bucket failed for %s: %s",
		    dl->dl_digest, err != NULL ? err : status == 404 ?
		    "not there" : "unexpected status");
	else
		xasprintf(&msg, "upstream %s failed for %s: %s",
		    dl->dl_up->up_ns, dl->dl_digest, err != NULL ? err :
		    upmsg != NULL ? upmsg : "unexpected status");
	vis = xstrvis(msg);	/* it may quote the upstream's bytes */
	log_warnx("%s (%s)", vis, dl->dl_src->up_url != NULL ?
	    dl->dl_src->up_url : "bucket");
	free(vis);
	for (bc = TAILQ_FIRST(&dl->dl_clients); bc != NULL; bc = next) {
		next = TAILQ_NEXT(bc, bc_entry);
		if (bc->bc_state != BC_WAITING) {
			bc_close(bc, BC_END_FAILED, "transfer cut: the upstream "
			    "download failed");
			continue;
		}
		if (dl->dl_full) {
			evhttp_add_header(evhttp_request_get_output_headers(
			    bc->bc_req), "Retry-After", "30");
			proxy_error(bc->bc_req, 503, "UNAVAILABLE", "%s",
			    dl->dl_denied);
		} else if (dl->dl_denied != NULL)
			proxy_error(bc->bc_req, 403, "DENIED", "%s",
			    dl->dl_denied);
		else if (status == 404 && dl->dl_up->up_url == NULL)
			proxy_error(bc->bc_req, 404, "BLOB_UNKNOWN",
			    "blob %s is not stored", dl->dl_digest);
		else if (status == 404)
			proxy_error(bc->bc_req, 404, "BLOB_UNKNOWN",
			    "blob %s is not known to %s", dl->dl_digest,
			    dl->dl_up->up_ns);
		else if (dl->dl_nobucket && (status == 0 || status >= 500))
			proxy_remote_unavailable(bc->bc_req, dl->dl_digest,
			    dl->dl_up->up_url != NULL ? msg : NULL);
		else if (status == 401 || status == 403)
			proxy_error(bc->bc_req, 403, "DENIED", "upstream "
			    "%s denied %s: %s", dl->dl_up->up_ns,
			    dl->dl_repo, upmsg != NULL ? upmsg :
			    "access denied");
		else
			proxy_error(bc->bc_req, 502, "UNKNOWN", "%s", msg);
		bc_close(bc, BC_END_ANSWERED, NULL);
	}
	free(upmsg);
	free(msg);
	/* From now on the last client's bc_release frees the download. */
	dl->dl_done = 1;
	dl_release(dl);
}

/* Starts or feeds every client of a download. */
static void
dl_pump(struct dl *dl)
{
	struct bl_client	*bc, *next;

	for (bc = TAILQ_FIRST(&dl->dl_clients); bc != NULL; bc = next) {
		next = TAILQ_NEXT(bc, bc_entry);
		if (bc->bc_state == BC_WAITING && dl->dl_size >= 0)
			bc_start(bc);
		else
			bc_pump(bc);
	}
}

/*
 * Records that a blob is over the policy's limit, size bytes or (atleast)
 * more; the caller fails the download.
 */
static void
dl_deny(struct dl *dl, uint64_t size, int atleast)
{
	free(dl->dl_denied);
	xasprintf(&dl->dl_denied, "blob %s is %s%llu bytes, over the policy's "
	    "limits.max_blob_bytes %llu", dl->dl_digest, atleast ?
	    "at least " : "", (unsigned long long)size,
	    (unsigned long long)dl->dl_max);
}

/* Blob response headers: the size, and a temp file to write into. */
static int
dl_headers_cb(struct up_req *ur, int status, struct evkeyvalq *h, void *arg)
{
	struct dl	*dl = arg;
	const char	*v;
	char		*cause = NULL, *end;

	(void)ur;
	dl->dl_status = status;
	if (status != 200) {
		dl->dl_errbody = evbuffer_new();
		return (0);
	}
	if ((v = evhttp_find_header(h, "Docker-Content-Digest")) != NULL &&
	    policy_digest_valid(v) && strcmp(v, dl->dl_digest) != 0) {
		log_warnx("upstream %s announces %s for blob %s",
		    dl->dl_up->up_ns, v, dl->dl_digest);
		return (-1);
	}
	dl->dl_size = -1;
	if ((v = evhttp_find_header(h, "Content-Length")) != NULL) {
		errno = 0;
		dl->dl_size = (int64_t)strtoll(v, &end, 10);
		if (errno != 0 || *end != '\0' || end == v || dl->dl_size < 0)
			return (-1);
	}
	if (dl->dl_max > 0 && dl->dl_size >= 0 &&
	    (uint64_t)dl->dl_size > dl->dl_max) {
		dl_deny(dl, (uint64_t)dl->dl_size, 0);
		return (-1);
	}
	if (dl->dl_size >= 0 && dl_hold(dl, (uint64_t)dl->dl_size) == -1)
		return (-1);
	if ((dl->dl_w = store_writer_new(dl->dl_store, &cause)) == NULL) {
		log_warnx("%s: %s", __func__, cause);
		free(cause);
		return (-1);
	}
	if ((dl->dl_pending = evbuffer_new()) == NULL ||
	    (dl->dl_writing = evbuffer_new()) == NULL)
		return (-1);
	dl->dl_state = DL_STREAMING;
	dl_pump(dl);
	return (0);
}

/* A write job's other half: hashes the bytes while they are written. */
static void
dl_hash_job(void *arg)
{
	struct dl	*dl = arg;

	store_writer_hash(dl->dl_w, dl->dl_iov, dl->dl_niov);
}

/*
 * The write job: writes the bytes handed over while a second worker
 * hashes them (the two take about as long), then drops them.
 */
static void
dl_write_job(void *arg)
{
	struct dl		*dl = arg;
	struct work_group	*wg;
	int			 n;

	dl->dl_wlen = evbuffer_get_length(dl->dl_writing);
	n = evbuffer_peek(dl->dl_writing, -1, NULL, NULL, 0);
	if (n > dl->dl_iovcap) {
		dl->dl_iov = xreallocarray(dl->dl_iov, (size_t)n,
		    sizeof *dl->dl_iov);
		dl->dl_iovcap = n;
	}
	dl->dl_niov = evbuffer_peek(dl->dl_writing, -1, NULL, dl->dl_iov, n);
	wg = work_group_new();
	work_group_add(wg, dl_hash_job, dl);
	dl->dl_wrc = store_writer_put(dl->dl_w, dl->dl_iov, dl->dl_niov);
	work_group_wait(wg);
	evbuffer_drain(dl->dl_writing, dl->dl_wlen);
}

static void	dl_written(void *);
static void	dl_finish(struct dl *);

/*
 * Hands what arrived to a write job, unless one runs: MIRROR_FLUSH bytes
 * or more, or the rest of the body.  (A job costs the pool's locks and
 * wakeups; starting one after each job with what came meanwhile made,
 * with a loop slower than the pool, jobs of one 16 KiB TLS record each.)
 * When the body is whole and written, finishes the download.
 */
static void
dl_write_next(struct dl *dl)
{
	size_t	 n;

	if (dl->dl_wbusy || dl->dl_wrc == -1)
		return;
	if ((n = evbuffer_get_length(dl->dl_pending)) == 0) {
		if (dl->dl_ended)
			dl_finish(dl);
		return;
	}
	if (n < MIRROR_FLUSH && !dl->dl_ended && (dl->dl_size < 0 ||
	    dl->dl_got < (uint64_t)dl->dl_size))
		return;
	evbuffer_add_buffer(dl->dl_writing, dl->dl_pending);
	dl->dl_wbusy = 1;
	if (work_submit(dl_write_job, dl_written, dl) == -1) {
		/* No worker: write on the loop rather than lose the blob. */
		dl_write_job(dl);
		dl_written(dl);
	}
}

/* Back on the loop after a write job: offer the bytes, write on. */
static void
dl_written(void *arg)
{
	struct dl	*dl = arg;

	dl->dl_wbusy = 0;
	if (dl->dl_failed) {
		/* dl_fail ran meanwhile and answered the clients. */
		store_writer_abort(dl->dl_w);
		dl->dl_w = NULL;
		dl_release(dl);
		return;
	}
	if (dl->dl_wrc == -1) {
		if (dl->dl_ur != NULL)
			proxy_upstream_abort(dl->dl_ur,
			    "cannot write the blob");	/* dl_fail follows */
		else if (dl->dl_rf != NULL)
			proxy_remote_abort(dl->dl_rf, "cannot write the blob");
		else
			dl_fail(dl, 0, "cannot write the blob");
		return;
	}
	dl->dl_have += dl->dl_wlen;
	if (dl->dl_paused) {
		dl->dl_paused = 0;
		dl_source_pause(dl, 0);
	}
	dl_pump(dl);
	dl_write_next(dl);
}

/*
 * Blob bytes: gathered (the upstream's reads are small) and handed to the
 * pool MIRROR_FLUSH or more at a time; the clients are offered them once
 * written.
 */
static int
dl_data_cb(struct up_req *ur, struct evbuffer *buf, void *arg)
{
	struct dl	*dl = arg;
	size_t		 len = evbuffer_get_length(buf);

	(void)ur;
	if (dl->dl_status != 200) {
		if (evbuffer_get_length(dl->dl_errbody) < 65536)
			evbuffer_add_buffer(dl->dl_errbody, buf);
		return (0);
	}
	/* dl_wrc is the job's while it runs, and read only after. */
	if (!dl->dl_wbusy && dl->dl_wrc == -1)
		return (-1);	/* a write failed: the transfer is cut */
	/* Without a Content-Length the limit is checked before each write. */
	if (dl->dl_max > 0 && dl->dl_got + len > dl->dl_max) {
		dl_deny(dl, dl->dl_got + len, 1);
		return (-1);
	}
	if (dl->dl_size < 0 && dl_hold(dl, len) == -1)
		return (-1);
	dl->dl_got += len;
	if (dl->dl_size >= 0 && dl->dl_got > (uint64_t)dl->dl_size)
		return (-1);
	evbuffer_add_buffer(dl->dl_pending, buf);
	dl_write_next(dl);
	if (dl->dl_wbusy && !dl->dl_paused &&
	    evbuffer_get_length(dl->dl_pending) >= MIRROR_BACKLOG) {
		dl->dl_paused = 1;
		dl_source_pause(dl, 1);
	}
	return (0);
}

/* The commit job: fsync, verify the digest, rename, record. */
static void
dl_commit_job(void *arg)
{
	struct dl	*dl = arg;
	char		 digest[NM_DIGEST_SIZE];

	/* Bytes and link the bucket gave are not sent back to it. */
	store_remote_quiet(dl->dl_bucket);
	dl->dl_rc = store_writer_commit(dl->dl_w, dl->dl_digest,
	    "application/octet-stream", digest, &dl->dl_cause);
	if (dl->dl_rc == 0 && store_link_put(dl->dl_store, dl->dl_up->up_ns,
	    dl->dl_repo, dl->dl_digest) == -1)
		log_warnx("cannot link blob %s to %s/%s", dl->dl_digest,
		    dl->dl_up->up_ns, dl->dl_repo);
	store_remote_quiet(0);
}

/* Back on the loop after the commit: serve the rest, or fail everyone. */
static void
dl_committed(void *arg)
{
	struct dl	*dl = arg;
	char		*why;

	dl->dl_w = NULL;	/* the commit freed it */
	if (dl->dl_rc == -1) {
		xasprintf(&why, "not stored: %s", dl->dl_cause != NULL ?
		    dl->dl_cause : "commit failed");
		free(dl->dl_cause);
		dl->dl_cause = NULL;
		dl_fail(dl, 0, why);
		free(why);
		return;
	}
	log_info("stored blob %s of %s/%s (%llu bytes)", dl->dl_digest,
	    dl->dl_up->up_ns, dl->dl_repo, (unsigned long long)dl->dl_have);
	TAILQ_REMOVE(&mirror_dls, dl, dl_entry);
	dl->dl_state = DL_VERIFIED;
	dl->dl_size = (int64_t)dl->dl_have;
	dl->dl_done = 1;
	if (TAILQ_EMPTY(&dl->dl_clients)) {
		dl_release(dl);
		return;
	}
	dl_pump(dl);
}

/* The upstream request ended: write the rest, or fail everyone. */
static void
dl_done_cb(struct up_req *ur, int status, const char *err, void *arg)
{
	struct dl	*dl = arg;

	(void)ur;
	dl->dl_ur = NULL;
	dl->dl_rf = NULL;
	if (dl->dl_bucket && dl->dl_state == DL_WAITING && (status == 0 ||
	    status >= 500))
		dl->dl_nobucket = 1;
	/*
	 * A bucket or a replica that gave nothing: the owner replica, the
	 * next one on the hash, or the upstream.
	 */
	if ((dl->dl_bucket || dl->dl_src->up_peer) &&
	    dl->dl_state == DL_WAITING && (status == 0 || status >= 500 ||
	    (dl->dl_bucket && status == 404)) && dl->dl_up->up_url != NULL &&
	    !(dl->dl_bucket && nm_conf->cf_offline)) {
		if (dl->dl_bucket)
			log_info("the shared bucket %s blob %s%s%s",
			    status == 404 ? "lacks" : "cannot give",
			    dl->dl_digest, err != NULL ? ": " : "",
			    err != NULL ? err : "");
		else
			log_info("replica %s cannot give blob %s (%s); asking "
			    "the next", dl->dl_src->up_url, dl->dl_digest,
			    err != NULL ? err : "a server error");
		if (dl->dl_errbody != NULL) {
			evbuffer_free(dl->dl_errbody);
			dl->dl_errbody = NULL;
		}
		dl->dl_status = 0;
		if (dl->dl_bucket) {
			dl->dl_bucket = 0;
			dl->dl_nth = 0;
		} else
			dl->dl_nth++;
		if (dl->dl_peering == 0 || (dl->dl_src = proxy_peer_source(
		    dl->dl_digest, dl->dl_nth)) == NULL)
			dl->dl_src = dl->dl_up;
		dl_request(dl);
		return;
	}
	if (err != NULL || status != 200) {
		dl_fail(dl, err != NULL && status == 200 ? 0 : status, err);
		return;
	}
	if (dl->dl_size >= 0 && dl->dl_got != (uint64_t)dl->dl_size) {
		dl_fail(dl, 0, "the body is shorter than its Content-Length");
		return;
	}
	dl->dl_ended = 1;
	dl_write_next(dl);
}

/* Every byte is written: verify, and commit on the pool. */
static void
dl_finish(struct dl *dl)
{
	char	*cause = NULL, *why;

	/*
	 * Hashing is done (it ran as the bytes came): once the digest
	 * matches, the clients get the rest (the last byte included) from
	 * the temp file while the fsync and rename of the commit run on the
	 * pool.  Correct bytes need not wait for the disk.
	 */
	if (store_writer_verify(dl->dl_w, dl->dl_digest, &cause) == -1) {
		xasprintf(&why, "not stored: %s", cause);
		dl_fail(dl, 0, why);
		free(why);
		free(cause);
		return;
	}
	/* Clients open the temp file now: the commit frees the writer. */
	dl->dl_state = DL_CHECKED;
	dl->dl_size = (int64_t)dl->dl_have;
	dl_pump(dl);
	if (work_submit(dl_commit_job, dl_committed, dl) == -1)
		dl_fail(dl, 0, "cannot start the commit: no worker");
}

/*
 * A blob request under a repository that does not link to the digest:
 * stored or downloading for another repository, or a HEAD of a blob not
 * stored.  A HEAD asks the repository's upstream whether it holds it.
 */
struct cf_req {
	struct evhttp_request	*cf_req;	/* NULL once the client left */
	struct evhttp_connection *cf_conn;
	struct store		*cf_store;
	const struct nm_upstream *cf_up;
	char			*cf_repo;
	char			 cf_digest[NM_DIGEST_SIZE];
	int64_t			 cf_size;	/* upstream's length, or -1 */
	struct evbuffer		*cf_errbody;
	int			 cf_status;
	char			*cf_err;
	int			 cf_rc;
};

/* The metrics label of a source: its namespace, "nix" for Nix blobs. */
static const char *
mirror_label(const struct nm_upstream *up)
{
	return (up->up_url == NULL ? "nix" : up->up_ns);
}

#define MB_CONFIRMED	0x1	/* the upstream says the repository has it */
#define MB_REMOTE	0x2	/* the shared bucket was asked */
#define MB_BUCKET	0x4	/* it has the link: stream from it */
#define MB_DIRECT	0x8	/* no redirect: the bucket was asked */
#define MB_NOBUCKET	0x10	/* the bucket did not answer */
#define MB_NIX		(MB_CONFIRMED | MB_REMOTE | MB_BUCKET)

static void	mirror_blob(struct evhttp_request *, struct store *,
		    const struct nm_upstream *, const char *, const char *,
		    int);

/*
 * The source of a Nix image's blob that another replica built: the
 * bucket alone (no URL), under the links of the Nix names.
 */
static const struct nm_upstream mirror_nix_bucket = {
	.up_ns = (char *)STORE_NIX_NS,
};

/* The client left while the upstream was asked. */
static void
cf_close_cb(struct evhttp_connection *conn, void *arg)
{
	struct cf_req	*cf = arg;

	(void)conn;
	proxy_orphan(cf->cf_req);
	cf->cf_req = NULL;
}

static void
cf_free(struct cf_req *cf)
{
	if (cf->cf_req != NULL)
		evhttp_connection_set_closecb(cf->cf_conn, NULL, NULL);
	if (cf->cf_errbody != NULL)
		evbuffer_free(cf->cf_errbody);
	free(cf->cf_repo);
	free(cf->cf_err);
	free(cf);
}

/* The HEAD's status and the blob's length. */
static int
cf_headers_cb(struct up_req *ur, int status, struct evkeyvalq *h, void *arg)
{
	struct cf_req	*cf = arg;
	const char	*v;
	char		*end;

	(void)ur;
	cf->cf_size = -1;
	if (status == 200 && (v = evhttp_find_header(h, "Docker-Content-Digest"))
	    != NULL && policy_digest_valid(v) && strcmp(v, cf->cf_digest) != 0) {
		log_warnx("upstream %s announces %s for blob %s",
		    cf->cf_up->up_ns, v, cf->cf_digest);
		return (-1);
	}
	if (status == 200 && (v = evhttp_find_header(h, "Content-Length")) !=
	    NULL) {
		errno = 0;
		cf->cf_size = (int64_t)strtoll(v, &end, 10);
		if (errno != 0 || *end != '\0' || end == v || cf->cf_size < 0)
			cf->cf_size = -1;
	}
	return (0);
}

/* An error body (a HEAD has none; some upstreams send one anyway). */
static int
cf_data_cb(struct up_req *ur, struct evbuffer *buf, void *arg)
{
	struct cf_req	*cf = arg;

	(void)ur;
	if (evbuffer_get_length(cf->cf_errbody) < 64 * 1024)
		evbuffer_add_buffer(cf->cf_errbody, buf);
	else
		evbuffer_drain(buf, evbuffer_get_length(buf));
	return (0);
}

/* The link job of a confirmed blob. */
static void
cf_link_job(void *arg)
{
	struct cf_req	*cf = arg;

	cf->cf_rc = store_link_put(cf->cf_store, cf->cf_up->up_ns,
	    cf->cf_repo, cf->cf_digest);
}

/*
 * Back on the loop after the link: a HEAD of a blob neither stored nor
 * downloading is answered from the upstream's headers; anything else
 * goes on as a request the repository is known to be allowed.
 */
static void
cf_linked(void *arg)
{
	struct cf_req		*cf = arg;
	struct evhttp_request	*req = cf->cf_req;
	struct dl		*dl;

	if (cf->cf_rc == -1)
		log_warnx("cannot link blob %s to %s/%s", cf->cf_digest,
		    cf->cf_up->up_ns, cf->cf_repo);
	if (req == NULL) {
		cf_free(cf);
		return;
	}
	evhttp_connection_set_closecb(cf->cf_conn, NULL, NULL);
	cf->cf_req = NULL;
	TAILQ_FOREACH(dl, &mirror_dls, dl_entry)
		if (strcmp(dl->dl_digest, cf->cf_digest) == 0)
			break;
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD &&
	    dl == NULL && cf->cf_size >= 0 &&
	    store_blob_stat(cf->cf_store, cf->cf_digest, NULL, NULL) == -1) {
		proxy_headers(req, cf->cf_digest, "application/octet-stream",
		    (uint64_t)cf->cf_size);
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Accept-Ranges", "bytes");
		proxy_reply(req, 200, NULL, "upstream HEAD");
	} else
		mirror_blob(req, cf->cf_store, cf->cf_up, cf->cf_repo,
		    cf->cf_digest, MB_CONFIRMED);
	cf_free(cf);
}

/*
 * The end of the HEAD: link and go on, or pass on the upstream's 401, 403
 * or 404.  When the upstream cannot say, the blob is not known here.
 */
static void
cf_done_cb(struct up_req *ur, int status, const char *err, void *arg)
{
	struct cf_req		*cf = arg;
	struct evhttp_request	*req = cf->cf_req;
	char			*msg = NULL;

	(void)ur;
	if (err == NULL && status == 200) {
		if (work_submit(cf_link_job, cf_linked, cf) == -1) {
			cf_link_job(cf);
			cf_linked(cf);
		}
		return;
	}
	if (req == NULL) {
		cf_free(cf);
		return;
	}
	evhttp_connection_set_closecb(cf->cf_conn, NULL, NULL);
	cf->cf_req = NULL;
	if (err == NULL && (status == 401 || status == 403)) {
		msg = proxy_error_message(cf->cf_errbody);
		proxy_error(req, 403, "DENIED", "upstream %s denied %s: %s",
		    cf->cf_up->up_ns, cf->cf_repo, msg != NULL ? msg :
		    "access denied");
	} else if (err == NULL && status == 404)
		proxy_error(req, 404, "BLOB_UNKNOWN", "blob %s is not known "
		    "to %s in %s", cf->cf_digest, cf->cf_up->up_ns,
		    cf->cf_repo);
	else {
		log_warnx("upstream %s cannot confirm blob %s of %s: %s",
		    cf->cf_up->up_ns, cf->cf_digest, cf->cf_repo, err != NULL ?
		    err : "unexpected status");
		proxy_error(req, 404, "BLOB_UNKNOWN", "blob %s is not known in "
		    "%s, and upstream %s cannot confirm it now", cf->cf_digest,
		    cf->cf_repo, cf->cf_up->up_ns);
	}
	free(msg);
	cf_free(cf);
}

/* Asks the repository's upstream for a blob with a HEAD. */
static void
cf_start(struct evhttp_request *req, struct store *st,
    const struct nm_upstream *up, const char *repo, const char *digest)
{
	static const struct up_callbacks cb = {
		cf_headers_cb, cf_data_cb, cf_done_cb
	};
	struct cf_req	*cf;
	char		*what;

	cf = xcalloc(1, sizeof *cf);
	cf->cf_req = req;
	cf->cf_conn = evhttp_request_get_connection(req);
	cf->cf_store = st;
	cf->cf_up = up;
	cf->cf_repo = xstrdup(repo);
	cf->cf_size = -1;
	snprintf(cf->cf_digest, sizeof cf->cf_digest, "%s", digest);
	if ((cf->cf_errbody = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new", __func__);
	evhttp_connection_set_closecb(cf->cf_conn, cf_close_cb, cf);
	xasprintf(&what, "blobs/%s", digest);
	proxy_upstream_fetch(up, 1, repo, what, NULL, &cb, cf);
	free(what);
}

/*
 * Back from the bucket: it links the blob now (streamed from it), or it
 * does not (fetched as without a bucket).  A bucket that cannot answer
 * leaves the owner replica and the upstream, and a 503 if they fail too;
 * offline, only the 503.
 */
static void
mirror_blob_remote_cb(struct evhttp_request *req, struct store *st,
    const char *repo, const char *ref, int rc, const char *cause,
    const void *arg)
{
	(void)cause;
	if (rc == -1 && nm_conf->cf_offline) {
		proxy_remote_unavailable(req, ref, "the mirror is offline");
		return;
	}
	/* The bucket was asked: no redirect lookup follows. */
	mirror_blob(req, st, arg, repo, ref, MB_DIRECT | (rc == 0 ? MB_REMOTE |
	    MB_BUCKET : rc == -1 ? MB_REMOTE | MB_NOBUCKET : MB_REMOTE));
}

/*
 * Back from the bucket without a redirect: it lacks the blob (or the
 * link), so it is not asked again; or it did not answer, and the request
 * goes on as without --s3-redirect.
 */
static void
mirror_blob_redirect_cb(struct evhttp_request *req, struct store *st,
    const char *repo, const char *ref, int rc, const char *cause,
    const void *arg)
{
	const struct nm_upstream	*up = arg;
	int				 flags = MB_DIRECT;

	(void)cause;
	if (up == &mirror_nix_bucket)
		flags |= MB_NIX;
	else if (rc == S3_ABSENT)
		flags |= MB_REMOTE;
	else
		flags |= MB_REMOTE | MB_NOBUCKET;	/* it was just asked */
	mirror_blob(req, st, up, repo, ref, flags);
}

/* Asks the download's source for the blob. */
static void
dl_request(struct dl *dl)
{
	static const struct up_callbacks cb = {
		dl_headers_cb, dl_data_cb, dl_done_cb
	};
	char	*what;

	if (dl->dl_bucket) {
		log_info("fetching blob %s of %s/%s from the shared bucket",
		    dl->dl_digest, dl->dl_up->up_ns, dl->dl_repo);
		dl->dl_rf = proxy_remote_fetch(dl->dl_store, dl->dl_digest,
		    &cb, dl);
		return;
	}
	if (dl->dl_src->up_peer) {
		/* The owner knows the namespace by its ns parameter. */
		xasprintf(&what, "blobs/%s?ns=%s", dl->dl_digest,
		    dl->dl_up->up_ns);
		log_info("fetching blob %s of %s/%s from replica %s",
		    dl->dl_digest, dl->dl_up->up_ns, dl->dl_repo,
		    dl->dl_src->up_url);
	} else
		xasprintf(&what, "blobs/%s", dl->dl_digest);
	dl->dl_ur = proxy_upstream_fetch(dl->dl_src, 0, dl->dl_repo, what,
	    NULL, &cb, dl);
	free(what);
}

/*
 * A blob request: served from the store when the repository links to it
 * (or MB_CONFIRMED says the upstream holds it there); streamed from the
 * shared bucket when it has it; joined to the download of the same
 * repository, or fetched once, from the digest's owner replica or the
 * upstream.  Anything else asks first.
 */
static void
mirror_blob(struct evhttp_request *req, struct store *st,
    const struct nm_upstream *up, const char *repo, const char *digest,
    int flags)
{
	struct policy_limits	 pl;
	struct bl_client	*bc;
	struct dl		*dl;
	const char		*range;
	uint64_t		 size;
	int			 fresh, stored, head;
	int			 confirmed = flags & MB_CONFIRMED;

	head = evhttp_request_get_command(req) == EVHTTP_REQ_HEAD;
	stored = store_blob_stat(st, digest, &size, NULL) == 0;
	/*
	 * --s3-redirect: a GET of a blob the bucket holds goes there, once
	 * the repository's link is known; a HEAD of one not stored here is
	 * answered from the bucket's word.  A replica asking is served.
	 */
	if (nm_conf->cf_s3_redirect && (!head || !stored) &&
	    !(flags & MB_DIRECT) && store_remote_on(st) &&
	    !proxy_peer_request(req)) {
		proxy_remote_lookup(req, st, PROXY_REMOTE_REDIRECT, up->up_ns,
		    repo, digest, confirmed || store_link_has(st, up->up_ns,
		    repo, digest), mirror_blob_redirect_cb, up);
		return;
	}
	if (stored && (confirmed || store_link_has(st, up->up_ns, repo,
	    digest))) {
		metrics_cache("blob", mirror_label(up), METRICS_HIT);
		proxy_serve_file(req, st, digest, "application/octet-stream", 1);
		return;
	}
	/*
	 * Not here: another replica may have put it in the bucket, which
	 * is asked for the repository's link first unless it is known.
	 */
	if (!stored && !(flags & MB_REMOTE) && store_remote_on(st)) {
		if (!confirmed && !store_link_has(st, up->up_ns, repo,
		    digest)) {
			proxy_remote_lookup(req, st, PROXY_REMOTE_LINK,
			    up->up_ns, repo, digest, 0, mirror_blob_remote_cb,
			    up);
			return;
		}
		flags |= MB_REMOTE | MB_BUCKET;
	}
	/* The bucket is no upstream: offline, it is still read. */
	if (nm_conf->cf_offline && !(flags & MB_BUCKET)) {
		proxy_error(req, 404, "BLOB_UNKNOWN", "blob %s of %s is not "
		    "stored, and the mirror is offline", digest, repo);
		return;
	}
	TAILQ_FOREACH(dl, &mirror_dls, dl_entry)
		if (strcmp(dl->dl_digest, digest) == 0)
			break;
	if (!confirmed && !(flags & MB_BUCKET) && (stored || (dl != NULL &&
	    (dl->dl_up != up ||
	    strcmp(dl->dl_repo, repo) != 0)) || (dl == NULL && head))) {
		cf_start(req, st, up, repo, digest);
		return;
	}
	if ((fresh = dl == NULL)) {
		dl = xcalloc(1, sizeof *dl);
		snprintf(dl->dl_digest, sizeof dl->dl_digest, "%s", digest);
		dl->dl_store = st;
		dl->dl_up = up;
		/* A peer's request is never passed on to another peer. */
		dl->dl_peering = !proxy_peer_request(req) &&
		    up->up_url != NULL;
		dl->dl_bucket = (flags & MB_BUCKET) != 0;
		dl->dl_nobucket = (flags & MB_NOBUCKET) != 0;
		if (!dl->dl_peering ||
		    (dl->dl_src = proxy_peer_source(digest, 0)) == NULL)
			dl->dl_src = up;
		dl->dl_repo = xstrdup(repo);
		dl->dl_size = -1;
		policy_limits_get(&pl);
		dl->dl_max = pl.pl_max_blob_bytes;
		dl->dl_tmpmax = pl.pl_max_tmp_bytes;
		TAILQ_INIT(&dl->dl_clients);
		TAILQ_INSERT_TAIL(&mirror_dls, dl, dl_entry);
		mirror_base = evhttp_connection_get_base(
		    evhttp_request_get_connection(req));
		mirror_dl_gen++;
		if (!dl->dl_src->up_peer && !dl->dl_bucket)
			log_info("fetching blob %s of %s/%s", digest,
			    up->up_ns, repo);
	}
	metrics_cache("blob", mirror_label(up), fresh ? METRICS_MISS :
	    METRICS_COALESCED);
	bc = xcalloc(1, sizeof *bc);
	bc->bc_req = req;
	bc->bc_conn = evhttp_request_get_connection(req);
	bc->bc_dl = dl;
	bc->bc_fd = -1;
	bc->bc_head = head;
	range = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Range");
	bc->bc_range = range != NULL ? xstrdup(range) : NULL;
	TAILQ_INSERT_TAIL(&dl->dl_clients, bc, bc_entry);
	evhttp_connection_set_closecb(bc->bc_conn, bc_close_cb, bc);
	if (fresh)
		dl_request(dl);
	else if (dl->dl_state == DL_STREAMING && dl->dl_size >= 0)
		bc_start(bc);
}

/* GET or HEAD of an upstream blob; see proxy.h. */
void
proxy_mirror_blob(struct evhttp_request *req, struct store *st,
    const struct nm_upstream *up, const char *repo, const char *digest)
{
	mirror_blob(req, st, up, repo, digest, 0);
}

/* A Nix image's blob, linked here, streamed from the bucket; see proxy.h. */
void
proxy_mirror_nix_blob(struct evhttp_request *req, struct store *st,
    const char *name, const char *digest)
{
	mirror_blob(req, st, &mirror_nix_bucket, name, digest, MB_NIX);
}
