/*
 * store/db.c: the SQLite metadata database under the data directory.
 *
 * Two connections: one that writes, shared by the event loop and the
 * workers, and one that only reads, for the loop's hot lookups (a blob's
 * row, a tag).  A mutex of each serialises its use, so a statement's
 * prepare, steps and sqlite3_errmsg() are never interleaved with another
 * thread's; in WAL mode the reader sees every commit and never waits for
 * the writer, who may hold its lock across a checkpoint's fsync.  Values
 * are always bound, never spliced into SQL.
 *
 * The database runs in WAL mode with synchronous=NORMAL: a commit is
 * atomic and consistent after a crash, and at worst the last few commits
 * before a power loss are rolled back.  That is acceptable because every
 * row describes a blob file that is renamed and fsynced before its row is
 * written, and a lost row only means the work is redone.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sqlite3.h>

#include "nixmirror.h"
#include "policy/policy.h"
#include "store/store.h"
#include "store/store_int.h"

/*
 * Schema migrations, applied in order, each in its own transaction; the
 * number applied is kept in PRAGMA user_version.  Only ever append.
 */
static const char *const store_migrations[] = {
	/* 1: blobs, manifests, layers, images, git tag resolutions. */
	"CREATE TABLE blobs ("
	" digest TEXT PRIMARY KEY,"
	" size INTEGER NOT NULL,"
	" media_type TEXT,"
	" created INTEGER NOT NULL,"
	" last_access INTEGER NOT NULL);"
	"CREATE TABLE manifests ("
	" digest TEXT PRIMARY KEY REFERENCES blobs(digest),"
	" media_type TEXT NOT NULL,"
	" created INTEGER NOT NULL);"
	"CREATE TABLE layers ("
	" key TEXT PRIMARY KEY,"
	" digest TEXT NOT NULL REFERENCES blobs(digest),"
	" diff_id TEXT NOT NULL,"
	" size INTEGER NOT NULL,"
	" created INTEGER NOT NULL);"
	"CREATE TABLE images ("
	" key TEXT PRIMARY KEY,"
	" docker_digest TEXT NOT NULL,"
	" oci_digest TEXT NOT NULL,"
	" created INTEGER NOT NULL);"
	"CREATE TABLE tag_history ("
	" id INTEGER PRIMARY KEY,"
	" source TEXT NOT NULL,"
	" tag TEXT NOT NULL,"
	" commit_id TEXT NOT NULL,"
	" resolved INTEGER NOT NULL);"
	"CREATE INDEX tag_history_lookup"
	" ON tag_history (source, tag, resolved);",
	/* 2: upstream tag → digest history of the pull-through cache. */
	"CREATE TABLE upstream_tags ("
	" id INTEGER PRIMARY KEY,"
	" ns TEXT NOT NULL,"
	" repo TEXT NOT NULL,"
	" tag TEXT NOT NULL,"
	" digest TEXT NOT NULL REFERENCES blobs(digest),"
	" first_seen INTEGER NOT NULL,"
	" checked INTEGER NOT NULL);"
	"CREATE INDEX upstream_tags_lookup"
	" ON upstream_tags (ns, repo, tag, id);",
	/*
	 * 3: pinned manifests, never evicted by store/gc.c with what they
	 * reference; an index on last_access for the LRU order.
	 */
	"CREATE TABLE pins ("
	" digest TEXT PRIMARY KEY REFERENCES blobs(digest),"
	" created INTEGER NOT NULL);"
	"CREATE INDEX blobs_last_access ON blobs (last_access);",
	/*
	 * 4: repository links (store/link.c): which repository holds a
	 * digest; backfilled from the tags of the pull-through cache.
	 */
	"CREATE TABLE links ("
	" ns TEXT NOT NULL,"
	" repo TEXT NOT NULL,"
	" digest TEXT NOT NULL,"
	" created INTEGER NOT NULL,"
	" PRIMARY KEY (ns, repo, digest)) WITHOUT ROWID;"
	"CREATE INDEX links_digest ON links (digest);",
	/*
	 * 5: lists an upstream answered (a repository's tags, a digest's
	 * referrers), kept to be served within the tag TTL and, stale,
	 * when the upstream is down.
	 */
	"CREATE TABLE lists ("
	" ns TEXT NOT NULL,"
	" repo TEXT NOT NULL,"
	" kind TEXT NOT NULL,"
	" body TEXT NOT NULL,"
	" fetched INTEGER NOT NULL,"
	" PRIMARY KEY (ns, repo, kind)) WITHOUT ROWID;",
	/*
	 * 6: what is still to go up to the shared object store
	 * (store/remote.c): a blob (digest set) or a small object (body
	 * set), and a multipart upload in flight, to abandon after a crash.
	 */
	"CREATE TABLE remote_outbox ("
	" id INTEGER PRIMARY KEY,"
	" key TEXT NOT NULL UNIQUE,"
	" digest TEXT,"
	" body TEXT,"
	" upload_id TEXT);",
};
/* What a migration does beyond its SQL, in its transaction; or NULL. */
static int (*const store_migration_steps[])(struct store *) = {
	NULL, NULL, NULL, store_link_backfill, NULL, NULL,
};
#define STORE_NMIGRATIONS \
	((int)(sizeof store_migrations / sizeof store_migrations[0]))
_Static_assert(sizeof store_migration_steps /
    sizeof store_migration_steps[0] == STORE_NMIGRATIONS,
    "one step (or NULL) per migration");

static int		 store_db_migrate(struct store *, char **);
static int		 store_db_open(struct store *, char **);
static int		 store_copy(char *, size_t, const unsigned char *);
static void		 store_conn_done(struct store_conn *, sqlite3_stmt *);

/* Creates a directory and its missing parents, mode 0755; 0 or -1. */
int
store_mkdirs(const char *path)
{
	char	*p, *s;
	int	 rv = -1;

	p = xstrdup(path);
	for (s = p + 1; ; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		if (s[-1] != '/') {
			char	 c = *s;

			*s = '\0';
			if (mkdir(p, 0755) == -1 && errno != EEXIST)
				goto fail;
			*s = c;
		}
		if (*s == '\0')
			break;
	}
	rv = 0;
fail:
	free(p);
	return (rv);
}

/* Takes the store's database lock. */
void
store_lock(struct store *st)
{
	if (pthread_mutex_lock(&st->st_mtx) != 0)
		fatalx("%s: pthread_mutex_lock failed", __func__);
}

/*
 * Makes the writes that follow, until store_batch_end, one transaction
 * (an import records a whole bundle at once).  The store lock is held
 * all along, so no other thread's write lands in it.  0 or -1.
 */
int
store_batch_begin(struct store *st)
{
	store_lock(st);
	if (store_db_exec(st, "BEGIN IMMEDIATE") == -1) {
		store_unlock(st);
		return (-1);
	}
	st->st_batch = 1;
	return (0);
}

/* Commits the batch when ok (0, or -1 if that fails), else rolls it back. */
int
store_batch_end(struct store *st, int ok)
{
	int	 rv = -1;

	st->st_batch = 0;
	if (ok && store_db_exec(st, "COMMIT") == 0)
		rv = 0;
	else
		store_db_exec(st, "ROLLBACK");
	store_unlock(st);
	return (ok ? rv : -1);
}

/* Releases the store's database lock. */
void
store_unlock(struct store *st)
{
	if (pthread_mutex_unlock(&st->st_mtx) != 0)
		fatalx("%s: pthread_mutex_unlock failed", __func__);
}

/*
 * Takes the lock of the reading connection.  It is never held across a
 * write, an fsync or a checkpoint, so the loop's lookups do not wait on
 * a worker's commit.
 */
void
store_rlock(struct store *st)
{
	if (pthread_mutex_lock(&st->st_rmtx) != 0)
		fatalx("%s: pthread_mutex_lock failed", __func__);
}

/* Releases the lock of the reading connection. */
void
store_runlock(struct store *st)
{
	if (pthread_mutex_unlock(&st->st_rmtx) != 0)
		fatalx("%s: pthread_mutex_unlock failed", __func__);
}

/* Runs constant SQL without parameters; lock held or not yet shared. */
int
store_db_exec(struct store *st, const char *sql)
{
	char	*err = NULL;

	/* Inside store_batch_begin, a transaction is a savepoint of it. */
	if (st->st_batch) {
		if (strncmp(sql, "BEGIN", 5) == 0)
			sql = "SAVEPOINT nm_step";
		else if (strcmp(sql, "COMMIT") == 0)
			sql = "RELEASE nm_step";
		else if (strcmp(sql, "ROLLBACK") == 0)
			sql = "ROLLBACK TO nm_step; RELEASE nm_step";
	}
	if (sqlite3_exec(st->st_w.sc_db, sql, NULL, NULL, &err) != SQLITE_OK) {
		log_warnx("%s: \"%.40s\": %s", __func__, sql,
		    err != NULL ? err : sqlite3_errmsg(st->st_w.sc_db));
		sqlite3_free(err);
		return (-1);
	}
	return (0);
}

/*
 * Prepares sql on a connection (or takes its statement of that text kept
 * from before) and binds its parameters, described by types: 't' a
 * string (NULL binds NULL), 'i' an int64_t.  The connection's lock is
 * held; NULL on error.
 */
static sqlite3_stmt *
store_conn_stmt(struct store_conn *sc, const char *fn, const char *sql,
    const char *types, va_list ap)
{
	struct store_stmt	*ss = NULL;
	sqlite3_stmt		*stmt = NULL;
	const char		*s;
	int			 i, rc = SQLITE_OK;

	/* A statement of this text prepared before and not in use. */
	for (i = 0; i < sc->sc_nstmts; i++) {
		if (sc->sc_stmts[i].ss_sql == sql && !sc->sc_stmts[i].ss_busy) {
			ss = &sc->sc_stmts[i];
			stmt = ss->ss_stmt;
			break;
		}
	}
	if (stmt == NULL) {
		if (sqlite3_prepare_v3(sc->sc_db, sql, -1,
		    SQLITE_PREPARE_PERSISTENT, &stmt, NULL) != SQLITE_OK) {
			log_warnx("%s: prepare: %s", fn,
			    sqlite3_errmsg(sc->sc_db));
			return (NULL);
		}
		if (sc->sc_nstmts < STORE_NSTMTS) {
			ss = &sc->sc_stmts[sc->sc_nstmts++];
			ss->ss_sql = sql;
			ss->ss_stmt = stmt;
		}
	}
	if (ss != NULL)
		ss->ss_busy = 1;
	for (i = 0; types[i] != '\0' && rc == SQLITE_OK; i++) {
		if (types[i] == 'i')
			rc = sqlite3_bind_int64(stmt, i + 1, va_arg(ap, int64_t));
		else if ((s = va_arg(ap, const char *)) == NULL)
			rc = sqlite3_bind_null(stmt, i + 1);
		else
			rc = sqlite3_bind_text(stmt, i + 1, s, -1,
			    SQLITE_TRANSIENT);
	}
	if (rc != SQLITE_OK) {
		log_warnx("%s: bind: %s", fn, sqlite3_errmsg(sc->sc_db));
		store_conn_done(sc, stmt);
		return (NULL);
	}
	return (stmt);
}

/*
 * Done with a statement of store_conn_stmt: a kept one is reset for the
 * next use, another finalized.  Lock held; stmt may be NULL.
 */
static void
store_conn_done(struct store_conn *sc, sqlite3_stmt *stmt)
{
	int	 i;

	if (stmt == NULL)
		return;
	for (i = 0; i < sc->sc_nstmts; i++) {
		if (sc->sc_stmts[i].ss_stmt == stmt) {
			sqlite3_reset(stmt);
			sqlite3_clear_bindings(stmt);
			sc->sc_stmts[i].ss_busy = 0;
			return;
		}
	}
	sqlite3_finalize(stmt);
}

/* Steps to the first row: 0 when there is one, -1 when none or on error. */
static int
store_conn_row(struct store_conn *sc, const char *fn, sqlite3_stmt *stmt)
{
	int	 rc;

	if (stmt == NULL)
		return (-1);
	if ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
		return (0);
	if (rc != SQLITE_DONE)
		log_warnx("%s: %s", fn, sqlite3_errmsg(sc->sc_db));
	return (-1);
}

/* Prepares and binds a statement of the writing connection; see above. */
sqlite3_stmt *
store_db_stmt(struct store *st, const char *fn, const char *sql,
    const char *types, ...)
{
	sqlite3_stmt	*stmt;
	va_list		 ap;

	va_start(ap, types);
	stmt = store_conn_stmt(&st->st_w, fn, sql, types, ap);
	va_end(ap);
	return (stmt);
}

/* The same on the reading connection; store_rlock held. */
sqlite3_stmt *
store_db_rstmt(struct store *st, const char *fn, const char *sql,
    const char *types, ...)
{
	sqlite3_stmt	*stmt;
	va_list		 ap;

	va_start(ap, types);
	stmt = store_conn_stmt(&st->st_r, fn, sql, types, ap);
	va_end(ap);
	return (stmt);
}

/* Done with a statement of store_db_stmt; lock held; stmt may be NULL. */
void
store_db_done(struct store *st, sqlite3_stmt *stmt)
{
	store_conn_done(&st->st_w, stmt);
}

/* Done with a statement of store_db_rstmt; store_rlock held. */
void
store_db_rdone(struct store *st, sqlite3_stmt *stmt)
{
	store_conn_done(&st->st_r, stmt);
}

/* Steps a statement that returns no rows to the end; done with it. */
int
store_db_run(struct store *st, const char *fn, sqlite3_stmt *stmt)
{
	int	 rc;

	if (stmt == NULL)
		return (-1);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
		;
	if (rc != SQLITE_DONE)
		log_warnx("%s: %s", fn, sqlite3_errmsg(st->st_w.sc_db));
	store_db_done(st, stmt);
	return (rc == SQLITE_DONE ? 0 : -1);
}

/* Steps to the first row: 0 when there is one, -1 when none or on error. */
int
store_db_row(struct store *st, const char *fn, sqlite3_stmt *stmt)
{
	return (store_conn_row(&st->st_w, fn, stmt));
}

/* store_db_row on the reading connection; store_rlock held. */
int
store_db_rrow(struct store *st, const char *fn, sqlite3_stmt *stmt)
{
	return (store_conn_row(&st->st_r, fn, stmt));
}

/* Copies a column string into a fixed buffer; -1 if NULL or too long. */
static int
store_copy(char *dst, size_t len, const unsigned char *src)
{
	if (src == NULL || strlen((const char *)src) >= len)
		return (-1);
	memcpy(dst, src, strlen((const char *)src) + 1);
	return (0);
}

/* Brings the schema up to date, one transaction per migration. */
static int
store_db_migrate(struct store *st, char **cause)
{
	sqlite3_stmt	*stmt;
	char		 sql[64];
	int		 v;

	stmt = store_db_stmt(st, __func__, "PRAGMA user_version", "");
	if (store_db_row(st, __func__, stmt) == -1) {
		store_db_done(st, stmt);
		xasprintf(cause, "cannot read the database version");
		return (-1);
	}
	v = sqlite3_column_int(stmt, 0);
	store_db_done(st, stmt);
	if (v > STORE_NMIGRATIONS) {
		xasprintf(cause, "database version %d is newer than %d", v,
		    STORE_NMIGRATIONS);
		return (-1);
	}
	for (; v < STORE_NMIGRATIONS; v++) {
		snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v + 1);
		if (store_db_exec(st, "BEGIN IMMEDIATE") == -1)
			goto fail;
		if (store_db_exec(st, store_migrations[v]) == -1 ||
		    (store_migration_steps[v] != NULL &&
		    store_migration_steps[v](st) == -1) ||
		    store_db_exec(st, sql) == -1 ||
		    store_db_exec(st, "COMMIT") == -1) {
			store_db_exec(st, "ROLLBACK");
			goto fail;
		}
		log_info("%s: database migrated to version %d", __func__,
		    v + 1);
	}
	return (0);
fail:
	xasprintf(cause, "database migration %d failed", v + 1);
	return (-1);
}

/* Opens DIR/nixmirror.db as one of the store's connections. */
static int
store_conn_open(struct store *st, struct store_conn *sc, char **cause)
{
	char	*path;
	int	 rc;

	xasprintf(&path, "%s/nixmirror.db", st->st_dir);
	rc = sqlite3_open_v2(path, &sc->sc_db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
	if (rc != SQLITE_OK) {
		xasprintf(cause, "%s: %s", path, sc->sc_db != NULL ?
		    sqlite3_errmsg(sc->sc_db) : sqlite3_errstr(rc));
		free(path);
		return (-1);
	}
	free(path);
	if (sqlite3_busy_timeout(sc->sc_db, 5000) != SQLITE_OK) {
		xasprintf(cause, "cannot configure the database: %s",
		    sqlite3_errmsg(sc->sc_db));
		return (-1);
	}
	return (0);
}

/* Closes one of the store's connections and its statements. */
static void
store_conn_close(struct store_conn *sc)
{
	int	 i;

	for (i = 0; i < sc->sc_nstmts; i++)
		sqlite3_finalize(sc->sc_stmts[i].ss_stmt);
	sc->sc_nstmts = 0;
	if (sc->sc_db != NULL && sqlite3_close(sc->sc_db) != SQLITE_OK)
		log_warnx("%s: %s", __func__, sqlite3_errmsg(sc->sc_db));
	sc->sc_db = NULL;
}

/*
 * Opens and configures DIR/nixmirror.db: the writing connection, which
 * brings the schema up to date, then the reading one.
 */
static int
store_db_open(struct store *st, char **cause)
{
	if (store_conn_open(st, &st->st_w, cause) == -1)
		return (-1);
	if (store_db_exec(st, "PRAGMA journal_mode=WAL") == -1 ||
	    store_db_exec(st, "PRAGMA synchronous=NORMAL") == -1 ||
	    store_db_exec(st, "PRAGMA foreign_keys=ON") == -1) {
		xasprintf(cause, "cannot configure the database: %s",
		    sqlite3_errmsg(st->st_w.sc_db));
		return (-1);
	}
	if (store_db_migrate(st, cause) == -1)
		return (-1);
	return (store_conn_open(st, &st->st_r, cause));
}

/* Opens (creating and migrating) DIR/nixmirror.db and DIR/blobs. */
struct store *
store_open(const char *dir, char **cause)
{
	struct store		*st;
	pthread_mutexattr_t	 ma;

	st = xcalloc(1, sizeof *st);
	st->st_dir = xstrdup(dir);
	xasprintf(&st->st_blobs, "%s/blobs/sha256", dir);
	xasprintf(&st->st_tmp, "%s/tmp", dir);
	/* Recursive, so that a batch can hold it across the store's calls. */
	if (pthread_mutexattr_init(&ma) != 0 ||
	    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE) != 0 ||
	    pthread_mutex_init(&st->st_mtx, &ma) != 0 ||
	    pthread_mutexattr_destroy(&ma) != 0 ||
	    pthread_mutex_init(&st->st_rmtx, NULL) != 0 ||
	    pthread_mutex_init(&st->st_tmtx, NULL) != 0)
		fatalx("%s: pthread_mutex_init failed", __func__);
	if (store_mkdirs(st->st_blobs) == -1 || store_mkdirs(st->st_tmp) == -1) {
		xasprintf(cause, "%s: %s", dir, strerror(errno));
		goto fail;
	}
	if (store_db_open(st, cause) == -1)
		goto fail;
	store_tmp_clean(st);
	return (st);
fail:
	store_close(st);
	return (NULL);
}

/* Closes the database and frees the store. */
void
store_close(struct store *st)
{
	if (st == NULL)
		return;
	if (st->st_w.sc_db != NULL)
		store_touch_flush(st);
	store_conn_close(&st->st_r);
	store_conn_close(&st->st_w);
	if (st->st_s3 != NULL) {
		s3_free(st->st_s3);
		pthread_mutex_destroy(&st->st_umtx);
		pthread_cond_destroy(&st->st_ucond);
	}
	pthread_mutex_destroy(&st->st_mtx);
	pthread_mutex_destroy(&st->st_rmtx);
	pthread_mutex_destroy(&st->st_tmtx);
	free(st->st_touch);
	free(st->st_dir);
	free(st->st_blobs);
	free(st->st_tmp);
	free(st);
}

/* Records a blob whose file is in place; the caller holds the store lock. */
int
store_db_blob_add_locked(struct store *st, const char *digest, uint64_t size,
    const char *media_type)
{
	int64_t	 now = time(NULL);
	int	 rv = -1;

	char	*key;

	store_remote_begin(st);
	if (store_db_run(st, __func__, store_db_stmt(st, __func__,
	    "INSERT OR IGNORE INTO blobs (digest, size, media_type, created,"
	    " last_access) VALUES (?, ?, ?, ?, ?)", "titii", digest,
	    (int64_t)size, media_type, now, now)) == -1)
		goto out;
	if (st->st_s3 != NULL && sqlite3_changes(st->st_w.sc_db) > 0 &&
	    (key = store_remote_blob_key(digest)) != NULL) {
		store_remote_queue(st, key, digest, NULL);
		free(key);
	}
	if (media_type != NULL && store_db_run(st, __func__,
	    store_db_stmt(st, __func__, "UPDATE blobs SET media_type = ?"
	    " WHERE digest = ? AND media_type IS NULL", "tt", media_type,
	    digest)) == -1)
		goto out;
	/* Stored again: it is in use now, so eviction leaves it alone. */
	if (store_db_run(st, __func__, store_db_stmt(st, __func__,
	    "UPDATE blobs SET last_access = ? WHERE digest = ?"
	    " AND last_access < ?", "iti", now, digest, now)) == -1)
		goto out;
	rv = 0;
out:
	return (store_remote_end(st, rv));
}

/* Records a blob whose file is in place; takes the store lock. */
int
store_db_blob_add(struct store *st, const char *digest, uint64_t size,
    const char *media_type)
{
	int	 rv;

	store_lock(st);
	rv = store_db_blob_add_locked(st, digest, size, media_type);
	store_unlock(st);
	return (rv);
}

/* Media type and size of a stored blob; 0, or -1 when unknown. */
int
store_blob_stat(struct store *st, const char *digest, uint64_t *size,
    char **media_type)
{
	sqlite3_stmt		*stmt;
	const unsigned char	*mt;
	struct stat		 sb;
	char			*path;
	int			 rv = -1;

	if ((path = store_blob_path(st, digest)) == NULL)
		return (-1);
	store_rlock(st);
	stmt = store_db_rstmt(st, __func__, "SELECT size, media_type FROM blobs"
	    " WHERE digest = ?", "t", digest);
	if (store_db_rrow(st, __func__, stmt) == 0 && stat(path, &sb) == 0) {
		if (size != NULL)
			*size = (uint64_t)sqlite3_column_int64(stmt, 0);
		if (media_type != NULL) {
			mt = sqlite3_column_text(stmt, 1);
			*media_type = mt != NULL ?
			    xstrdup((const char *)mt) : NULL;
		}
		rv = 0;
	}
	store_db_rdone(st, stmt);
	store_runlock(st);
	free(path);
	return (rv);
}

/* Writes the batched blob accesses, in one transaction. */
void
store_touch_flush(struct store *st)
{
	char	(*v)[NM_DIGEST_SIZE];
	size_t	 i, n;
	int64_t	 now = (int64_t)time(NULL);

	pthread_mutex_lock(&st->st_tmtx);
	v = st->st_touch;
	n = st->st_ntouch;
	st->st_touch = NULL;
	st->st_ntouch = st->st_sizetouch = 0;
	st->st_tqueued = 0;
	pthread_mutex_unlock(&st->st_tmtx);
	if (n == 0) {
		free(v);
		return;
	}
	store_lock(st);
	if (store_db_exec(st, "BEGIN") == 0) {
		for (i = 0; i < n; i++)
			store_db_run(st, __func__, store_db_stmt(st, __func__,
			    "UPDATE blobs SET last_access = ? WHERE digest = ?",
			    "it", now, v[i]));
		if (store_db_exec(st, "COMMIT") == -1)
			store_db_exec(st, "ROLLBACK");
	}
	store_unlock(st);
	free(v);
}

/* The pool's job of writing the batched accesses. */
static void
store_touch_job(void *arg)
{
	store_touch_flush(arg);
}

/*
 * Records an access to a blob (for later eviction).  The event loop calls
 * this for every blob and manifest it serves, so it only notes the digest:
 * a job of the worker pool writes what gathered in one transaction (or,
 * without a pool, this call does).
 */
void
store_blob_touch(struct store *st, const char *digest)
{
	size_t	 i;
	int	 queue;

	if (!policy_digest_valid(digest))
		return;
	pthread_mutex_lock(&st->st_tmtx);
	for (i = 0; i < st->st_ntouch; i++)
		if (strcmp(st->st_touch[i], digest) == 0)
			break;
	if (i == st->st_ntouch) {
		if (st->st_ntouch == st->st_sizetouch) {
			st->st_sizetouch = st->st_sizetouch == 0 ? 16 :
			    st->st_sizetouch * 2;
			st->st_touch = xreallocarray(st->st_touch,
			    st->st_sizetouch, sizeof *st->st_touch);
		}
		snprintf(st->st_touch[st->st_ntouch++], NM_DIGEST_SIZE, "%s",
		    digest);
	}
	if ((queue = !st->st_tqueued))
		st->st_tqueued = 1;
	pthread_mutex_unlock(&st->st_tmtx);
	if (queue && (!work_available() ||
	    work_submit(store_touch_job, NULL, st) == -1))
		store_touch_flush(st);
}

/* Marks a stored blob as a manifest of the given media type. */
int
store_manifest_put(struct store *st, const char *digest,
    const char *media_type)
{
	int	 rv;

	if (!policy_digest_valid(digest) || media_type == NULL)
		return (-1);
	store_lock(st);
	rv = store_db_run(st, __func__, store_db_stmt(st, __func__,
	    "INSERT OR REPLACE INTO manifests (digest, media_type, created)"
	    " VALUES (?, ?, ?)", "tti", digest, media_type,
	    (int64_t)time(NULL)));
	store_unlock(st);
	return (rv);
}

/* Looks up the layer built from the store path set key. */
int
store_layer_get(struct store *st, const char *key, struct store_layer *sl)
{
	sqlite3_stmt	*stmt;
	int		 rv = -1;

	store_lock(st);
	stmt = store_db_stmt(st, __func__, "SELECT digest, diff_id, size"
	    " FROM layers WHERE key = ?", "t", key);
	if (store_db_row(st, __func__, stmt) == 0 &&
	    store_copy(sl->sl_digest, sizeof sl->sl_digest,
	    sqlite3_column_text(stmt, 0)) == 0 &&
	    store_copy(sl->sl_diffid, sizeof sl->sl_diffid,
	    sqlite3_column_text(stmt, 1)) == 0) {
		sl->sl_size = (uint64_t)sqlite3_column_int64(stmt, 2);
		rv = 0;
	}
	store_db_done(st, stmt);
	store_unlock(st);
	return (rv);
}

/* Records (or replaces) the layer built from the store path set key. */
int
store_layer_put(struct store *st, const char *key,
    const struct store_layer *sl)
{
	char	*okey;
	int	 rv;

	store_lock(st);
	store_remote_begin(st);
	rv = store_db_run(st, __func__, store_db_stmt(st, __func__,
	    "INSERT OR REPLACE INTO layers (key, digest, diff_id, size,"
	    " created) VALUES (?, ?, ?, ?, ?)", "tttii", key, sl->sl_digest,
	    sl->sl_diffid, (int64_t)sl->sl_size, (int64_t)time(NULL)));
	if (rv == 0 && st->st_s3 != NULL &&
	    (okey = store_remote_layer_key(key)) != NULL) {
		store_remote_queue_json(st, okey, json_pack("{s:s, s:s, s:I}",
		    "digest", sl->sl_digest, "diff_id", sl->sl_diffid, "size",
		    (json_int_t)sl->sl_size));
		free(okey);
	}
	rv = store_remote_end(st, rv);
	store_unlock(st);
	return (rv);
}

/* Looks up the manifests of the image key. */
int
store_image_get(struct store *st, const char *key, struct store_image *si)
{
	sqlite3_stmt	*stmt;
	int		 rv = -1;

	store_lock(st);
	stmt = store_db_stmt(st, __func__, "SELECT docker_digest, oci_digest,"
	    " created FROM images WHERE key = ?", "t", key);
	if (store_db_row(st, __func__, stmt) == 0 &&
	    store_copy(si->si_docker, sizeof si->si_docker,
	    sqlite3_column_text(stmt, 0)) == 0 &&
	    store_copy(si->si_oci, sizeof si->si_oci,
	    sqlite3_column_text(stmt, 1)) == 0) {
		si->si_created = (time_t)sqlite3_column_int64(stmt, 2);
		rv = 0;
	}
	store_db_done(st, stmt);
	store_unlock(st);
	return (rv);
}

/* Records (or replaces) the manifests of the image key. */
int
store_image_put(struct store *st, const char *key,
    const struct store_image *si)
{
	char	*okey;
	int	 rv;

	store_lock(st);
	store_remote_begin(st);
	rv = store_db_run(st, __func__, store_db_stmt(st, __func__,
	    "INSERT OR REPLACE INTO images (key, docker_digest, oci_digest,"
	    " created) VALUES (?, ?, ?, ?)", "ttti", key, si->si_docker,
	    si->si_oci, (int64_t)si->si_created));
	if (rv == 0 && st->st_s3 != NULL) {
		okey = store_remote_image_key(key);
		store_remote_queue_json(st, okey, json_pack("{s:s, s:s, s:I}",
		    "docker", si->si_docker, "oci", si->si_oci, "created",
		    (json_int_t)si->si_created));
		free(okey);
	}
	rv = store_remote_end(st, rv);
	store_unlock(st);
	return (rv);
}

/* Appends a resolution of a git tag to a commit, stamped now. */
int
store_tag_put(struct store *st, const char *source, const char *tag,
    const char *commit)
{
	int	 rv;

	if (strlen(commit) > 40)
		return (-1);
	store_lock(st);
	rv = store_db_run(st, __func__, store_db_stmt(st, __func__,
	    "INSERT INTO tag_history (source, tag, commit_id, resolved)"
	    " VALUES (?, ?, ?, ?)", "ttti", source, tag, commit,
	    (int64_t)time(NULL)));
	store_unlock(st);
	return (rv);
}

/* The newest resolution not older than max_age seconds (any if < 0). */
int
store_tag_get(struct store *st, const char *source, const char *tag,
    int max_age, char commit[41])
{
	sqlite3_stmt	*stmt;
	int64_t		 min;
	int		 rv = -1;

	min = max_age < 0 ? INT64_MIN : (int64_t)time(NULL) - max_age;
	store_lock(st);
	stmt = store_db_stmt(st, __func__, "SELECT commit_id FROM tag_history"
	    " WHERE source = ? AND tag = ? AND resolved >= ?"
	    " ORDER BY resolved DESC, id DESC LIMIT 1", "tti", source, tag,
	    min);
	if (store_db_row(st, __func__, stmt) == 0 &&
	    store_copy(commit, 41, sqlite3_column_text(stmt, 0)) == 0)
		rv = 0;
	store_db_done(st, stmt);
	store_unlock(st);
	return (rv);
}

/*
 * Records that an upstream tag points at a digest now: the newest row's
 * check time moves on when the digest is the same, else a row is added,
 * so the history of the tag stays.
 */
int
store_utag_put(struct store *st, const char *ns, const char *repo,
    const char *tag, const char *digest)
{
	return (store_utag_put_at(st, ns, repo, tag, digest,
	    (int64_t)time(NULL)));
}

/* store_utag_put, checked at the time given (by another replica). */
int
store_utag_put_at(struct store *st, const char *ns, const char *repo,
    const char *tag, const char *digest, int64_t now)
{
	sqlite3_stmt	*stmt;
	char		*key;
	int64_t		 id = -1;
	int		 rv;

	store_lock(st);
	store_remote_begin(st);
	stmt = store_db_stmt(st, __func__, "SELECT id, digest FROM"
	    " upstream_tags WHERE ns = ? AND repo = ? AND tag = ?"
	    " ORDER BY id DESC LIMIT 1", "ttt", ns, repo, tag);
	if (store_db_row(st, __func__, stmt) == 0 &&
	    strcmp((const char *)sqlite3_column_text(stmt, 1), digest) == 0)
		id = sqlite3_column_int64(stmt, 0);
	store_db_done(st, stmt);
	if (id != -1)
		rv = store_db_run(st, __func__, store_db_stmt(st, __func__,
		    "UPDATE upstream_tags SET checked = ? WHERE id = ?", "ii",
		    now, id));
	else
		rv = store_db_run(st, __func__, store_db_stmt(st, __func__,
		    "INSERT INTO upstream_tags (ns, repo, tag, digest,"
		    " first_seen, checked) VALUES (?, ?, ?, ?, ?, ?)", "ttttii",
		    ns, repo, tag, digest, now, now));
	if (rv == 0 && st->st_s3 != NULL &&
	    (key = store_remote_repo_key(ns, repo, "_tags", tag)) != NULL) {
		store_remote_queue_json(st, key, json_pack("{s:s, s:I}",
		    "digest", digest, "checked", (json_int_t)now));
		free(key);
	}
	rv = store_remote_end(st, rv);
	store_unlock(st);
	return (rv);
}

/* The digest an upstream tag pointed at last, and when that was checked. */
int
store_utag_get(struct store *st, const char *ns, const char *repo,
    const char *tag, char digest[NM_DIGEST_SIZE], time_t *checked)
{
	sqlite3_stmt	*stmt;
	int		 rv = -1;

	store_rlock(st);
	stmt = store_db_rstmt(st, __func__, "SELECT digest, checked FROM"
	    " upstream_tags WHERE ns = ? AND repo = ? AND tag = ?"
	    " ORDER BY id DESC LIMIT 1", "ttt", ns, repo, tag);
	if (store_db_rrow(st, __func__, stmt) == 0 &&
	    store_copy(digest, NM_DIGEST_SIZE,
	    sqlite3_column_text(stmt, 0)) == 0) {
		*checked = (time_t)sqlite3_column_int64(stmt, 1);
		rv = 0;
	}
	store_db_rdone(st, stmt);
	store_runlock(st);
	return (rv);
}

/* Keeps a list an upstream answered (JSON text); 0 or -1. */
int
store_list_put(struct store *st, const char *ns, const char *repo,
    const char *kind, const char *body)
{
	int	 rv;

	store_lock(st);
	rv = store_db_run(st, __func__, store_db_stmt(st, __func__,
	    "INSERT OR REPLACE INTO lists (ns, repo, kind, body, fetched)"
	    " VALUES (?, ?, ?, ?, ?)", "tttti", ns, repo, kind, body,
	    (int64_t)time(NULL)));
	store_unlock(st);
	return (rv);
}

/* A kept list (caller frees *body) and when it was fetched; 0 or -1. */
int
store_list_get(struct store *st, const char *ns, const char *repo,
    const char *kind, char **body, time_t *fetched)
{
	sqlite3_stmt		*stmt;
	const unsigned char	*text;
	int			 rv = -1;

	*body = NULL;
	store_rlock(st);
	stmt = store_db_rstmt(st, __func__, "SELECT body, fetched FROM lists"
	    " WHERE ns = ? AND repo = ? AND kind = ?", "ttt", ns, repo, kind);
	if (store_db_rrow(st, __func__, stmt) == 0 &&
	    (text = sqlite3_column_text(stmt, 0)) != NULL) {
		*body = xstrdup((const char *)text);
		*fetched = (time_t)sqlite3_column_int64(stmt, 1);
		rv = 0;
	}
	store_db_rdone(st, stmt);
	store_runlock(st);
	return (rv);
}

/*
 * The tags of an upstream repository the mirror has resolved, sorted and
 * each once: a JSON array's text (caller frees), or NULL when none.
 */
char *
store_utag_list(struct store *st, const char *ns, const char *repo)
{
	sqlite3_stmt	*stmt;
	json_t		*arr;
	char		*text = NULL;

	arr = json_array();
	store_rlock(st);
	stmt = store_db_rstmt(st, __func__, "SELECT DISTINCT tag FROM"
	    " upstream_tags WHERE ns = ? AND repo = ? ORDER BY tag", "tt", ns,
	    repo);
	if (stmt != NULL) {
		while (sqlite3_step(stmt) == SQLITE_ROW)
			json_array_append_new(arr, json_string((const char *)
			    sqlite3_column_text(stmt, 0)));
	}
	store_db_rdone(st, stmt);
	store_runlock(st);
	if (json_array_size(arr) > 0)
		text = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	return (text);
}

/* The bytes and the number of the stored blobs; 0 or -1. */
int
store_stats(struct store *st, uint64_t *bytes, uint64_t *blobs)
{
	sqlite3_stmt	*stmt;
	int		 rv = -1;

	*bytes = *blobs = 0;
	store_rlock(st);
	stmt = store_db_rstmt(st, __func__, "SELECT COALESCE(SUM(size), 0),"
	    " COUNT(*) FROM blobs", "");
	if (store_db_rrow(st, __func__, stmt) == 0) {
		*bytes = (uint64_t)sqlite3_column_int64(stmt, 0);
		*blobs = (uint64_t)sqlite3_column_int64(stmt, 1);
		rv = 0;
	}
	store_db_rdone(st, stmt);
	store_runlock(st);
	return (rv);
}
