/*
 * store/store_int.h: what db.c and blob.c share and nobody else sees.
 */
#ifndef STORE_INT_H
#define STORE_INT_H

#include <pthread.h>
#include <sqlite3.h>

#include "store/store.h"

#define STORE_NSTMTS	48	/* prepared statements kept */

/* A prepared statement kept for reuse, by the address of its text. */
struct store_stmt {
	const char	*ss_sql;
	sqlite3_stmt	*ss_stmt;
	int		 ss_busy;
};

/* A database connection and the statements kept for it. */
struct store_conn {
	sqlite3			*sc_db;
	struct store_stmt	 sc_stmts[STORE_NSTMTS];
	int			 sc_nstmts;
};

struct store {
	char		*st_dir;	/* data directory */
	char		*st_blobs;	/* DIR/blobs/sha256 */
	char		*st_tmp;	/* DIR/tmp */
	struct store_conn st_w;		/* writes, and reads of writers */
	pthread_mutex_t	 st_mtx;	/* serialises st_w (recursive) */
	int		 st_batch;	/* in store_batch_begin (st_mtx) */
	struct store_conn st_r;		/* only reads: the loop's lookups */
	pthread_mutex_t	 st_rmtx;	/* serialises st_r */
	/* Blob accesses not yet written, applied in batches off the loop. */
	pthread_mutex_t	 st_tmtx;
	char		(*st_touch)[NM_DIGEST_SIZE];
	size_t		 st_ntouch;
	size_t		 st_sizetouch;
	int		 st_tqueued;	/* a job to write them is queued */
	/* The shared bucket (store/remote.c), or NULL. */
	struct s3	*st_s3;
	pthread_mutex_t	 st_umtx;	/* the uploader's flags */
	pthread_cond_t	 st_ucond;	/* its wait between retries */
	int		 st_urunning;	/* an upload job runs */
	int		 st_uagain;	/* more was queued meanwhile */
	int		 st_ustop;	/* shutting down */
};

/* store/db.c */
/* Records a blob whose file is in place; 0 or -1. */
int	store_db_blob_add(struct store *, const char *digest, uint64_t size,
	    const char *media_type);
/* The same, for a caller that holds the store lock. */
int	store_db_blob_add_locked(struct store *, const char *digest,
	    uint64_t size, const char *media_type);
/* Runs constant SQL without parameters; 0 or -1. */
int	store_db_exec(struct store *, const char *sql);
/*
 * Prepares sql with its parameters bound, as types says: 't' a string
 * (NULL binds NULL), 'i' an int64_t.  Lock held; NULL on error.
 */
sqlite3_stmt *store_db_stmt(struct store *, const char *fn, const char *sql,
	    const char *types, ...);
/* Resets a statement for reuse (or finalizes it); lock held. */
void	store_db_done(struct store *, sqlite3_stmt *);
/* store_db_stmt, store_db_done and store_db_row on the reading connection. */
sqlite3_stmt *store_db_rstmt(struct store *, const char *fn, const char *sql,
	    const char *types, ...);
void	store_db_rdone(struct store *, sqlite3_stmt *);
int	store_db_rrow(struct store *, const char *fn, sqlite3_stmt *);
/* Steps a statement without rows to its end and finalizes it; 0 or -1. */
int	store_db_run(struct store *, const char *fn, sqlite3_stmt *);
/* Steps to the first row: 0 when there is one, -1 when none or on error. */
int	store_db_row(struct store *, const char *fn, sqlite3_stmt *);
/* Writes the batched blob accesses, in one transaction. */
void	store_touch_flush(struct store *);
/* The store lock (SQLite use, and placing blob files against gc). */
void	store_lock(struct store *);
void	store_unlock(struct store *);
/*
 * store/link.c: a stored manifest or index (at most 4 MiB) as a JSON
 * object, or NULL.
 */
struct json_t;
struct json_t	*store_manifest_json(struct store *, const char *digest);
/* store/link.c: the links backfill of migration 4; lock held. */
int	store_link_backfill(struct store *);
/* The lock of the reading connection. */
void	store_rlock(struct store *);
void	store_runlock(struct store *);

/*
 * store/remote.c: queues an object for the bucket, in the caller's
 * transaction (lock held): a blob's (digest) or a small one's (body).
 * Nothing is queued without a bucket, nor for what came from it.
 */
void	store_remote_queue(struct store *, const char *key, const char *digest,
	    const char *body);
/* A record and its queueing as one write (a savepoint); lock held. */
void	store_remote_begin(struct store *);
int	store_remote_end(struct store *, int rv);
/* The same for a JSON object, which it frees (NULL: nothing queued). */
void	store_remote_queue_json(struct store *, const char *key,
	    struct json_t *);
/* The object keys of a blob, a Nix image and a layer (caller frees). */
char	*store_remote_blob_key(const char *digest);
char	*store_remote_image_key(const char *key);
char	*store_remote_layer_key(const char *key);
/* The object key of (ns, repo)'s KIND ("_tags", "_links"), or NULL. */
char	*store_remote_repo_key(const char *ns, const char *repo,
	    const char *kind, const char *name);
/* store/db.c: store_utag_put with the check's time. */
int	store_utag_put_at(struct store *, const char *ns, const char *repo,
	    const char *tag, const char *digest, int64_t checked);

#endif /* STORE_INT_H */
