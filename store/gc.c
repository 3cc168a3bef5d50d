/*
 * store/gc.c: the store quota: least-recently-used eviction of blobs, and
 * removal of orphan files.
 *
 * What is kept (never evicted), whatever the quota:
 *  - a pinned manifest (a row in the pins table, by digest) and everything
 *    it references, recursively (an index's manifests, a manifest's config
 *    and layers).  Pins are explicit: images built for a git commit are not
 *    pinned by themselves, because with --pkgs-repo every image is, and the
 *    quota could then never be met;
 *  - a blob accessed in the last minute (NIXMIRROR_GC_GRACE seconds, for
 *    tests), and what it references: serving a blob opens and touches it,
 *    so a blob being served is either recent or already open (an unlinked
 *    file stays readable through its descriptor).  Downloads and builds in
 *    progress live in DIR/tmp, which gc never looks at;
 *  - a blob referenced by a manifest that is kept.
 *
 * The others are evicted in the order of their effective last access, the
 * newest access of the blob and of every manifest above it, manifests
 * before what they reference, so a manifest never outlives its layers.
 * Evicting a blob deletes, in one transaction, the rows that name it
 * (images built on a manifest, upstream tags pointing at it, the manifest
 * row, the cached layer row, so the next pull builds or fetches it again)
 * and then its blobs row; only then is the file unlinked, so a crash leaves
 * at worst an orphan file, never a row without its file.  Orphan files are
 * removed once older than the grace period (a commit renames the file into
 * place just before it writes the row).
 *
 * The store mutex is taken per batch of GC_BATCH blobs, never for the whole
 * run, so the daemon goes on serving while gc runs in its worker thread.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

#define GC_BATCH	32		/* blobs per transaction */
#define GC_SCAN		512		/* rows per locked SELECT */
#define GC_SCAN_S	"512"
#define GC_GRACE	60		/* seconds a used blob is safe */
#define GC_MAX_MANIFEST	(4 * 1024 * 1024)

enum gc_level {
	GC_INDEX = 0,			/* evicted first */
	GC_MANIFEST,
	GC_BLOB,
};

struct gc_blob {
	char		 gb_digest[NM_DIGEST_SIZE];
	uint64_t	 gb_size;
	int64_t		 gb_eff;	/* newest access of it and its parents */
	enum gc_level	 gb_level;
	int		 gb_keep;
	int		 gb_lost;	/* its file has gone */
	int		 gb_gone;	/* evicted by this run */
	int		 gb_missing;	/* children not stored (manifests) */
};

struct gc_edge {
	size_t		 ge_parent;
	size_t		 ge_child;
};

struct gc_run {
	struct store		*gr_st;
	struct gc_blob		*gr_blobs;	/* sorted by digest */
	size_t			 gr_n;
	struct gc_edge		*gr_edges;
	size_t			 gr_nedges;
	size_t			 gr_edgecap;
	int64_t			 gr_start;
	int64_t			 gr_cutoff;	/* accessed since: kept */
	uint64_t		 gr_total;
	struct store_gc_result	*gr_res;
};

struct gc_job {
	struct store		*gj_st;
	uint64_t		 gj_max;
};

static pthread_mutex_t	 gc_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	 gc_cond = PTHREAD_COND_INITIALIZER;
static int		 gc_running;	/* a gc holds the store */
static int		 gc_stop;	/* store_gc_wait: stop between batches */

static sqlite3_stmt *gc_stmt(struct store *, const char *, const char *);
static int	 gc_exec(struct store *, const char *, const char *);
static int	 gc_grace(void);
static int	 gc_stopping(void);
static ssize_t	 gc_find(struct gc_run *, const char *);
static int	 gc_load_blobs(struct gc_run *);
static void	 gc_add_refs(struct gc_run *, ssize_t, const char *, int);
static void	 gc_parse(struct gc_run *, ssize_t, const char *, int);
static int	 gc_load_manifests(struct gc_run *, int64_t, int);
static int	 gc_load_pins(struct gc_run *);
static int	 gc_load_outbox(struct gc_run *);
static void	 gc_propagate(struct gc_run *);
static int	 gc_images_check(struct gc_run *);
static int	 gc_order_cmp(const void *, const void *);
static int	 gc_delete_rows(struct gc_run *, size_t);
static int	 gc_still_old(struct gc_run *, size_t);
static int	 gc_evict_batch(struct gc_run *, const size_t *, size_t);
static int	 gc_evict(struct gc_run *, uint64_t);
static void	 gc_orphans_dir(struct gc_run *, const char *);
static void	 gc_orphans(struct gc_run *);
static int	 gc_total(struct store *, uint64_t *);
static int	 gc_run(struct store *, uint64_t, struct store_gc_result *,
		    char **);
static void	 gc_job(void *);

/* Prepares sql with an optional text parameter; lock held; NULL on error. */
static sqlite3_stmt *
gc_stmt(struct store *st, const char *sql, const char *arg)
{
	return (store_db_stmt(st, __func__, sql, arg != NULL ? "t" : "", arg));
}

/* Runs sql that returns no rows, with an optional text parameter. */
static int
gc_exec(struct store *st, const char *sql, const char *arg)
{
	return (store_db_run(st, __func__, gc_stmt(st, sql, arg)));
}

/* Seconds a used blob (or a new orphan file) is safe from gc. */
static int
gc_grace(void)
{
	const char	*e;
	char		*end;
	long		 v;

	/* A knob for the tests, which cannot wait a minute. */
	if ((e = getenv("NIXMIRROR_GC_GRACE")) == NULL || *e == '\0')
		return (GC_GRACE);
	v = strtol(e, &end, 10);
	if (*end != '\0' || v < 0 || v > 86400)
		return (GC_GRACE);
	return ((int)v);
}

/* Whether store_gc_wait asked the running gc to stop. */
static int
gc_stopping(void)
{
	int	 stop;

	pthread_mutex_lock(&gc_mtx);
	stop = gc_stop;
	pthread_mutex_unlock(&gc_mtx);
	return (stop);
}

/* The index of a digest in the run's sorted blobs, or -1. */
static ssize_t
gc_find(struct gc_run *gr, const char *digest)
{
	size_t	 lo = 0, hi = gr->gr_n, mid;
	int	 c;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		c = strcmp(gr->gr_blobs[mid].gb_digest, digest);
		if (c == 0)
			return ((ssize_t)mid);
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (-1);
}

/*
 * Reads every blob row, GC_SCAN at a time in digest order, and checks
 * that its file is there.
 */
static int
gc_load_blobs(struct gc_run *gr)
{
	struct store	*st = gr->gr_st;
	sqlite3_stmt	*stmt;
	struct gc_blob	*gb;
	struct stat	 sb;
	char		 last[NM_DIGEST_SIZE] = "", *path;
	size_t		 cap = 0, got;
	int		 rc;

	do {
		got = 0;
		store_lock(st);
		stmt = gc_stmt(st, "SELECT digest, size, last_access FROM blobs"
		    " WHERE digest > ? ORDER BY digest LIMIT " GC_SCAN_S, last);
		while (stmt != NULL && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
			const char *d = (const char *)sqlite3_column_text(stmt, 0);

			got++;
			if (d == NULL || !policy_digest_valid(d))
				continue;	/* not ours: never touched */
			if (gr->gr_n == cap) {
				cap = cap == 0 ? GC_SCAN : cap * 2;
				gr->gr_blobs = xreallocarray(gr->gr_blobs, cap,
				    sizeof *gr->gr_blobs);
			}
			gb = &gr->gr_blobs[gr->gr_n++];
			memset(gb, 0, sizeof *gb);
			memcpy(gb->gb_digest, d, strlen(d) + 1);
			memcpy(last, d, strlen(d) + 1);
			gb->gb_size = (uint64_t)sqlite3_column_int64(stmt, 1);
			gb->gb_eff = sqlite3_column_int64(stmt, 2);
			gb->gb_level = GC_BLOB;
			gb->gb_keep = gb->gb_eff >= gr->gr_cutoff;
			gr->gr_total += gb->gb_size;
		}
		store_db_done(st, stmt);
		store_unlock(st);
		if (stmt == NULL)
			return (-1);
	} while (got == GC_SCAN);
	for (got = 0; got < gr->gr_n; got++) {
		gb = &gr->gr_blobs[got];
		path = store_blob_path(st, gb->gb_digest);
		if (lstat(path, &sb) == -1 && errno == ENOENT)
			gb->gb_lost = 1;
		free(path);
	}
	return (0);
}

/* Records that manifest p references digest d (keep: d must stay). */
static void
gc_add_refs(struct gc_run *gr, ssize_t p, const char *d, int keep)
{
	ssize_t	 c;

	if (d == NULL || !policy_digest_valid(d))
		return;
	if ((c = gc_find(gr, d)) == -1) {
		if (p != -1)
			gr->gr_blobs[p].gb_missing++;
		return;
	}
	if (keep)
		gr->gr_blobs[c].gb_keep = 1;
	if (p == -1)
		return;
	if (gr->gr_nedges == gr->gr_edgecap) {
		gr->gr_edgecap = gr->gr_edgecap == 0 ? 256 :
		    gr->gr_edgecap * 2;
		gr->gr_edges = xreallocarray(gr->gr_edges, gr->gr_edgecap,
		    sizeof *gr->gr_edges);
	}
	gr->gr_edges[gr->gr_nedges].ge_parent = (size_t)p;
	gr->gr_edges[gr->gr_nedges].ge_child = (size_t)c;
	gr->gr_nedges++;
}

/*
 * Reads a stored manifest or index and records what it references: its
 * config, layers and child manifests.  p is its index, or -1 for a
 * manifest newer than the scan, whose references are then kept.
 */
static void
gc_parse(struct gc_run *gr, ssize_t p, const char *digest, int keep)
{
	static const char *const lists[] = { "layers", "manifests", "blobs" };
	json_t		*root, *v;
	json_error_t	 err;
	struct stat	 sb;
	char		*path;
	size_t		 i, j;

	if ((path = store_blob_path(gr->gr_st, digest)) == NULL)
		return;
	root = NULL;
	if (stat(path, &sb) == 0 && sb.st_size <= GC_MAX_MANIFEST)
		root = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
	free(path);
	if (root == NULL || !json_is_object(root)) {
		json_decref(root);
		return;
	}
	gc_add_refs(gr, p, json_string_value(json_object_get(
	    json_object_get(root, "config"), "digest")), keep);
	for (i = 0; i < sizeof lists / sizeof lists[0]; i++) {
		json_array_foreach(json_object_get(root, lists[i]), j, v)
			gc_add_refs(gr, p, json_string_value(
			    json_object_get(v, "digest")), keep);
	}
	json_decref(root);
}

/*
 * Reads the manifest rows created at or after since (0: all) and what
 * they reference.  For all, it sets levels and edges; for the newer ones,
 * which the scan may not know, it keeps what they reference.
 */
static int
gc_load_manifests(struct gc_run *gr, int64_t since, int keep)
{
	struct store	*st = gr->gr_st;
	sqlite3_stmt	*stmt;
	char		(*list)[NM_DIGEST_SIZE] = NULL;
	const char	*mt;
	int		*index = NULL;
	size_t		 n = 0, cap = 0, i;
	ssize_t		 p;
	int		 rc, ok;

	store_lock(st);
	if ((stmt = gc_stmt(st, "SELECT digest, media_type FROM manifests"
	    " WHERE created >= ?", NULL)) != NULL &&
	    sqlite3_bind_int64(stmt, 1, since) != SQLITE_OK) {
		store_db_done(st, stmt);
		stmt = NULL;
	}
	while (stmt != NULL && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const char *d = (const char *)sqlite3_column_text(stmt, 0);

		mt = (const char *)sqlite3_column_text(stmt, 1);
		if (d == NULL || !policy_digest_valid(d))
			continue;
		if (n == cap) {
			cap = cap == 0 ? 64 : cap * 2;
			list = xreallocarray(list, cap, sizeof *list);
			index = xreallocarray(index, cap, sizeof *index);
		}
		memcpy(list[n], d, strlen(d) + 1);
		index[n++] = mt != NULL && (strstr(mt, "index") != NULL ||
		    strstr(mt, "manifest.list") != NULL);
	}
	ok = stmt != NULL && rc == SQLITE_DONE;
	store_db_done(st, stmt);
	store_unlock(st);
	for (i = 0; ok && i < n; i++) {
		p = keep ? -1 : gc_find(gr, list[i]);
		if (!keep && p == -1)
			continue;
		if (p != -1)
			gr->gr_blobs[p].gb_level = index[i] ? GC_INDEX :
			    GC_MANIFEST;
		gc_parse(gr, p, list[i], keep);
	}
	free(list);
	free(index);
	return (ok ? 0 : -1);
}

/* Marks the blobs whose digests a query selects as kept. */
static int
gc_keep_selected(struct gc_run *gr, const char *sql)
{
	sqlite3_stmt	*stmt;
	ssize_t		 i;
	int		 rc;

	store_lock(gr->gr_st);
	stmt = gc_stmt(gr->gr_st, sql, NULL);
	while (stmt != NULL && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const char *d = (const char *)sqlite3_column_text(stmt, 0);

		if (d != NULL && (i = gc_find(gr, d)) != -1)
			gr->gr_blobs[i].gb_keep = 1;
	}
	store_db_done(gr->gr_st, stmt);
	store_unlock(gr->gr_st);
	return (stmt == NULL ? -1 : 0);
}

/* Marks the pinned manifests as kept. */
static int
gc_load_pins(struct gc_run *gr)
{
	return (gc_keep_selected(gr, "SELECT digest FROM pins"));
}

/*
 * Marks the blobs still queued for the shared bucket as kept: evicted
 * before they went up, they would be lost to the other replicas.
 */
static int
gc_load_outbox(struct gc_run *gr)
{
	return (gc_keep_selected(gr, "SELECT digest FROM remote_outbox"
	    " WHERE digest IS NOT NULL"));
}

/*
 * Pushes keep and the effective access time down from manifests to what
 * they reference, until nothing changes (content addressing rules out
 * cycles; the depth is at most three).
 */
static void
gc_propagate(struct gc_run *gr)
{
	struct gc_blob	*p, *c;
	size_t		 i;
	int		 changed, pass;

	for (pass = 0; pass < 16; pass++) {
		changed = 0;
		for (i = 0; i < gr->gr_nedges; i++) {
			p = &gr->gr_blobs[gr->gr_edges[i].ge_parent];
			c = &gr->gr_blobs[gr->gr_edges[i].ge_child];
			if (p->gb_keep && !p->gb_gone && !c->gb_keep) {
				c->gb_keep = 1;
				changed = 1;
			}
			if (p->gb_eff > c->gb_eff) {
				c->gb_eff = p->gb_eff;
				changed = 1;
			}
		}
		if (!changed)
			break;
	}
}

/*
 * Deletes image rows (older than the run) whose manifests are gone or
 * reference a blob that is not stored, so the next pull builds again.
 */
static int
gc_images_check(struct gc_run *gr)
{
	struct store	*st = gr->gr_st;
	sqlite3_stmt	*stmt;
	char		*keys = NULL;
	size_t		 len = 0, i;
	ssize_t		 d, o;
	int		 rc, rv = 0;
	FILE		*f;

	if ((f = open_memstream(&keys, &len)) == NULL)
		fatal("%s: open_memstream", __func__);
	store_lock(st);
	stmt = gc_stmt(st, "SELECT key, docker_digest, oci_digest, created"
	    " FROM images", NULL);
	while (stmt != NULL && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const char *k = (const char *)sqlite3_column_text(stmt, 0);

		if (k == NULL || sqlite3_column_int64(stmt, 3) >= gr->gr_start)
			continue;
		d = gc_find(gr, (const char *)sqlite3_column_text(stmt, 1));
		o = gc_find(gr, (const char *)sqlite3_column_text(stmt, 2));
		if (d == -1 || o == -1 || gr->gr_blobs[d].gb_missing > 0 ||
		    gr->gr_blobs[o].gb_missing > 0 || gr->gr_blobs[d].gb_lost ||
		    gr->gr_blobs[o].gb_lost)
			fprintf(f, "%s%c", k, '\0');
	}
	store_db_done(st, stmt);
	fclose(f);
	for (i = 0; stmt != NULL && i < len; i += strlen(keys + i) + 1) {
		log_info("%s: image %s lost a blob: dropped", __func__,
		    keys + i);
		if (gc_exec(st, "DELETE FROM images WHERE key = ?",
		    keys + i) == -1)
			rv = -1;
	}
	store_unlock(st);
	free(keys);
	return (stmt == NULL ? -1 : rv);
}

/* Eviction order: lost rows, then oldest effective access, parents first. */
static int
gc_order_cmp(const void *a, const void *b)
{
	const struct gc_blob	*x = *(struct gc_blob *const *)a;
	const struct gc_blob	*y = *(struct gc_blob *const *)b;

	if (x->gb_lost != y->gb_lost)
		return (x->gb_lost ? -1 : 1);
	if (x->gb_eff != y->gb_eff)
		return (x->gb_eff < y->gb_eff ? -1 : 1);
	if (x->gb_level != y->gb_level)
		return (x->gb_level < y->gb_level ? -1 : 1);
	return (strcmp(x->gb_digest, y->gb_digest));
}

/*
 * Deletes the rows of one blob, those naming it first (foreign keys);
 * lock held, inside the batch's transaction.
 */
static int
gc_delete_rows(struct gc_run *gr, size_t i)
{
	static const char *const sql[] = {
		"DELETE FROM images WHERE docker_digest = ?1 OR oci_digest = ?1",
		"DELETE FROM upstream_tags WHERE digest = ?",
		"DELETE FROM links WHERE digest = ?",
		"DELETE FROM pins WHERE digest = ?",
		"DELETE FROM manifests WHERE digest = ?",
		"DELETE FROM layers WHERE digest = ?",
		"DELETE FROM blobs WHERE digest = ?",
	};
	struct gc_blob	*gb = &gr->gr_blobs[i];
	size_t		 k;

	/* A lost blob breaks the images built on manifests above it. */
	for (k = 0; gb->gb_lost && k < gr->gr_nedges; k++) {
		if (gr->gr_edges[k].ge_child == i && gc_exec(gr->gr_st, sql[0],
		    gr->gr_blobs[gr->gr_edges[k].ge_parent].gb_digest) == -1)
			return (-1);
	}
	for (k = 0; k < sizeof sql / sizeof sql[0]; k++)
		if (gc_exec(gr->gr_st, sql[k], gb->gb_digest) == -1)
			return (-1);
	return (0);
}

/* Whether blob i may still go: its row is there and was not used since. */
static int
gc_still_old(struct gc_run *gr, size_t i)
{
	struct gc_blob	*gb = &gr->gr_blobs[i];
	sqlite3_stmt	*stmt;
	int		 ok = 0;

	if (gb->gb_keep && !gb->gb_lost)
		return (0);
	if ((stmt = gc_stmt(gr->gr_st, "SELECT last_access FROM blobs"
	    " WHERE digest = ?", gb->gb_digest)) == NULL)
		return (0);
	if (sqlite3_step(stmt) == SQLITE_ROW)
		ok = gb->gb_lost ||
		    sqlite3_column_int64(stmt, 0) < gr->gr_cutoff;
	store_db_done(gr->gr_st, stmt);
	if (!ok && !gb->gb_lost) {
		/* Used meanwhile: it and what it references stay. */
		gb->gb_keep = 1;
		gc_propagate(gr);
	}
	return (ok);
}

/*
 * Evicts a batch: its rows go in one transaction, then the files are
 * unlinked, all under the store lock so no commit interleaves.
 */
static int
gc_evict_batch(struct gc_run *gr, const size_t *idx, size_t n)
{
	struct store	*st = gr->gr_st;
	struct gc_blob	*gb;
	char		*path;
	size_t		 k;

	/* Manifests recorded since the scan keep what they reference. */
	if (gc_load_manifests(gr, gr->gr_start, 1) == -1)
		return (-1);
	gc_propagate(gr);
	store_lock(st);
	if (gc_exec(st, "BEGIN IMMEDIATE", NULL) == -1)
		goto fail;
	for (k = 0; k < n; k++) {
		if (!gc_still_old(gr, idx[k]))
			continue;
		if (gc_delete_rows(gr, idx[k]) == -1) {
			gc_exec(st, "ROLLBACK", NULL);
			goto fail;
		}
		gr->gr_blobs[idx[k]].gb_gone = 1;
	}
	if (gc_exec(st, "COMMIT", NULL) == -1) {
		gc_exec(st, "ROLLBACK", NULL);
		for (k = 0; k < n; k++)
			gr->gr_blobs[idx[k]].gb_gone = 0;
		goto fail;
	}
	for (k = 0; k < n; k++) {
		gb = &gr->gr_blobs[idx[k]];
		if (!gb->gb_gone)
			continue;
		gr->gr_total -= gb->gb_size;
		if (gb->gb_lost) {
			gr->gr_res->sg_lost++;
			continue;
		}
		path = store_blob_path(st, gb->gb_digest);
		if (unlink(path) == -1 && errno != ENOENT)
			log_warn("%s: unlink %s", __func__, path);
		free(path);
		gr->gr_res->sg_freed += gb->gb_size;
		gr->gr_res->sg_blobs++;
	}
	store_unlock(st);
	return (0);
fail:
	store_unlock(st);
	return (-1);
}

/* Evicts blobs in LRU order until the rows add up to max_bytes or less. */
static int
gc_evict(struct gc_run *gr, uint64_t max_bytes)
{
	struct gc_blob	**order, *gb;
	size_t		 i, n = 0, nb = 0, batch[GC_BATCH];
	uint64_t	 pending = 0;
	int		 rv = 0;

	order = xcalloc(gr->gr_n + 1, sizeof *order);
	for (i = 0; i < gr->gr_n; i++)
		if (gr->gr_blobs[i].gb_lost || !gr->gr_blobs[i].gb_keep)
			order[n++] = &gr->gr_blobs[i];
	qsort(order, n, sizeof *order, gc_order_cmp);
	for (i = 0; i < n && rv == 0 && !gc_stopping(); i++) {
		gb = order[i];
		/* Lost rows sort first and always go. */
		if (!gb->gb_lost && gr->gr_total - pending <= max_bytes)
			break;
		if (gb->gb_keep && !gb->gb_lost)
			continue;	/* used, or referenced, meanwhile */
		batch[nb++] = (size_t)(gb - gr->gr_blobs);
		pending += gb->gb_size;
		if (nb == GC_BATCH || gr->gr_total - pending <= max_bytes) {
			rv = gc_evict_batch(gr, batch, nb);
			nb = 0;
			pending = 0;
		}
	}
	if (nb > 0 && rv == 0)
		rv = gc_evict_batch(gr, batch, nb);
	free(order);
	return (rv);
}

/* Removes the orphan files of one blobs/sha256/xx directory. */
static void
gc_orphans_dir(struct gc_run *gr, const char *sub)
{
	struct store	*st = gr->gr_st;
	struct dirent	*de;
	struct stat	 sb;
	sqlite3_stmt	*stmt;
	char		 digest[NM_DIGEST_SIZE], *path;
	DIR		*d;
	ssize_t		 i;
	int		 row;

	xasprintf(&path, "%s/%s", st->st_blobs, sub);
	d = opendir(path);
	free(path);
	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strlen(de->d_name) != 64 ||
		    strncmp(de->d_name, sub, 2) != 0)
			continue;	/* not a blob name: left alone */
		memcpy(digest, "sha256:", 7);
		memcpy(digest + 7, de->d_name, 65);
		if (!policy_digest_valid(digest))
			continue;
		if ((i = gc_find(gr, digest)) != -1 &&
		    !gr->gr_blobs[i].gb_gone)
			continue;
		if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) ==
		    -1 || sb.st_ctime >= gr->gr_cutoff ||
		    sb.st_mtime >= gr->gr_cutoff)
			continue;
		store_lock(st);
		stmt = gc_stmt(st, "SELECT 1 FROM blobs WHERE digest = ?",
		    digest);
		row = stmt == NULL || sqlite3_step(stmt) != SQLITE_DONE;
		store_db_done(st, stmt);
		if (!row && unlinkat(dirfd(d), de->d_name, 0) == 0) {
			gr->gr_res->sg_orphans++;
			gr->gr_res->sg_blobs++;
			gr->gr_res->sg_freed += (uint64_t)sb.st_size;
		}
		store_unlock(st);
	}
	closedir(d);
}

/* Removes files under blobs/ that no row names (a crash mid-eviction). */
static void
gc_orphans(struct gc_run *gr)
{
	struct dirent	*de;
	DIR		*d;

	if ((d = opendir(gr->gr_st->st_blobs)) == NULL) {
		log_warn("%s: %s", __func__, gr->gr_st->st_blobs);
		return;
	}
	while ((de = readdir(d)) != NULL && !gc_stopping()) {
		if (strlen(de->d_name) == 2 &&
		    strspn(de->d_name, "0123456789abcdef") == 2)
			gc_orphans_dir(gr, de->d_name);
	}
	closedir(d);
}

/* The sum of the sizes of the stored blobs. */
static int
gc_total(struct store *st, uint64_t *total)
{
	sqlite3_stmt	*stmt;
	int		 rv = -1;

	store_lock(st);
	stmt = gc_stmt(st, "SELECT COALESCE(SUM(size), 0) FROM blobs", NULL);
	if (stmt != NULL && sqlite3_step(stmt) == SQLITE_ROW) {
		*total = (uint64_t)sqlite3_column_int64(stmt, 0);
		rv = 0;
	}
	store_db_done(st, stmt);
	store_unlock(st);
	return (rv);
}

/* One collection; the caller has made sure no other one runs. */
static int
gc_run(struct store *st, uint64_t max_bytes, struct store_gc_result *res,
    char **cause)
{
	struct gc_run	 gr;
	size_t		 i;
	int		 rv = -1;

	memset(res, 0, sizeof *res);
	memset(&gr, 0, sizeof gr);
	/* Accesses still batched count before anything is judged old. */
	store_touch_flush(st);
	gr.gr_st = st;
	gr.gr_res = res;
	gr.gr_start = (int64_t)time(NULL);
	gr.gr_cutoff = gr.gr_start - gc_grace();
	if (gc_load_blobs(&gr) == -1 || gc_load_manifests(&gr, 0, 0) == -1 ||
	    gc_load_pins(&gr) == -1 || gc_load_outbox(&gr) == -1) {
		xasprintf(cause, "cannot read the store's database");
		goto out;
	}
	res->sg_before = gr.gr_total;
	gc_propagate(&gr);
	if (gc_images_check(&gr) == -1 || gc_evict(&gr, max_bytes) == -1) {
		xasprintf(cause, "cannot update the store's database");
		goto out;
	}
	gc_orphans(&gr);
	for (i = 0; i < gr.gr_n; i++)
		if (gr.gr_blobs[i].gb_keep && !gr.gr_blobs[i].gb_gone)
			res->sg_kept++;
	if (gc_total(st, &res->sg_after) == -1) {
		xasprintf(cause, "cannot read the store's size");
		goto out;
	}
	rv = 0;
out:
	free(gr.gr_blobs);
	free(gr.gr_edges);
	return (rv);
}

/* Runs one garbage collection now, in the calling thread. */
int
store_gc(struct store *st, uint64_t max_bytes, struct store_gc_result *res,
    char **cause)
{
	int	 rv;

	pthread_mutex_lock(&gc_mtx);
	if (gc_running) {
		pthread_mutex_unlock(&gc_mtx);
		xasprintf(cause, "a garbage collection is running already");
		return (-1);
	}
	gc_running = 1;
	pthread_mutex_unlock(&gc_mtx);
	rv = gc_run(st, max_bytes, res, cause);
	pthread_mutex_lock(&gc_mtx);
	gc_running = 0;
	pthread_cond_broadcast(&gc_cond);
	pthread_mutex_unlock(&gc_mtx);
	return (rv);
}

/* The background collection's thread. */
static void
gc_job(void *arg)
{
	struct gc_job		*gj = arg;
	struct store_gc_result	 res;
	uint64_t		 total;
	char			*cause = NULL;

	/* Summing the sizes is a table scan: not on the event loop either. */
	if (gc_total(gj->gj_st, &total) == 0 && total > gj->gj_max) {
		if (gc_run(gj->gj_st, gj->gj_max, &res, &cause) == -1) {
			log_warnx("store gc: %s", cause);
			free(cause);
		} else {
			metrics_evicted(res.sg_blobs, res.sg_freed);
			log_info("store gc: freed %llu bytes in %llu blobs "
			    "(%llu orphans); store now %llu bytes, quota %llu, "
			    "%llu kept", (unsigned long long)res.sg_freed,
			    (unsigned long long)res.sg_blobs,
			    (unsigned long long)res.sg_orphans,
			    (unsigned long long)res.sg_after,
			    (unsigned long long)gj->gj_max,
			    (unsigned long long)res.sg_kept);
		}
	}
	free(gj);
	pthread_mutex_lock(&gc_mtx);
	gc_running = 0;
	pthread_cond_broadcast(&gc_cond);
	pthread_mutex_unlock(&gc_mtx);
}

/*
 * Unless a gc runs: a long job of the worker pool that runs one if the
 * store is over quota (the daemon calls this every few seconds from its
 * event loop).
 */
void
store_gc_maybe(struct store *st, uint64_t max_bytes)
{
	struct gc_job	*gj;

	pthread_mutex_lock(&gc_mtx);
	if (gc_running || gc_stop) {
		pthread_mutex_unlock(&gc_mtx);
		return;
	}
	gc_running = 1;
	pthread_mutex_unlock(&gc_mtx);
	gj = xcalloc(1, sizeof *gj);
	gj->gj_st = st;
	gj->gj_max = max_bytes;
	if (work_submit_long(gc_job, NULL, gj) == -1) {
		log_warnx("%s: cannot start a gc: no worker", __func__);
		free(gj);
		pthread_mutex_lock(&gc_mtx);
		gc_running = 0;
		pthread_cond_broadcast(&gc_cond);
		pthread_mutex_unlock(&gc_mtx);
	}
}

/* Stops a background gc between batches and waits for it (shutdown). */
void
store_gc_wait(void)
{
	pthread_mutex_lock(&gc_mtx);
	gc_stop = 1;
	while (gc_running)
		pthread_cond_wait(&gc_cond, &gc_mtx);
	pthread_mutex_unlock(&gc_mtx);
}

/* Pins a stored manifest: gc keeps it and all it references. */
int
store_pin_put(struct store *st, const char *digest)
{
	sqlite3_stmt	*stmt;
	int		 rc = SQLITE_ERROR;

	if (digest == NULL || !policy_digest_valid(digest))
		return (-1);
	store_lock(st);
	if ((stmt = gc_stmt(st, "INSERT OR IGNORE INTO pins (digest, created)"
	    " SELECT digest, ?2 FROM blobs WHERE digest = ?1", digest)) !=
	    NULL && sqlite3_bind_int64(stmt, 2, (int64_t)time(NULL)) ==
	    SQLITE_OK)
		rc = sqlite3_step(stmt);
	store_db_done(st, stmt);
	if (rc == SQLITE_DONE) {
		stmt = gc_stmt(st, "SELECT 1 FROM pins WHERE digest = ?",
		    digest);
		rc = stmt != NULL && sqlite3_step(stmt) == SQLITE_ROW ?
		    SQLITE_DONE : SQLITE_ERROR;
		store_db_done(st, stmt);
	}
	store_unlock(st);
	return (rc == SQLITE_DONE ? 0 : -1);
}

/* Unpins a manifest; 0, or -1 when it was not pinned. */
int
store_pin_del(struct store *st, const char *digest)
{
	int	 rv;

	if (digest == NULL || !policy_digest_valid(digest))
		return (-1);
	store_lock(st);
	rv = gc_exec(st, "DELETE FROM pins WHERE digest = ?", digest);
	if (rv == 0 && sqlite3_changes(st->st_w.sc_db) == 0)
		rv = -1;
	store_unlock(st);
	return (rv);
}
