/*
 * proxy/remote.c: the shared bucket on the serving path.
 *
 * A blob, manifest or tag a replica does not hold may be in the bucket
 * that replicas share (store/remote.c).  A pool job looks it up there,
 * checks the repository's link, and stores what it finds, checked
 * against its digest; the request then goes on on the loop, served from
 * the store, or fetched upstream when the bucket does not have it.
 */
#include <sys/queue.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

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
	char			*rm_url;	/* PROXY_REMOTE_REDIRECT's */
	uint64_t		 rm_size;	/* and the blob's size */
	int			 rm_head;
};

/* How long a presigned URL that a client is sent to stays good. */
#define RM_REDIRECT_SECONDS	(20 * 60)

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
	if (rm->rm_rc == 0 && rm->rm_kind == PROXY_REMOTE_BLOB)
		rm->rm_rc = store_remote_blob(st, rm->rm_ref, &rm->rm_cause);
	if (rm->rm_rc == 0 && rm->rm_kind == PROXY_REMOTE_REDIRECT)
		rm->rm_rc = store_remote_presign(st, rm->rm_ref,
		    RM_REDIRECT_SECONDS, rm->rm_head ? NULL : &rm->rm_url,
		    &rm->rm_size, &rm->rm_cause);
}

/*
 * The client goes to the bucket for the bytes; a HEAD is answered from
 * what the bucket said of them.
 */
static void
rm_redirect(struct rm_req *rm)
{
	struct evkeyvalq	*oh;

	oh = evhttp_request_get_output_headers(rm->rm_req);
	if (rm->rm_head) {
		proxy_headers(rm->rm_req, rm->rm_ref, "application/octet-stream",
		    rm->rm_size);
		evhttp_add_header(oh, "Accept-Ranges", "bytes");
		proxy_reply(rm->rm_req, 200, NULL, "as the shared bucket has it");
		return;
	}
	evhttp_add_header(oh, "Location", rm->rm_url);
	evhttp_add_header(oh, "Docker-Content-Digest", rm->rm_ref);
	evhttp_add_header(oh, "Docker-Distribution-API-Version",
	    "registry/2.0");
	proxy_reply(rm->rm_req, 307, NULL, "to the shared bucket");
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
		if (rm->rm_kind == PROXY_REMOTE_REDIRECT && rm->rm_rc == 0)
			rm_redirect(rm);
		else
			rm->rm_cb(rm->rm_req, rm->rm_store, rm->rm_repo,
			    rm->rm_ref, rm->rm_rc, rm->rm_cause, rm->rm_arg);
	}
	free(rm->rm_ns);
	free(rm->rm_repo);
	free(rm->rm_ref);
	free(rm->rm_cause);
	free(rm->rm_url);
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
	rm->rm_head = evhttp_request_get_command(req) == EVHTTP_REQ_HEAD;
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

/* The 503 of a blob nothing could give while the bucket is unreachable. */
void
proxy_remote_unavailable(struct evhttp_request *req, const char *digest,
    const char *also)
{
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Retry-After", "30");
	proxy_error(req, 503, "UNAVAILABLE", "blob %s is not stored on this "
	    "replica, and the shared object store cannot be reached%s%s",
	    digest, also != NULL ? "; " : "", also != NULL ? also : "");
}

/*
 * A blob streamed from the bucket, shaped like an upstream request (the
 * same callbacks) so that a download takes its bytes from either.  A
 * worker runs the GET and queues the bytes; an event hands them to the
 * loop.  The worker waits while MIRROR-sized backlogs wait or the loop
 * paused reading, so memory stays bounded.
 */
#define RF_BACKLOG	(4 * 1024 * 1024)

struct proxy_remote_fetch {
	struct store		*rf_store;
	char			 rf_digest[NM_DIGEST_SIZE];
	const struct up_callbacks *rf_cb;
	void			*rf_arg;
	struct event		*rf_ev;
	pthread_mutex_t		 rf_mtx;
	pthread_cond_t		 rf_cond;
	struct evbuffer		*rf_buf;	/* arrived, not yet handed */
	int64_t			 rf_size;	/* -1: not known */
	int			 rf_started;	/* the worker saw the size */
	int			 rf_told;	/* the loop gave the headers */
	int			 rf_paused;
	int			 rf_stop;	/* the loop aborted */
	int			 rf_ended;	/* the worker is done */
	int			 rf_done;	/* and the loop heard it */
	int			 rf_rc;
	char			*rf_cause;
	char			*rf_why;	/* the abort's reason */
};

static struct event_base	*rf_base;

void	proxy_remote_abort(struct proxy_remote_fetch *, const char *);

/* The base of the fetches' events (from the server's start). */
void
proxy_remote_init(struct event_base *base)
{
	rf_base = base;
}

/* The worker: the size is known, before the first byte. */
static int
rf_start_cb(int64_t size, void *arg)
{
	struct proxy_remote_fetch	*rf = arg;

	pthread_mutex_lock(&rf->rf_mtx);
	rf->rf_size = size;
	rf->rf_started = 1;
	pthread_mutex_unlock(&rf->rf_mtx);
	event_active(rf->rf_ev, EV_READ, 0);
	return (0);
}

/* The worker: bytes, queued for the loop; waits while it is behind. */
static int
rf_sink_cb(const void *p, size_t len, void *arg)
{
	struct proxy_remote_fetch	*rf = arg;
	struct timespec			 ts;
	int				 stop;

	pthread_mutex_lock(&rf->rf_mtx);
	/* Woken by the loop, or every half second to see a shutdown. */
	while (!rf->rf_stop && !store_remote_stopping(rf->rf_store) &&
	    (rf->rf_paused || evbuffer_get_length(rf->rf_buf) >= RF_BACKLOG)) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 500000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&rf->rf_cond, &rf->rf_mtx, &ts);
	}
	stop = rf->rf_stop || store_remote_stopping(rf->rf_store);
	if (!stop && evbuffer_add(rf->rf_buf, p, len) == -1)
		stop = 1;
	pthread_mutex_unlock(&rf->rf_mtx);
	event_active(rf->rf_ev, EV_READ, 0);
	return (stop ? -1 : 0);
}

static void
rf_job(void *arg)
{
	struct proxy_remote_fetch	*rf = arg;
	char				*cause = NULL;
	int				 rc;

	rc = store_remote_get(rf->rf_store, rf->rf_digest, rf_start_cb,
	    rf_sink_cb, rf, &cause);
	pthread_mutex_lock(&rf->rf_mtx);
	rf->rf_rc = rc;
	rf->rf_cause = cause;
	rf->rf_ended = 1;
	pthread_mutex_unlock(&rf->rf_mtx);
}

static void
rf_free(struct proxy_remote_fetch *rf)
{
	event_free(rf->rf_ev);
	evbuffer_free(rf->rf_buf);
	pthread_mutex_destroy(&rf->rf_mtx);
	pthread_cond_destroy(&rf->rf_cond);
	free(rf->rf_cause);
	free(rf->rf_why);
	free(rf);
}

/*
 * On the loop: the headers once the size is known, the bytes queued so
 * far unless paused, and the end once the worker is done (from the job's
 * done) and every byte it queued was handed on.
 */
static void
rf_deliver(struct proxy_remote_fetch *rf, int final)
{
	struct evkeyvalq	 h;
	struct evbuffer		*out;
	char			 len[32];
	int			 started, stop, rc, left;

	if (final)
		rf->rf_done = 1;
	if ((out = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new", __func__);
	pthread_mutex_lock(&rf->rf_mtx);
	started = rf->rf_started;
	stop = rf->rf_stop;
	if (!rf->rf_paused)
		evbuffer_add_buffer(out, rf->rf_buf);
	pthread_cond_broadcast(&rf->rf_cond);
	pthread_mutex_unlock(&rf->rf_mtx);
	if (!stop && started && !rf->rf_told) {
		rf->rf_told = 1;
		TAILQ_INIT(&h);
		if (rf->rf_size >= 0) {
			snprintf(len, sizeof len, "%lld", (long long)rf->rf_size);
			evhttp_add_header(&h, "Content-Length", len);
		}
		rc = rf->rf_cb->uc_headers(NULL, 200, &h, rf->rf_arg);
		evhttp_clear_headers(&h);
		if (rc == -1)
			proxy_remote_abort(rf, "refused");
	}
	pthread_mutex_lock(&rf->rf_mtx);
	stop = rf->rf_stop;
	pthread_mutex_unlock(&rf->rf_mtx);
	if (!stop && evbuffer_get_length(out) > 0 &&
	    rf->rf_cb->uc_data(NULL, out, rf->rf_arg) == -1)
		proxy_remote_abort(rf, "refused");
	evbuffer_free(out);
	pthread_mutex_lock(&rf->rf_mtx);
	stop = rf->rf_stop;
	left = evbuffer_get_length(rf->rf_buf) > 0;
	pthread_mutex_unlock(&rf->rf_mtx);
	/* Paused with bytes left: the end waits for the unpause. */
	if (!rf->rf_done || (left && !stop))
		return;
	if (rf->rf_why != NULL)
		rf->rf_cb->uc_done(NULL, 0, rf->rf_why, rf->rf_arg);
	else if (rf->rf_rc == S3_ABSENT)
		rf->rf_cb->uc_done(NULL, 404, NULL, rf->rf_arg);
	else if (rf->rf_rc == -1)
		rf->rf_cb->uc_done(NULL, 0, rf->rf_cause != NULL ?
		    rf->rf_cause : "the bucket failed", rf->rf_arg);
	else
		rf->rf_cb->uc_done(NULL, 200, NULL, rf->rf_arg);
	rf_free(rf);
}

static void
rf_event_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	rf_deliver(arg, 0);
}

static void
rf_done(void *arg)
{
	rf_deliver(arg, 1);
}


/* Streams a blob from the bucket to the callbacks; see proxy.h. */
struct proxy_remote_fetch *
proxy_remote_fetch(struct store *st, const char *digest,
    const struct up_callbacks *cb, void *arg)
{
	struct proxy_remote_fetch	*rf;

	rf = xcalloc(1, sizeof *rf);
	rf->rf_store = st;
	snprintf(rf->rf_digest, sizeof rf->rf_digest, "%s", digest);
	rf->rf_cb = cb;
	rf->rf_arg = arg;
	rf->rf_size = -1;
	if ((rf->rf_buf = evbuffer_new()) == NULL ||
	    (rf->rf_ev = event_new(rf_base, -1, 0, rf_event_cb, rf)) == NULL)
		fatalx("%s: evbuffer_new", __func__);
	pthread_mutex_init(&rf->rf_mtx, NULL);
	pthread_cond_init(&rf->rf_cond, NULL);
	if (work_submit_long(rf_job, rf_done, rf) == -1) {
		/*
		 * No worker: done already, and the end comes from the loop
		 * (by the event), as for a request.
		 */
		rf->rf_ended = rf->rf_done = 1;
		rf->rf_rc = -1;
		rf->rf_cause = xstrdup("no worker is free");
		event_active(rf->rf_ev, EV_READ, 0);
	}
	return (rf);
}

/* Stops (paused) or restarts handing bytes to the loop. */
void
proxy_remote_pause(struct proxy_remote_fetch *rf, int paused)
{
	pthread_mutex_lock(&rf->rf_mtx);
	rf->rf_paused = paused;
	pthread_cond_broadcast(&rf->rf_cond);
	pthread_mutex_unlock(&rf->rf_mtx);
	if (!paused)
		event_active(rf->rf_ev, EV_READ, 0);
}

/* Ends the transfer early; its uc_done follows from the loop with why. */
void
proxy_remote_abort(struct proxy_remote_fetch *rf, const char *why)
{
	pthread_mutex_lock(&rf->rf_mtx);
	if (!rf->rf_stop) {
		rf->rf_stop = 1;
		free(rf->rf_why);
		rf->rf_why = xstrdup(why);
	}
	pthread_cond_broadcast(&rf->rf_cond);
	pthread_mutex_unlock(&rf->rf_mtx);
}
