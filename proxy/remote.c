/*
 * proxy/remote.c: the shared bucket on the serving path.
 *
 * A blob, manifest or tag a replica does not hold may be in the bucket
 * that replicas share (store/remote.c).  A pool job looks it up there,
 * checks the repository's link, and stores what it finds, checked
 * against its digest; the request then goes on on the loop, served from
 * the store, or fetched upstream when the bucket does not have it.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "nixmirror.h"
#include "proxy/proxy.h"
#include "store/store.h"

struct rm_req {
	struct evhttp_request	*rm_req;	/* NULL once the client left */
	struct evhttp_connection *rm_conn;
	struct store		*rm_store;
	int			 rm_kind;
	char			*rm_ns;
	char			*rm_repo;
	char			*rm_ref;
	int			 rm_linked;
	proxy_remote_cb		 rm_cb;
	const void		*rm_arg;
	int			 rm_rc;
	char			*rm_cause;
};

/* The client went away: the lookup goes on and stores what it finds. */
static void
rm_close_cb(struct evhttp_connection *conn, void *arg)
{
	struct rm_req	*rm = arg;

	(void)conn;
	proxy_orphan(rm->rm_req);
	rm->rm_req = NULL;
}

/* The pool job: the link (unless known), then the bytes or the tag. */
static void
rm_job(void *arg)
{
	struct rm_req	*rm = arg;
	struct store	*st = rm->rm_store;

	if (rm->rm_kind == PROXY_REMOTE_TAG) {
		rm->rm_rc = store_remote_utag(st, rm->rm_ns, rm->rm_repo,
		    rm->rm_ref, &rm->rm_cause);
		return;
	}
	rm->rm_rc = rm->rm_linked || store_link_has(st, rm->rm_ns,
	    rm->rm_repo, rm->rm_ref) ? 0 : store_remote_link(st, rm->rm_ns,
	    rm->rm_repo, rm->rm_ref, &rm->rm_cause);
	if (rm->rm_rc == 0)
		rm->rm_rc = store_remote_blob(st, rm->rm_ref, &rm->rm_cause);
}

/* Back on the loop: the caller goes on, if its client is still there. */
static void
rm_done(void *arg)
{
	struct rm_req	*rm = arg;

	if (rm->rm_rc == -1)
		log_warnx("s3: %s/%s %s: %s", rm->rm_ns, rm->rm_repo,
		    rm->rm_ref, rm->rm_cause != NULL ? rm->rm_cause :
		    "lookup failed");
	if (rm->rm_req != NULL) {
		evhttp_connection_set_closecb(rm->rm_conn, NULL, NULL);
		rm->rm_cb(rm->rm_req, rm->rm_store, rm->rm_repo, rm->rm_ref,
		    rm->rm_rc, rm->rm_cause, rm->rm_arg);
	}
	free(rm->rm_ns);
	free(rm->rm_repo);
	free(rm->rm_ref);
	free(rm->rm_cause);
	free(rm);
}

/* Looks a digest or tag up in the bucket; see proxy.h. */
void
proxy_remote_lookup(struct evhttp_request *req, struct store *st, int kind,
    const char *ns, const char *repo, const char *ref, int linked,
    proxy_remote_cb cb, const void *arg)
{
	struct rm_req	*rm;

	rm = xcalloc(1, sizeof *rm);
	rm->rm_req = req;
	rm->rm_conn = evhttp_request_get_connection(req);
	rm->rm_store = st;
	rm->rm_kind = kind;
	rm->rm_ns = xstrdup(ns);
	rm->rm_repo = xstrdup(repo);
	rm->rm_ref = xstrdup(ref);
	rm->rm_linked = linked;
	rm->rm_cb = cb;
	rm->rm_arg = arg;
	evhttp_connection_set_closecb(rm->rm_conn, rm_close_cb, rm);
	if (work_submit(rm_job, rm_done, rm) == -1) {
		/* No worker: as if the bucket did not answer. */
		rm->rm_rc = -1;
		rm->rm_cause = xstrdup("no worker is free");
		rm_done(rm);
	}
}

/* The 503 of a blob that only the unreachable bucket could give. */
void
proxy_remote_unavailable(struct evhttp_request *req, const char *digest)
{
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Retry-After", "30");
	proxy_error(req, 503, "UNAVAILABLE", "blob %s is not stored on this "
	    "replica, and the shared object store cannot be reached",
	    digest);
}
