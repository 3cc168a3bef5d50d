/*
 * tests/test_gc.c: store_gc on a temporary store with crafted rows: LRU
 * order, the one-minute protection, pins, manifests before their layers,
 * dependent rows, orphan files, lost files and foreign key consistency.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "nixmirror.h"
#include "store/store.h"

#define ORPHAN_TEXT	"orphan"
#define UNKNOWN_DIGEST \
	"sha256:a3f3a6ad38d8fb4fc8d6ea2e5b3a0e2c0a5a2a32bb0b3e6ba3d8f0e1b4b0c2f1"

static int		 npass, nfail;
static char		 datadir[] = "/tmp/test_gc.XXXXXX";
static sqlite3		*db;		/* a second connection, for crafting */

#define CHECK(c, what) do {						\
	if (c)								\
		npass++;						\
	else {								\
		nfail++;						\
		printf("FAIL line %d: %s\n", __LINE__, what);		\
	}								\
} while (0)

static int	 test_rm_cb(const char *, const struct stat *, int,
		    struct FTW *);
static void	 test_blob(struct store *, char, size_t, int64_t, char *);
static void	 test_manifest(struct store *, const char *, const char *,
		    int64_t, char *);
static int	 test_file(struct store *, const char *);
static int	 test_count(const char *, const char *);
static int	 test_consistent(struct store *);
static void	 test_lru(struct store *);
static void	 test_refs(struct store *);
static void	 test_orphans_lost(struct store *);
static void	 test_maybe(struct store *);

/* Removes one entry of the data directory tree. */
static int
test_rm_cb(const char *path, const struct stat *sb, int type,
    struct FTW *ftw)
{
	(void)sb; (void)type; (void)ftw;
	remove(path);
	return (0);
}

/* Stores len bytes of c as a blob last accessed at t; digest out. */
static void
test_blob(struct store *st, char c, size_t len, int64_t t, char *digest)
{
	sqlite3_stmt	*stmt;
	char		*buf, *cause = NULL;

	buf = xmalloc(len);
	memset(buf, c, len);
	if (store_blob_put_mem(st, buf, len, "application/octet-stream",
	    digest, &cause) == -1) {
		printf("put: %s\n", cause);
		exit(1);
	}
	free(buf);
	sqlite3_prepare_v2(db, "UPDATE blobs SET last_access = ? WHERE"
	    " digest = ?", -1, &stmt, NULL);
	sqlite3_bind_int64(stmt, 1, t);
	sqlite3_bind_text(stmt, 2, digest, -1, SQLITE_STATIC);
	if (sqlite3_step(stmt) != SQLITE_DONE) {
		printf("update: %s\n", sqlite3_errmsg(db));
		exit(1);
	}
	sqlite3_finalize(stmt);
}

/* Stores a manifest of config and layer, last accessed at t. */
static void
test_manifest(struct store *st, const char *config, const char *layer,
    int64_t t, char *digest)
{
	sqlite3_stmt	*stmt;
	char		*m, *cause = NULL;

	xasprintf(&m, "{\"schemaVersion\":2,\"mediaType\":\"application/vnd."
	    "oci.image.manifest.v1+json\",\"config\":{\"digest\":\"%s\"},"
	    "\"layers\":[{\"digest\":\"%s\"}]}", config, layer);
	if (store_blob_put_mem(st, m, strlen(m),
	    "application/vnd.oci.image.manifest.v1+json", digest,
	    &cause) == -1 || store_manifest_put(st, digest,
	    "application/vnd.oci.image.manifest.v1+json") == -1) {
		printf("manifest: %s\n", cause);
		exit(1);
	}
	free(m);
	sqlite3_prepare_v2(db, "UPDATE blobs SET last_access = ? WHERE"
	    " digest = ?", -1, &stmt, NULL);
	sqlite3_bind_int64(stmt, 1, t);
	sqlite3_bind_text(stmt, 2, digest, -1, SQLITE_STATIC);
	sqlite3_step(stmt);
	sqlite3_finalize(stmt);
	/* Recorded before the gc starts (newer ones keep what they name). */
	sqlite3_prepare_v2(db, "UPDATE manifests SET created = ? WHERE"
	    " digest = ?", -1, &stmt, NULL);
	sqlite3_bind_int64(stmt, 1, t);
	sqlite3_bind_text(stmt, 2, digest, -1, SQLITE_STATIC);
	sqlite3_step(stmt);
	sqlite3_finalize(stmt);
}

/* Whether a blob's file exists. */
static int
test_file(struct store *st, const char *digest)
{
	char	*path;
	int	 rv;

	path = store_blob_path(st, digest);
	rv = access(path, F_OK) == 0;
	free(path);
	return (rv);
}

/* Rows of a table whose column col equals v (NULL: all rows). */
static int
test_count(const char *sql, const char *v)
{
	sqlite3_stmt	*stmt;
	int		 n = -1;

	if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
		return (-1);
	if (v != NULL)
		sqlite3_bind_text(stmt, 1, v, -1, SQLITE_STATIC);
	if (sqlite3_step(stmt) == SQLITE_ROW)
		n = sqlite3_column_int(stmt, 0);
	sqlite3_finalize(stmt);
	return (n);
}

/* Integrity and foreign keys fine, and every blob row has its file. */
static int
test_consistent(struct store *st)
{
	sqlite3_stmt	*stmt;
	int		 ok = 1;

	sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stmt, NULL);
	if (sqlite3_step(stmt) != SQLITE_ROW || strcmp((const char *)
	    sqlite3_column_text(stmt, 0), "ok") != 0)
		ok = 0;
	sqlite3_finalize(stmt);
	sqlite3_prepare_v2(db, "PRAGMA foreign_key_check", -1, &stmt, NULL);
	if (sqlite3_step(stmt) != SQLITE_DONE)
		ok = 0;
	sqlite3_finalize(stmt);
	sqlite3_prepare_v2(db, "SELECT digest FROM blobs", -1, &stmt, NULL);
	while (sqlite3_step(stmt) == SQLITE_ROW)
		if (!test_file(st, (const char *)sqlite3_column_text(stmt, 0)))
			ok = 0;
	sqlite3_finalize(stmt);
	return (ok);
}

/* Plain blobs go oldest first, just enough of them; recent ones stay. */
static void
test_lru(struct store *st)
{
	struct store_gc_result	 r;
	char			 a[NM_DIGEST_SIZE], b[NM_DIGEST_SIZE];
	char			 c[NM_DIGEST_SIZE], d[NM_DIGEST_SIZE];
	char			*cause = NULL;
	int64_t			 now = time(NULL);

	test_blob(st, 'c', 1000, now - 800, c);
	test_blob(st, 'a', 1000, now - 1000, a);
	test_blob(st, 'd', 1000, now - 10, d);
	test_blob(st, 'b', 1000, now - 900, b);
	CHECK(store_gc(st, 2500, &r, &cause) == 0, "gc to 2500");
	CHECK(r.sg_before == 4000, "total before 4000");
	CHECK(r.sg_after == 2000, "total after 2000");
	CHECK(r.sg_freed == 2000 && r.sg_blobs == 2, "freed 2 blobs, 2000 B");
	CHECK(!test_file(st, a) && !test_file(st, b), "oldest two gone");
	CHECK(test_file(st, c) && test_file(st, d), "newer two kept");
	CHECK(test_count("SELECT count(*) FROM blobs WHERE digest = ?", a) ==
	    0, "row of a gone");
	CHECK(store_blob_stat(st, c, NULL, NULL) == 0, "c still stat");
	CHECK(store_gc(st, 0, &r, &cause) == 0, "gc to 0");
	CHECK(r.sg_freed == 1000 && r.sg_after == 1000, "only c went");
	CHECK(!test_file(st, c) && test_file(st, d), "d used 10 s ago stays");
	CHECK(r.sg_kept == 1, "one kept");
	CHECK(store_gc(st, 5000, &r, &cause) == 0 && r.sg_blobs == 0 &&
	    r.sg_after == 1000, "under quota: nothing to do");
	CHECK(test_consistent(st), "consistent after LRU");
}

/* Manifests go before their layers, with their rows; pins hold. */
static void
test_refs(struct store *st)
{
	struct store_gc_result	 r;
	struct store_image	 si;
	struct store_layer	 sl;
	char			 l1[NM_DIGEST_SIZE], c1[NM_DIGEST_SIZE];
	char			 m1[NM_DIGEST_SIZE], l2[NM_DIGEST_SIZE];
	char			 c2[NM_DIGEST_SIZE], m2[NM_DIGEST_SIZE];
	char			 l3[NM_DIGEST_SIZE], m3[NM_DIGEST_SIZE];
	char			 dg[NM_DIGEST_SIZE], *cause = NULL;
	time_t			 chk;
	int64_t			 now = time(NULL);

	test_blob(st, '1', 4000, now - 5000, l1);
	test_blob(st, '2', 100, now - 5000, c1);
	test_manifest(st, c1, l1, now - 3000, m1);
	test_blob(st, '3', 4000, now - 9000, l2);
	test_blob(st, '4', 100, now - 9000, c2);
	test_manifest(st, c2, l2, now - 9000, m2);
	test_blob(st, '5', 4000, now - 9999, l3);
	test_manifest(st, c1, l3, now, m3);
	memcpy(si.si_docker, m1, sizeof si.si_docker);
	memcpy(si.si_oci, m1, sizeof si.si_oci);
	si.si_created = now - 3000;
	CHECK(store_image_put(st, "path:/x|img1", &si) == 0, "image put");
	memcpy(sl.sl_digest, l1, sizeof sl.sl_digest);
	memcpy(sl.sl_diffid, l1, sizeof sl.sl_diffid);
	sl.sl_size = 4000;
	CHECK(store_layer_put(st, "layerkey1", &sl) == 0, "layer put");
	CHECK(store_utag_put(st, "docker.io", "library/x", "latest", m1) == 0,
	    "utag put");
	CHECK(store_pin_put(st, m2) == 0, "pin m2");
	CHECK(store_pin_put(st, m2) == 0, "pin m2 twice");
	CHECK(store_pin_put(st, UNKNOWN_DIGEST) == -1, "pin unknown: -1");
	CHECK(store_pin_del(st, l1) == -1, "unpin not pinned: -1");

	CHECK(store_gc(st, 0, &r, &cause) == 0, "gc to 0");
	CHECK(!test_file(st, m1) && !test_file(st, l1), "m1 and l1 gone");
	CHECK(test_file(st, c1), "c1, shared with the recent m3, kept");
	CHECK(test_file(st, m2) && test_file(st, l2) && test_file(st, c2),
	    "pinned m2 with its blobs kept");
	CHECK(test_file(st, m3) && test_file(st, l3), "recent m3 keeps l3");
	CHECK(store_image_get(st, "path:/x|img1", &si) == -1, "image row gone");
	CHECK(store_layer_get(st, "layerkey1", &sl) == -1, "layer row gone");
	CHECK(store_utag_get(st, "docker.io", "library/x", "latest", dg,
	    &chk) == -1, "upstream tag row gone");
	CHECK(test_count("SELECT count(*) FROM manifests WHERE digest = ?",
	    m1) == 0, "manifest row gone");
	CHECK(test_consistent(st), "consistent after refs");
}

/*
 * A manifest newer than its old layer goes first when one eviction is
 * enough; orphan files go once old; rows whose file vanished are dropped.
 */
static void
test_orphans_lost(struct store *st)
{
	struct store_gc_result	 r;
	struct store_image	 si;
	char			 l[NM_DIGEST_SIZE], c[NM_DIGEST_SIZE];
	char			 m[NM_DIGEST_SIZE], o[NM_DIGEST_SIZE];
	char			*cause = NULL, *path, *junk;
	int64_t			 now = time(NULL);
	uint64_t		 before;
	int			 fd;

	CHECK(store_pin_del(st, "sha256:zz") == -1, "unpin invalid: -1");
	test_blob(st, 'L', 3000, now - 7000, l);
	test_blob(st, 'C', 10, now - 7000, c);
	test_manifest(st, c, l, now - 6000, m);
	CHECK(store_gc(st, UINT64_MAX, &r, &cause) == 0, "gc unlimited");
	before = r.sg_after;
	CHECK(store_gc(st, before - 1, &r, &cause) == 0, "gc by one byte");
	CHECK(r.sg_blobs == 1 && !test_file(st, m) && test_file(st, l),
	    "the manifest went, not its older layer");

	/* An orphan: a blob file without a row, e.g. a crash mid-eviction. */
	nm_sha256_digest(ORPHAN_TEXT, strlen(ORPHAN_TEXT), o);
	path = store_blob_path(st, o);
	xasprintf(&junk, "%s/blobs/sha256/%.2s", datadir, o + 7);
	mkdir(junk, 0755);
	free(junk);
	xasprintf(&junk, "%s/blobs/sha256/%.2s/not-a-blob", datadir, o + 7);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0444);
	CHECK(fd != -1 && write(fd, ORPHAN_TEXT, 6) == 6, "orphan written");
	close(fd);
	fd = open(junk, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	close(fd);
	CHECK(store_gc(st, UINT64_MAX, &r, &cause) == 0 && r.sg_orphans == 0 &&
	    access(path, F_OK) == 0, "a new orphan waits for the grace");

	/* A row whose file vanished; its image goes with it. */
	memcpy(si.si_docker, m, sizeof si.si_docker);
	test_manifest(st, c, l, now - 100, m);
	memcpy(si.si_oci, m, sizeof si.si_oci);
	si.si_created = now - 100;
	CHECK(store_image_put(st, "path:/x|img2", &si) == 0, "image 2 put");
	free(path);
	path = store_blob_path(st, l);
	CHECK(unlink(path) == 0, "layer removed behind gc's back");
	free(path);
	path = store_blob_path(st, o);

	setenv("NIXMIRROR_GC_GRACE", "0", 1);
	sleep(1);
	CHECK(store_gc(st, UINT64_MAX, &r, &cause) == 0, "gc, grace 0");
	CHECK(r.sg_orphans == 1 && access(path, F_OK) == -1, "orphan removed");
	CHECK(access(junk, F_OK) == 0, "a file not named as a blob stays");
	CHECK(r.sg_lost == 1, "one lost row dropped");
	CHECK(test_count("SELECT count(*) FROM blobs WHERE digest = ?", l) ==
	    0, "lost row gone");
	CHECK(store_image_get(st, "path:/x|img2", &si) == -1,
	    "image on the lost layer gone");
	CHECK(test_consistent(st), "consistent after orphans");
	unsetenv("NIXMIRROR_GC_GRACE");
	free(path);
	free(junk);
}

/* The background collection runs only over quota, and finishes. */
static void
test_maybe(struct store *st)
{
	struct store_gc_result	 r;
	struct event_base	*eb;
	char			 x[NM_DIGEST_SIZE], *cause = NULL;
	int			 i;

	/* The background gc is a job of the daemon's worker pool. */
	if ((eb = event_base_new()) == NULL || work_init(eb, 0, &cause) == -1)
		fatalx("work_init: %s", cause != NULL ? cause : "no base");
	test_blob(st, 'x', 2000, time(NULL) - 4000, x);
	CHECK(store_gc(st, UINT64_MAX, &r, &cause) == 0, "gc to measure");
	store_gc_maybe(st, r.sg_after);
	usleep(300000);
	CHECK(test_file(st, x), "at quota: no background gc");
	store_gc_maybe(st, r.sg_after - 1);
	for (i = 0; i < 50 && test_file(st, x); i++)
		usleep(100000);
	store_gc_wait();
	CHECK(!test_file(st, x), "over quota: background gc evicted x");
	CHECK(test_consistent(st), "consistent after background gc");
	work_drain();
	event_base_free(eb);
}

int
main(void)
{
	struct store	*st;
	char		*cause = NULL, *path;

	log_init(0);
	if (mkdtemp(datadir) == NULL) {
		perror("mkdtemp");
		return (1);
	}
	unsetenv("NIXMIRROR_GC_GRACE");
	if ((st = store_open(datadir, &cause)) == NULL) {
		printf("store_open: %s\n", cause);
		return (1);
	}
	xasprintf(&path, "%s/nixmirror.db", datadir);
	if (sqlite3_open(path, &db) != SQLITE_OK)
		return (1);
	free(path);
	sqlite3_busy_timeout(db, 5000);
	test_lru(st);
	test_refs(st);
	test_orphans_lost(st);
	test_maybe(st);
	sqlite3_close(db);
	store_close(st);
	nftw(datadir, test_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	printf("test_gc: %d passed, %d failed\n", npass, nfail);
	return (nfail != 0);
}
