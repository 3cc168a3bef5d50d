/*
 * store/store_int.h: what db.c and blob.c share and nobody else sees.
 */
#ifndef STORE_INT_H
#define STORE_INT_H

#include <pthread.h>
#include <sqlite3.h>

#include "store/store.h"

struct store {
	char		*st_dir;	/* data directory */
	char		*st_blobs;	/* DIR/blobs/sha256 */
	char		*st_tmp;	/* DIR/tmp */
	sqlite3		*st_db;
	pthread_mutex_t	 st_mtx;	/* serialises every SQLite use */
};

/* store/db.c */
/* Records a blob whose file is in place; 0 or -1. */
int	store_db_blob_add(struct store *, const char *digest, uint64_t size,
	    const char *media_type);
/* The same, for a caller that holds the store lock. */
int	store_db_blob_add_locked(struct store *, const char *digest,
	    uint64_t size, const char *media_type);
/* The store lock (SQLite use, and placing blob files against gc). */
void	store_lock(struct store *);
void	store_unlock(struct store *);

#endif /* STORE_INT_H */
