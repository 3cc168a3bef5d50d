/*
 * store/remote.c: the object store that replicas share.
 *
 * The bucket holds, under its prefix:
 *
 *	blobs/sha256/<hex>			a blob or manifest, typed
 *	repos/<ns>/<repo>/_links/<hex>		(ns, repo) holds that digest
 *	repos/<ns>/<repo>/_tags/<tag>		{"digest", "checked"}
 *	nix/images/<hex of the image key>	{"docker", "oci", "created"}
 *	nix/layers/<hex of the layer key>	{"digest", "diff_id", "size"}
 *
 * Each replica's SQLite stays its own index: what it records is queued
 * in remote_outbox in the same transaction, and one uploader job sends
 * the queue, blobs before the small objects that name them, a blob only
 * from its committed (so verified) file, and deletes each row once S3
 * has it.  A crash leaves the rows to send again; a multipart upload in
 * flight is named in its row, and abandoned before the next attempt.
 *
 * What a replica misses it looks up in the bucket and records locally,
 * without queueing it again; a blob is checked against its digest on
 * the way in, as one from an upstream is.
 */
#include <sys/types.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "nixmirror.h"
#include "policy/policy.h"
#include "store/store.h"
#include "store/store_int.h"

#define REMOTE_RETRY		5	/* seconds between failed uploads */
#define REMOTE_MAX_SMALL	(64 * 1024)	/* a small object's bytes */
#define REMOTE_MAX_MANIFEST	(4 * 1024 * 1024)

/* Set in a thread while it records what came from the bucket. */
static __thread int	 remote_importing;

static void	remote_upload_job(void *);
static void	remote_upload_done(void *);

/* The object key of (ns, repo)'s kind, or NULL when it cannot be one. */
char *
store_remote_repo_key(const char *ns, const char *repo, const char *kind,
    const char *name)
{
	char	*key;

	/* "@nix" is no host name; "_nix" cannot be one either. */
	if (strcmp(ns, STORE_NIX_NS) == 0)
		ns = "_nix";
	if (strchr(name, '/') != NULL || strstr(name, "..") != NULL ||
	    name[0] == '.' || strstr(repo, "..") != NULL)
		return (NULL);
	xasprintf(&key, "repos/%s/%s/%s/%s", ns, repo, kind, name);
	return (key);
}

/* The object key of a blob, or NULL for what is not a digest. */
char *
store_remote_blob_key(const char *digest)
{
	char	*key;

	if (digest == NULL || !policy_digest_valid(digest))
		return (NULL);
	xasprintf(&key, "blobs/sha256/%s", digest + 7);
	return (key);
}

/*
 * The object key of a Nix image: the key is long text naming the package
 * source (a git URL may hold a token), so its object is named by its
 * hash, and the key itself stays out of the bucket.
 */
char *
store_remote_image_key(const char *key)
{
	char	 kd[NM_DIGEST_SIZE], *okey;

	nm_sha256_digest(key, strlen(key), kd);
	xasprintf(&okey, "nix/images/%s", kd + 7);
	return (okey);
}

/* The object key of a built layer, or NULL when the key is no digest. */
char *
store_remote_layer_key(const char *key)
{
	char	*okey;

	if (!policy_digest_valid(key))
		return (NULL);
	xasprintf(&okey, "nix/layers/%s", key + 7);
	return (okey);
}

/* What this thread records from now on came from the bucket (or not). */
void
store_remote_quiet(int on)
{
	remote_importing = on;
}

/* Queues an object for the bucket; lock held (see store_int.h). */
void
store_remote_queue(struct store *st, const char *key, const char *digest,
    const char *body)
{
	if (st->st_s3 == NULL || remote_importing)
		return;
	/* A new body replaces a queued one of the key: the last one counts. */
	if (store_db_run(st, __func__, store_db_stmt(st, __func__,
	    "INSERT OR REPLACE INTO remote_outbox (key, digest, body)"
	    " VALUES (?, ?, ?)", "ttt", key, digest, body)) == -1)
		return;
	store_remote_kick(st);
}

/*
 * With a bucket, a record and its queued object are one write: a crash
 * between them could leave a blob that never goes up.  Lock held.
 */
void
store_remote_begin(struct store *st)
{
	if (st->st_s3 != NULL)
		(void)store_db_exec(st, "SAVEPOINT nm_remote");
}

/* Ends what store_remote_begin started, keeping it when rv is 0; rv. */
int
store_remote_end(struct store *st, int rv)
{
	if (st->st_s3 != NULL && (rv != 0 || store_db_exec(st,
	    "RELEASE nm_remote") == -1)) {
		(void)store_db_exec(st, "ROLLBACK TO nm_remote");
		(void)store_db_exec(st, "RELEASE nm_remote");
		rv = -1;
	}
	return (rv);
}

/* Queues a small JSON object for the bucket and frees it; lock held. */
void
store_remote_queue_json(struct store *st, const char *key, json_t *o)
{
	char	*body;

	if (o == NULL)
		return;
	if ((body = json_dumps(o, JSON_COMPACT)) != NULL)
		store_remote_queue(st, key, NULL, body);
	free(body);
	json_decref(o);
}

/* Attaches the bucket and sends what an earlier run left queued. */
void
store_remote_attach(struct store *st, struct s3 *s3)
{
	if (pthread_mutex_init(&st->st_umtx, NULL) != 0 ||
	    pthread_cond_init(&st->st_ucond, NULL) != 0)
		fatalx("%s: pthread_mutex_init", __func__);
	st->st_s3 = s3;
	store_remote_kick(st);
}

int
store_remote_on(struct store *st)
{
	return (st->st_s3 != NULL);
}

/* Starts the uploader unless it runs or stops. */
void
store_remote_kick(struct store *st)
{
	int	 start = 0;

	if (st->st_s3 == NULL)
		return;
	pthread_mutex_lock(&st->st_umtx);
	if (st->st_urunning)
		st->st_uagain = 1;
	else if (!st->st_ustop) {
		st->st_urunning = 1;
		st->st_uagain = 0;
		start = 1;
	}
	pthread_mutex_unlock(&st->st_umtx);
	if (start && work_submit_long(remote_upload_job, remote_upload_done,
	    st) == -1) {
		pthread_mutex_lock(&st->st_umtx);
		st->st_urunning = 0;
		pthread_mutex_unlock(&st->st_umtx);
	}
}

/* Stops the uploader between objects; the queue stays for the next run. */
void
store_remote_stop(struct store *st)
{
	if (st->st_s3 == NULL)
		return;
	pthread_mutex_lock(&st->st_umtx);
	st->st_ustop = 1;
	pthread_cond_broadcast(&st->st_ucond);
	pthread_mutex_unlock(&st->st_umtx);
	s3_cancel(st->st_s3);
}

int
store_remote_stopping(struct store *st)
{
	return (st->st_s3 != NULL && s3_cancelled(st->st_s3));
}

/* Rows still queued. */
int64_t
store_remote_pending(struct store *st)
{
	sqlite3_stmt	*stmt;
	int64_t		 n = 0;

	if (st->st_s3 == NULL)
		return (0);
	store_lock(st);
	stmt = store_db_stmt(st, __func__, "SELECT count(*) FROM"
	    " remote_outbox", "");
	if (store_db_row(st, __func__, stmt) == 0)
		n = sqlite3_column_int64(stmt, 0);
	store_db_done(st, stmt);
	store_unlock(st);
	return (n);
}

/* One queued row. */
struct remote_item {
	int64_t		 ri_id;
	char		*ri_key;
	char		*ri_digest;	/* a blob, or NULL */
	char		*ri_body;	/* a small object, or NULL */
	char		*ri_upload;	/* a multipart upload left behind */
	struct store	*ri_store;
};

static void
remote_item_clear(struct remote_item *ri)
{
	free(ri->ri_key);
	free(ri->ri_digest);
	free(ri->ri_body);
	free(ri->ri_upload);
	memset(ri, 0, sizeof *ri);
}

static char *
remote_column(sqlite3_stmt *stmt, int i)
{
	const unsigned char	*t = sqlite3_column_text(stmt, i);

	return (t != NULL ? xstrdup((const char *)t) : NULL);
}

/* The next row to send: blobs first, oldest first; 0, or -1 when none. */
static int
remote_next(struct store *st, struct remote_item *ri)
{
	sqlite3_stmt	*stmt;
	int		 rv = -1;

	store_lock(st);
	stmt = store_db_stmt(st, __func__, "SELECT id, key, digest, body,"
	    " upload_id FROM remote_outbox ORDER BY digest IS NULL, id"
	    " LIMIT 1", "");
	if (store_db_row(st, __func__, stmt) == 0) {
		ri->ri_id = sqlite3_column_int64(stmt, 0);
		ri->ri_key = remote_column(stmt, 1);
		ri->ri_digest = remote_column(stmt, 2);
		ri->ri_body = remote_column(stmt, 3);
		ri->ri_upload = remote_column(stmt, 4);
		ri->ri_store = st;
		rv = 0;
	}
	store_db_done(st, stmt);
	store_unlock(st);
	return (rv);
}

/* A sent row goes, unless a newer body replaced it meanwhile. */
static void
remote_sent(struct store *st, int64_t id)
{
	store_lock(st);
	(void)store_db_run(st, __func__, store_db_stmt(st, __func__,
	    "DELETE FROM remote_outbox WHERE id = ?", "i", id));
	store_unlock(st);
}

/* Names a multipart upload in its row, so a crash can abandon it. */
static void
remote_started(const char *upload_id, void *arg)
{
	struct remote_item	*ri = arg;

	store_lock(ri->ri_store);
	(void)store_db_run(ri->ri_store, __func__, store_db_stmt(ri->ri_store,
	    __func__, "UPDATE remote_outbox SET upload_id = ? WHERE id = ?",
	    "ti", upload_id, ri->ri_id));
	store_unlock(ri->ri_store);
}

/*
 * Sends a blob from its committed file, unless the bucket has it (from
 * another replica); a blob evicted meanwhile is dropped from the queue,
 * as whoever stores it again queues it again.  0 or -1 with *cause.
 */
static int
remote_send_blob(struct store *st, struct remote_item *ri, char **cause)
{
	uint64_t	 size, have;
	char		*type = NULL;
	int		 fd, rc;

	if (!policy_digest_valid(ri->ri_digest))
		return (0);
	if (ri->ri_upload != NULL) {
		if (s3_abort_upload(st->st_s3, ri->ri_key, ri->ri_upload,
		    cause) == -1)
			return (-1);
		log_info("s3: abandoned the upload of %s left by an earlier "
		    "run", ri->ri_key);
		remote_started(NULL, ri);	/* done: the row forgets it */
	}
	if (store_blob_stat(st, ri->ri_digest, &size, &type) == -1 ||
	    (fd = store_blob_open(st, ri->ri_digest, &size)) == -1) {
		free(type);
		return (0);
	}
	rc = s3_head(st->st_s3, ri->ri_key, &have, NULL, cause);
	if (rc == 0 && have == size) {
		close(fd);
		free(type);
		return (0);
	}
	if (rc == -1) {
		close(fd);
		free(type);
		return (-1);
	}
	log_info("s3: uploading %s (%llu bytes)", ri->ri_key,
	    (unsigned long long)size);
	rc = s3_put_file(st->st_s3, ri->ri_key, fd, size, type != NULL ? type :
	    "application/octet-stream", remote_started, ri, cause);
	close(fd);
	free(type);
	if (rc == 0)
		log_info("s3: stored %s", ri->ri_key);
	return (rc);
}

/* Waits out a failure, or a stop; 0, or -1 when stopping. */
static int
remote_wait(struct store *st)
{
	struct timespec	 ts;
	int		 stop;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += REMOTE_RETRY;
	pthread_mutex_lock(&st->st_umtx);
	if (!st->st_ustop)
		pthread_cond_timedwait(&st->st_ucond, &st->st_umtx, &ts);
	stop = st->st_ustop;
	pthread_mutex_unlock(&st->st_umtx);
	return (stop ? -1 : 0);
}

/*
 * The uploader: sends the queue until it is empty, retrying the bucket
 * every REMOTE_RETRY seconds while it fails (one warning per outage).
 */
static void
remote_upload_job(void *arg)
{
	struct store		*st = arg;
	struct remote_item	 ri;
	char			*cause = NULL;
	int			 rc, failing = 0, stop;

	memset(&ri, 0, sizeof ri);
	for (;;) {
		pthread_mutex_lock(&st->st_umtx);
		stop = st->st_ustop;
		st->st_uagain = 0;
		pthread_mutex_unlock(&st->st_umtx);
		if (stop || remote_next(st, &ri) == -1)
			break;
		if (ri.ri_digest != NULL)
			rc = remote_send_blob(st, &ri, &cause);
		else
			rc = s3_put_mem(st->st_s3, ri.ri_key, ri.ri_body,
			    strlen(ri.ri_body), "application/json", &cause);
		if (rc == 0) {
			remote_sent(st, ri.ri_id);
			if (failing)
				log_info("s3: %s answers again", s3_where(
				    st->st_s3));
			failing = 0;
		} else {
			if (!failing)
				log_warnx("s3: cannot store %s: %s; retrying",
				    ri.ri_key, cause);
			failing = 1;
			free(cause);
			cause = NULL;
			remote_item_clear(&ri);
			if (remote_wait(st) == -1)
				break;
		}
		remote_item_clear(&ri);
	}
	remote_item_clear(&ri);
}

/* On the loop: the uploader ended; more queued meanwhile starts it again. */
static void
remote_upload_done(void *arg)
{
	struct store	*st = arg;
	int		 again;

	pthread_mutex_lock(&st->st_umtx);
	st->st_urunning = 0;
	again = st->st_uagain && !st->st_ustop;
	pthread_mutex_unlock(&st->st_umtx);
	if (again)
		store_remote_kick(st);
}

/* A blob streamed from the bucket into a writer. */
static int
remote_writer_sink(const void *p, size_t len, void *arg)
{
	return (store_writer_write(arg, p, len));
}

/* A blob's bytes, and its media type if ctype is not NULL. */
static int
remote_blob_get(struct store *st, const char *digest, s3_start_fn start,
    s3_sink_fn sink, void *arg, char **ctype, char **cause)
{
	char	*key;
	int	 rc;

	if (st->st_s3 == NULL || (key = store_remote_blob_key(digest)) == NULL)
		return (S3_ABSENT);
	rc = s3_get_stream(st->st_s3, key, start, sink, arg, ctype, cause);
	free(key);
	return (rc);
}

/* A blob's bytes from the bucket, unchecked; see store.h. */
int
store_remote_get(struct store *st, const char *digest, s3_start_fn start,
    s3_sink_fn sink, void *arg, char **cause)
{
	return (remote_blob_get(st, digest, start, sink, arg, NULL, cause));
}

/* A blob from the bucket into the store; see store.h. */
int
store_remote_blob(struct store *st, const char *digest, char **cause)
{
	struct store_writer	*sw;
	uint64_t		 size;
	char			*type = NULL;
	int			 rc;

	if (st->st_s3 == NULL)
		return (S3_ABSENT);
	if (store_blob_stat(st, digest, &size, NULL) == 0)
		return (0);
	if (!policy_digest_valid(digest))
		return (S3_ABSENT);
	if ((sw = store_writer_new(st, cause)) == NULL)
		return (-1);
	rc = remote_blob_get(st, digest, NULL, remote_writer_sink, sw, &type,
	    cause);
	if (rc != 0) {
		store_writer_abort(sw);
		free(type);
		return (rc);
	}
	if (type != NULL && strcmp(type, "application/octet-stream") == 0) {
		free(type);
		type = NULL;
	}
	remote_importing = 1;
	rc = store_writer_commit(sw, digest, type, NULL, cause);
	if (rc == 0 && type != NULL && (strstr(type, "manifest") != NULL ||
	    strstr(type, "index") != NULL))
		rc = store_manifest_put(st, digest, type);
	remote_importing = 0;
	if (rc == -1 && *cause == NULL)
		xasprintf(cause, "cannot record %s", digest);
	free(type);
	return (rc);
}

/* Where the bucket's copy of a blob can be fetched; see store.h. */
int
store_remote_presign(struct store *st, const char *digest, int expires,
    char **url, uint64_t *size, char **cause)
{
	char	*key;
	int	 rc;

	if (st->st_s3 == NULL || (key = store_remote_blob_key(digest)) == NULL)
		return (S3_ABSENT);
	rc = s3_head(st->st_s3, key, size, NULL, cause);
	if (rc == 0 && url != NULL && (*url = s3_presign(st->st_s3, key,
	    expires, cause)) == NULL)
		rc = -1;
	free(key);
	return (rc);
}

/* Whether (ns, repo) links to digest in the bucket; see store.h. */
int
store_remote_link(struct store *st, const char *ns, const char *repo,
    const char *digest, char **cause)
{
	char	*key;
	int	 rc;

	if (st->st_s3 == NULL || !policy_digest_valid(digest) ||
	    (key = store_remote_repo_key(ns, repo, "_links",
	    digest + 7)) == NULL)
		return (S3_ABSENT);
	rc = s3_head(st->st_s3, key, NULL, NULL, cause);
	free(key);
	if (rc == 0) {
		remote_importing = 1;
		rc = store_link_put(st, ns, repo, digest);
		remote_importing = 0;
		if (rc == -1)
			xasprintf(cause, "cannot record a link of %s", digest);
	}
	return (rc);
}

/* A small JSON object of the bucket; 0, S3_ABSENT or -1 with *cause. */
static int
remote_json(struct store *st, const char *key, json_t **root, char **cause)
{
	char	*data;
	int	 rc;

	if ((rc = s3_get_mem(st->st_s3, key, REMOTE_MAX_SMALL, &data, NULL,
	    cause)) != 0)
		return (rc);
	*root = json_loads(data, JSON_REJECT_DUPLICATES, NULL);
	free(data);
	if (*root == NULL || !json_is_object(*root)) {
		json_decref(*root);
		xasprintf(cause, "%s: not a JSON object", key);
		return (-1);
	}
	return (0);
}

/* An upstream tag another replica resolved; see store.h. */
int
store_remote_utag(struct store *st, const char *ns, const char *repo,
    const char *tag, char **cause)
{
	char		 local[NM_DIGEST_SIZE];
	const char	*digest;
	json_t		*root;
	char		*key;
	time_t		 checked = 0;
	json_int_t	 when;
	int		 rc;

	if (st->st_s3 == NULL ||
	    (key = store_remote_repo_key(ns, repo, "_tags", tag)) == NULL)
		return (S3_ABSENT);
	rc = remote_json(st, key, &root, cause);
	free(key);
	if (rc != 0)
		return (rc);
	digest = json_string_value(json_object_get(root, "digest"));
	when = json_integer_value(json_object_get(root, "checked"));
	if (digest == NULL || !policy_digest_valid(digest)) {
		json_decref(root);
		return (S3_ABSENT);
	}
	if (store_utag_get(st, ns, repo, tag, local, &checked) == 0 &&
	    (int64_t)checked >= (int64_t)when) {
		json_decref(root);
		return (0);
	}
	if ((rc = store_remote_blob(st, digest, cause)) == 0) {
		remote_importing = 1;
		if (store_link_manifest(st, ns, repo, digest) == -1 ||
		    store_utag_put_at(st, ns, repo, tag, digest,
		    (int64_t)when) == -1) {
			xasprintf(cause, "cannot record %s:%s", repo, tag);
			rc = -1;
		}
		remote_importing = 0;
	}
	json_decref(root);
	return (rc);
}

/* A Nix image another replica built; see store.h. */
int
store_remote_image(struct store *st, const char *key, char **cause)
{
	struct store_image	 si;
	const char		*d, *o;
	char			*okey;
	json_t			*root;
	int			 rc;

	if (st->st_s3 == NULL)
		return (S3_ABSENT);
	okey = store_remote_image_key(key);
	rc = remote_json(st, okey, &root, cause);
	free(okey);
	if (rc != 0)
		return (rc);
	d = json_string_value(json_object_get(root, "docker"));
	o = json_string_value(json_object_get(root, "oci"));
	if (d == NULL || o == NULL || !policy_digest_valid(d) ||
	    !policy_digest_valid(o)) {
		json_decref(root);
		return (S3_ABSENT);
	}
	memset(&si, 0, sizeof si);
	snprintf(si.si_docker, sizeof si.si_docker, "%s", d);
	snprintf(si.si_oci, sizeof si.si_oci, "%s", o);
	si.si_created = (time_t)json_integer_value(json_object_get(root,
	    "created"));
	json_decref(root);
	if ((rc = store_remote_blob(st, si.si_docker, cause)) != 0 ||
	    (rc = store_remote_blob(st, si.si_oci, cause)) != 0)
		return (rc);
	remote_importing = 1;
	rc = store_image_put(st, key, &si);
	remote_importing = 0;
	if (rc == -1)
		xasprintf(cause, "cannot record the image %s", key);
	return (rc);
}

/* A layer another replica built; see store.h. */
int
store_remote_layer(struct store *st, const char *key, char **cause)
{
	struct store_layer	 sl;
	const char		*d, *f;
	char			*okey;
	json_t			*root;
	int			 rc;

	if (st->st_s3 == NULL || (okey = store_remote_layer_key(key)) == NULL)
		return (S3_ABSENT);
	rc = remote_json(st, okey, &root, cause);
	free(okey);
	if (rc != 0)
		return (rc);
	d = json_string_value(json_object_get(root, "digest"));
	f = json_string_value(json_object_get(root, "diff_id"));
	if (d == NULL || f == NULL || !policy_digest_valid(d) ||
	    !policy_digest_valid(f)) {
		json_decref(root);
		return (S3_ABSENT);
	}
	memset(&sl, 0, sizeof sl);
	snprintf(sl.sl_digest, sizeof sl.sl_digest, "%s", d);
	snprintf(sl.sl_diffid, sizeof sl.sl_diffid, "%s", f);
	sl.sl_size = (uint64_t)json_integer_value(json_object_get(root,
	    "size"));
	json_decref(root);
	if ((rc = store_remote_blob(st, sl.sl_digest, cause)) != 0)
		return (rc);
	remote_importing = 1;
	rc = store_layer_put(st, key, &sl);
	remote_importing = 0;
	if (rc == -1)
		xasprintf(cause, "cannot record the layer %s", key);
	return (rc);
}
