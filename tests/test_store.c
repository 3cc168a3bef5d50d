/*
 * tests/test_store.c: the SQLite metadata and blob files of store/, in a
 * temporary data directory.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "nixmirror.h"
#include "store/store.h"
#include "store/store_int.h"	/* store_lock */

#define HELLO_DIGEST \
	"sha256:a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447"
#define ABC_DIGEST \
	"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define COMMIT_A	"1111111111111111111111111111111111111111"
#define COMMIT_B	"2222222222222222222222222222222222222222"
#define COMMIT_OLD	"3333333333333333333333333333333333333333"
#define NTHREADS	4
#define NBLOBS		50
#define SPLIT_NVEC	150	/* vectors in one split write */

static int		 npass, nfail;
static char		 datadir[] = "/tmp/test_store.XXXXXX";

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
static int	 test_count(const char *);
static int	 test_exists(const char *);
static int	 test_user_version(void);
static int	 test_sql(const char *);
static void	 test_open_reopen(void);
static void	 test_put_mem(struct store *);
static void	 test_writer(struct store *);
static void	 test_writer_split(struct store *);
static void	 test_lookup_unblocked(struct store *);
static void	 test_invalid(struct store *);
static void	 test_meta(struct store *);
static void	 test_tags(struct store *);
static void	 test_utags(struct store *);
static void	 test_batch(struct store *);
static void	 test_outbox(void);
static void	 test_presign(void);
static int	 test_blob_bytes(char *, size_t, int, int);
static void	*test_thread(void *);
static void	 test_threads(struct store *);

/* Removes one entry of the data directory tree. */
static int
test_rm_cb(const char *path, const struct stat *sb, int type,
    struct FTW *ftw)
{
	(void)sb; (void)type; (void)ftw;
	remove(path);
	return (0);
}

/* Number of entries in a directory besides . and .., or -1. */
static int
test_count(const char *sub)
{
	char		 path[512];
	DIR		*d;
	struct dirent	*de;
	int		 n = 0;

	snprintf(path, sizeof path, "%s/%s", datadir, sub);
	if ((d = opendir(path)) == NULL)
		return (-1);
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return (n);
}

/* Whether a path under the data directory exists. */
static int
test_exists(const char *sub)
{
	char		 path[512];
	struct stat	 sb;

	snprintf(path, sizeof path, "%s/%s", datadir, sub);
	return (lstat(path, &sb) == 0);
}

/* The database's user_version read through a separate connection. */
static int
test_user_version(void)
{
	char		 path[512];
	sqlite3		*db;
	sqlite3_stmt	*stmt;
	int		 v = -1;

	snprintf(path, sizeof path, "%s/nixmirror.db", datadir);
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		goto out;
	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt,
	    NULL) == SQLITE_OK) {
		if (sqlite3_step(stmt) == SQLITE_ROW)
			v = sqlite3_column_int(stmt, 0);
		sqlite3_finalize(stmt);
	}
out:
	sqlite3_close(db);
	return (v);
}

/* Runs SQL on the database through a separate connection; 0 or -1. */
static int
test_sql(const char *sql)
{
	char	 path[512];
	sqlite3	*db;
	int	 rc;

	snprintf(path, sizeof path, "%s/nixmirror.db", datadir);
	if (sqlite3_open(path, &db) != SQLITE_OK) {
		sqlite3_close(db);
		return (-1);
	}
	sqlite3_busy_timeout(db, 5000);
	rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	return (rc == SQLITE_OK ? 0 : -1);
}

/* Open, close, reopen: schema at version 5, data and tmp cleaning. */
static void
test_open_reopen(void)
{
	struct store	*st;
	char		*cause = NULL, commit[41], path[512];
	uint64_t	 size = 0;
	int		 fd;

	st = store_open(datadir, &cause);
	CHECK(st != NULL, "store_open on a fresh directory");
	if (st == NULL) {
		printf("cause: %s\n", cause);
		exit(1);
	}
	CHECK(test_exists("blobs/sha256") && test_exists("tmp") &&
	    test_exists("nixmirror.db"), "directories and database created");
	CHECK(store_blob_put_mem(st, "hello world\n", 12, NULL, NULL,
	    &cause) == 0, "put before reopen");
	CHECK(store_tag_put(st, "src", "keep", COMMIT_A) == 0, "tag put");
	store_close(st);
	CHECK(test_user_version() == 6, "user_version is 6");

	snprintf(path, sizeof path, "%s/tmp/blob.leftover", datadir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd != -1 && write(fd, "half", 4) == 4, "leftover temp file");
	if (fd != -1)
		close(fd);
	CHECK(test_count("tmp") == 1, "tmp holds the leftover");

	st = store_open(datadir, &cause);
	CHECK(st != NULL, "store_open again (migrations idempotent)");
	if (st == NULL)
		exit(1);
	CHECK(test_count("tmp") == 0, "store_open empties tmp");
	CHECK(test_user_version() == 6, "user_version still 6");
	CHECK(store_blob_stat(st, HELLO_DIGEST, &size, NULL) == 0 &&
	    size == 12, "blob kept across reopen");
	CHECK(store_tag_get(st, "src", "keep", -1, commit) == 0 &&
	    strcmp(commit, COMMIT_A) == 0, "tag kept across reopen");
	store_close(st);
}

/* Blobs from memory: digest, bytes, size, media type, file mode. */
static void
test_put_mem(struct store *st)
{
	char		 d[NM_DIGEST_SIZE], buf[64], *mt = NULL, *cause = NULL;
	char		*path;
	uint64_t	 size = 0;
	struct stat	 sb;
	ssize_t		 n;
	int		 fd;

	CHECK(store_blob_put_mem(st, "hello world\n", 12,
	    "application/vnd.oci.image.config.v1+json", d, &cause) == 0,
	    "put_mem");
	CHECK(strcmp(d, HELLO_DIGEST) == 0, "put_mem digest");
	fd = store_blob_open(st, HELLO_DIGEST, &size);
	CHECK(fd != -1 && size == 12, "blob_open size");
	n = fd != -1 ? read(fd, buf, sizeof buf) : -1;
	CHECK(n == 12 && memcmp(buf, "hello world\n", 12) == 0,
	    "blob bytes read back");
	CHECK(fd == -1 || (fcntl(fd, F_GETFD) & FD_CLOEXEC), "fd cloexec");
	if (fd != -1)
		close(fd);
	size = 0;
	CHECK(store_blob_stat(st, HELLO_DIGEST, &size, &mt) == 0 &&
	    size == 12 && mt != NULL &&
	    strcmp(mt, "application/vnd.oci.image.config.v1+json") == 0,
	    "stat size and media type (set on a NULL type)");
	free(mt);
	path = store_blob_path(st, HELLO_DIGEST);
	CHECK(path != NULL && strstr(path, "/blobs/sha256/a9/a948904f") &&
	    stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0444,
	    "blob path and mode 0444");
	free(path);

	/* Same bytes again: same blob, media type not overwritten. */
	CHECK(store_blob_put_mem(st, "hello world\n", 12, "other/type", d,
	    &cause) == 0 && strcmp(d, HELLO_DIGEST) == 0, "put_mem again");
	mt = NULL;
	CHECK(store_blob_stat(st, HELLO_DIGEST, NULL, &mt) == 0 && mt != NULL &&
	    strcmp(mt, "application/vnd.oci.image.config.v1+json") == 0,
	    "media type kept");
	free(mt);
	store_blob_touch(st, HELLO_DIGEST);

	/* A row whose file went away is not a blob. */
	CHECK(store_blob_put_mem(st, "abc", 3, NULL, d, &cause) == 0 &&
	    strcmp(d, ABC_DIGEST) == 0, "put abc");
	path = store_blob_path(st, ABC_DIGEST);
	CHECK(path != NULL && unlink(path) == 0, "remove abc file");
	free(path);
	CHECK(store_blob_stat(st, ABC_DIGEST, &size, NULL) == -1,
	    "stat -1 when file is gone");
	CHECK(store_blob_open(st, ABC_DIGEST, &size) == -1,
	    "open -1 when file is gone");
}

/* Streaming writers: digest mismatch, fd writers, abort. */
static void
test_writer(struct store *st)
{
	struct store_writer	*sw;
	char			 d[NM_DIGEST_SIZE], other[NM_DIGEST_SIZE];
	char			*cause = NULL;
	uint64_t		 size = 0;
	const char		*direct = "written to the fd directly";

	nm_sha256_digest("abd", 3, other);
	sw = store_writer_new(st, &cause);
	CHECK(sw != NULL && test_count("tmp") == 1, "writer temp file");
	if (sw == NULL)
		return;
	CHECK(store_writer_write(sw, "ab", 2) == 0 &&
	    store_writer_write(sw, "c", 1) == 0, "writer writes");
	CHECK(store_writer_commit(sw, other, NULL, d, &cause) == -1,
	    "commit with wrong digest fails");
	CHECK(cause != NULL && strstr(cause, other) != NULL &&
	    strstr(cause, ABC_DIGEST) != NULL, "cause names both digests");
	free(cause);
	cause = NULL;
	CHECK(test_count("tmp") == 0, "no temp file after mismatch");
	CHECK(!test_exists("blobs/sha256/ba/"
	    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
	    "no blob file after mismatch");
	CHECK(store_blob_open(st, ABC_DIGEST, NULL) == -1 &&
	    store_blob_stat(st, ABC_DIGEST, NULL, NULL) == -1,
	    "mismatched blob invisible");

	/* Bytes through the fd: the expected digest is trusted. */
	nm_sha256_digest(direct, strlen(direct), other);
	sw = store_writer_new(st, &cause);
	CHECK(sw != NULL && write(store_writer_fd(sw), direct,
	    strlen(direct)) == (ssize_t)strlen(direct), "fd write");
	CHECK(sw != NULL && store_writer_commit(sw, other, "x/y", d,
	    &cause) == 0 && strcmp(d, other) == 0, "fd commit");
	CHECK(store_blob_stat(st, other, &size, NULL) == 0 &&
	    size == strlen(direct), "fd blob size from fstat");

	sw = store_writer_new(st, &cause);
	if (sw != NULL)
		(void)store_writer_fd(sw);
	CHECK(sw != NULL && store_writer_commit(sw, NULL, NULL, d,
	    &cause) == -1 && test_count("tmp") == 0,
	    "fd commit without digest fails cleanly");
	free(cause);
	cause = NULL;

	sw = store_writer_new(st, &cause);
	CHECK(sw != NULL && store_writer_write(sw, "x", 1) == 0,
	    "writer for abort");
	store_writer_abort(sw);
	CHECK(test_count("tmp") == 0, "abort removes temp file");
}

/*
 * A lookup the loop makes (a blob's row, a tag) does not wait for the
 * writing connection's lock, which a worker holds across commits and
 * checkpoints.
 */
struct lookup_arg {
	struct store	*st;
	int		 rv;
};

static void *
test_lookup_thread(void *arg)
{
	struct lookup_arg	*la = arg;
	uint64_t		 size = 0;

	la->rv = store_blob_stat(la->st, HELLO_DIGEST, &size, NULL) == 0 &&
	    size == 12 ? 0 : -1;
	return (NULL);
}

static void
test_lookup_unblocked(struct store *st)
{
	struct lookup_arg	 la = { st, 1 };
	struct timespec		 ts;
	pthread_t		 t;
	int			 joined;

	store_lock(st);
	CHECK(pthread_create(&t, NULL, test_lookup_thread, &la) == 0,
	    "lookup thread");
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	joined = pthread_timedjoin_np(t, NULL, &ts) == 0;
	store_unlock(st);
	if (!joined)
		pthread_join(t, NULL);
	CHECK(joined && la.rv == 0,
	    "blob lookup answers while the writer's lock is held");
}

/* store_writer_hash in a thread while store_writer_put writes. */
struct split_arg {
	struct store_writer	*sw;
	struct iovec		*iov;
	int			 n;
};

static void *
test_split_hash(void *arg)
{
	struct split_arg	*sa = arg;

	store_writer_hash(sa->sw, sa->iov, sa->n);
	return (NULL);
}

static void
test_writer_split(struct store *st)
{
	struct iovec		 iov[SPLIT_NVEC];
	struct split_arg	 sa;
	pthread_t		 t;
	char			 want[NM_DIGEST_SIZE], d[NM_DIGEST_SIZE];
	char			*all, *back, *cause = NULL;
	size_t			 total = 0, off = 0, len;
	uint64_t		 size = 0;
	ssize_t			 r;
	int			 i, fd, put;

	/* More vectors than one writev takes, of odd sizes, some empty. */
	for (i = 0; i < SPLIT_NVEC; i++)
		total += (size_t)(i * 7919) % 40000;
	all = xmalloc(total);
	for (off = 0; off < total; off++)
		all[off] = (char)(off * 2654435761u >> 13);
	for (i = 0, off = 0; i < SPLIT_NVEC; i++) {
		len = (size_t)(i * 7919) % 40000;
		iov[i].iov_base = all + off;
		iov[i].iov_len = len;
		off += len;
	}
	nm_sha256_digest(all, total, want);
	sa.sw = store_writer_new(st, &cause);
	CHECK(sa.sw != NULL, "split writer");
	if (sa.sw == NULL) {
		free(all);
		return;
	}
	sa.iov = iov;
	sa.n = SPLIT_NVEC;
	CHECK(pthread_create(&t, NULL, test_split_hash, &sa) == 0,
	    "hash thread");
	put = store_writer_put(sa.sw, iov, SPLIT_NVEC);
	pthread_join(t, NULL);
	CHECK(put == 0 && store_writer_size(sa.sw) == total, "split put");
	CHECK(store_writer_commit(sa.sw, want, NULL, d, &cause) == 0 &&
	    strcmp(d, want) == 0, "split commit verifies the digest");
	CHECK(store_blob_stat(st, want, &size, NULL) == 0 && size == total,
	    "split blob size");
	back = xmalloc(total);
	fd = store_blob_open(st, want, NULL);
	for (off = 0; fd != -1 && off < total; off += (size_t)r)
		if ((r = read(fd, back + off, total - off)) <= 0)
			break;
	CHECK(fd != -1 && off == total && memcmp(all, back, total) == 0,
	    "split blob holds the bytes in order");
	if (fd != -1)
		close(fd);
	free(back);
	free(all);
}

/* Digests that are not sha256 + 64 lowercase hex never reach a path. */
static void
test_invalid(struct store *st)
{
	const char	*bad[] = {
		"sha256:../../etc/passwd",
		"sha256:A948904F2F0F479B8F8197694B30184B0D2ED1C1CD2A1EC0FB85D299A192A447",
		"sha512:a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447",
		"sha256:a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a44",
		"sha256:a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447/",
		"",
	};
	struct store_writer	*sw;
	char			*cause = NULL, path[512];
	uint64_t		 size;
	size_t			 i;
	int			 fd, ok = 1;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (store_blob_path(st, bad[i]) != NULL ||
		    store_blob_open(st, bad[i], &size) != -1 ||
		    store_blob_stat(st, bad[i], &size, NULL) != -1) {
			printf("accepted: %s\n", bad[i]);
			ok = 0;
		}
	}
	CHECK(ok, "invalid digests refused by path/open/stat");

	/* A file where an uppercase digest would point is not opened. */
	snprintf(path, sizeof path, "%s/blobs/sha256/A9", datadir);
	CHECK(mkdir(path, 0755) == 0, "mkdir uppercase dir");
	snprintf(path, sizeof path, "%s/blobs/sha256/A9/%s", datadir,
	    bad[1] + 7);
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	CHECK(fd != -1, "plant uppercase file");
	if (fd != -1)
		close(fd);
	CHECK(store_blob_open(st, bad[1], &size) == -1,
	    "planted uppercase file not opened");

	sw = store_writer_new(st, &cause);
	CHECK(sw != NULL && store_writer_write(sw, "x", 1) == 0 &&
	    store_writer_commit(sw, bad[0], NULL, NULL, &cause) == -1,
	    "commit with invalid expected digest fails");
	free(cause);
	CHECK(test_count("tmp") == 0, "no temp file after invalid commit");
	CHECK(store_manifest_put(st, bad[0], "x/y") == -1,
	    "manifest_put refuses invalid digest");
}

/* Manifest, layer and image rows. */
static void
test_meta(struct store *st)
{
	struct store_layer	 sl, got;
	struct store_image	 si, gi;
	char			 d[NM_DIGEST_SIZE], *cause = NULL;

	CHECK(store_manifest_put(st, HELLO_DIGEST,
	    "application/vnd.oci.image.manifest.v1+json") == 0,
	    "manifest_put on a stored blob");
	CHECK(store_blob_put_mem(st, "layer", 5, NULL, d, &cause) == 0,
	    "layer blob");
	memset(&sl, 0, sizeof sl);
	memcpy(sl.sl_digest, d, NM_DIGEST_SIZE);
	memcpy(sl.sl_diffid, HELLO_DIGEST, sizeof HELLO_DIGEST);
	sl.sl_size = 5;
	CHECK(store_layer_put(st, "key1", &sl) == 0, "layer_put");
	memset(&got, 0, sizeof got);
	CHECK(store_layer_get(st, "key1", &got) == 0 &&
	    strcmp(got.sl_digest, d) == 0 &&
	    strcmp(got.sl_diffid, HELLO_DIGEST) == 0 && got.sl_size == 5,
	    "layer_get round trip");
	sl.sl_size = 1ULL << 40;
	CHECK(store_layer_put(st, "key1", &sl) == 0 &&
	    store_layer_get(st, "key1", &got) == 0 &&
	    got.sl_size == 1ULL << 40, "layer_put replaces");
	CHECK(store_layer_get(st, "nokey", &got) == -1, "layer_get missing");
	nm_sha256_digest("no such blob", 12, sl.sl_digest);
	CHECK(store_layer_put(st, "key2", &sl) == -1,
	    "layer_put of an unknown blob fails (foreign key)");

	memset(&si, 0, sizeof si);
	memcpy(si.si_docker, HELLO_DIGEST, sizeof HELLO_DIGEST);
	memcpy(si.si_oci, d, NM_DIGEST_SIZE);
	si.si_created = 1700000000;
	CHECK(store_image_put(st, "img", &si) == 0, "image_put");
	memset(&gi, 0, sizeof gi);
	CHECK(store_image_get(st, "img", &gi) == 0 &&
	    strcmp(gi.si_docker, HELLO_DIGEST) == 0 &&
	    strcmp(gi.si_oci, d) == 0 && gi.si_created == 1700000000,
	    "image_get round trip");
	si.si_created = 1800000000;
	CHECK(store_image_put(st, "img", &si) == 0 &&
	    store_image_get(st, "img", &gi) == 0 &&
	    gi.si_created == 1800000000, "image_put replaces");
	CHECK(store_image_get(st, "other", &gi) == -1, "image_get missing");
}

/* Git tag resolutions: history, newest wins, max_age. */
static void
test_tags(struct store *st)
{
	char	 commit[41], sql[256];
	time_t	 t;

	/* Start at the beginning of a second so "now" does not move. */
	t = time(NULL);
	while (time(NULL) == t)
		usleep(10000);
	CHECK(store_tag_put(st, "repo", "v1", COMMIT_A) == 0, "tag_put A");
	CHECK(store_tag_get(st, "repo", "v1", 0, commit) == 0 &&
	    strcmp(commit, COMMIT_A) == 0, "tag_get max_age 0 right away");
	CHECK(store_tag_put(st, "repo", "v1", COMMIT_B) == 0, "tag_put B");
	CHECK(store_tag_get(st, "repo", "v1", 60, commit) == 0 &&
	    strcmp(commit, COMMIT_B) == 0, "newest resolution wins");
	CHECK(store_tag_get(st, "repo", "v2", -1, commit) == -1,
	    "other tag unknown");
	CHECK(store_tag_get(st, "other", "v1", -1, commit) == -1,
	    "other source unknown");
	CHECK(store_tag_put(st, "repo", "v1", COMMIT_A "0") == -1,
	    "overlong commit refused");

	snprintf(sql, sizeof sql, "INSERT INTO tag_history (source, tag,"
	    " commit_id, resolved) VALUES ('repo', 'old', '%s', %lld)",
	    COMMIT_OLD, (long long)time(NULL) - 1000);
	CHECK(test_sql(sql) == 0, "insert a stale resolution");
	CHECK(store_tag_get(st, "repo", "old", 100, commit) == -1,
	    "stale resolution too old for max_age 100");
	CHECK(store_tag_get(st, "repo", "old", 2000, commit) == 0 &&
	    strcmp(commit, COMMIT_OLD) == 0, "stale resolution within 2000");
	CHECK(store_tag_get(st, "repo", "old", -1, commit) == 0 &&
	    strcmp(commit, COMMIT_OLD) == 0, "max_age < 0 takes any age");
}

/* Kept lists, and the tags a repository resolved. */
static void
test_lists(struct store *st)
{
	char	*body = NULL, *tags;
	time_t	 fetched = 0;

	CHECK(store_list_get(st, "docker.io", "library/l", "tags", &body,
	    &fetched) == -1 && body == NULL, "no list kept");
	CHECK(store_list_put(st, "docker.io", "library/l", "tags",
	    "[\"a\",\"b\"]") == 0, "list put");
	CHECK(store_list_put(st, "docker.io", "library/l", "tags",
	    "[\"a\",\"b\",\"c\"]") == 0, "list put again replaces");
	CHECK(store_list_get(st, "docker.io", "library/l", "tags", &body,
	    &fetched) == 0 && strcmp(body, "[\"a\",\"b\",\"c\"]") == 0 &&
	    fetched >= time(NULL) - 5, "list get: the newest, and when");
	free(body);
	CHECK(store_list_get(st, "ghcr.io", "library/l", "tags", &body,
	    &fetched) == -1, "lists of namespaces are separate");
	CHECK(store_list_get(st, "docker.io", "library/l", "referrers x",
	    &body, &fetched) == -1, "lists of kinds are separate");
	/* test_utags resolved library/x's latest twice. */
	CHECK(store_blob_stat(st, HELLO_DIGEST, NULL, NULL) == 0 &&
	    store_utag_put(st, "docker.io", "library/x", "1.0",
	    HELLO_DIGEST) == 0, "utag 1.0");
	tags = store_utag_list(st, "docker.io", "library/x");
	CHECK(tags != NULL && strcmp(tags, "[\"1.0\",\"latest\"]") == 0,
	    "resolved tags, sorted, each once");
	free(tags);
	CHECK(store_utag_list(st, "docker.io", "library/none") == NULL,
	    "no resolved tags");
}

/* Upstream tag history: newest wins, a re-check keeps one row. */
static void
test_utags(struct store *st)
{
	char	 d1[NM_DIGEST_SIZE], d2[NM_DIGEST_SIZE], got[NM_DIGEST_SIZE];
	char	*cause = NULL;
	time_t	 checked = 0;

	CHECK(store_blob_put_mem(st, "m1", 2, "application/json", d1,
	    &cause) == 0, "utag blob 1");
	CHECK(store_blob_put_mem(st, "m2", 2, "application/json", d2,
	    &cause) == 0, "utag blob 2");
	CHECK(store_utag_get(st, "docker.io", "library/x", "latest", got,
	    &checked) == -1, "unknown upstream tag");
	CHECK(store_utag_put(st, "docker.io", "library/x", "latest", d1) == 0,
	    "utag put 1");
	CHECK(store_utag_put(st, "docker.io", "library/x", "latest", d1) == 0,
	    "utag put 1 again");
	CHECK(store_utag_get(st, "docker.io", "library/x", "latest", got,
	    &checked) == 0 && strcmp(got, d1) == 0, "utag get 1");
	CHECK(test_sql("DELETE FROM upstream_tags WHERE id = (SELECT"
	    " MIN(id) FROM upstream_tags)") == 0 &&
	    store_utag_get(st, "docker.io", "library/x", "latest", got,
	    &checked) == -1, "a re-check of the same digest adds no row");
	CHECK(store_utag_put(st, "docker.io", "library/x", "latest", d1) == 0,
	    "utag put 1 once more");
	CHECK(checked >= time(NULL) - 5, "checked time is now");
	CHECK(store_utag_put(st, "docker.io", "library/x", "latest", d2) == 0 &&
	    store_utag_get(st, "docker.io", "library/x", "latest", got,
	    &checked) == 0 && strcmp(got, d2) == 0, "newest digest wins");
	CHECK(store_utag_get(st, "ghcr.io", "library/x", "latest", got,
	    &checked) == -1, "namespaces are separate");
	CHECK(store_utag_put(st, "docker.io", "library/x", "v1",
	    "sha256:0000000000000000000000000000000000000000000000000000000000000000")
	    == -1, "a tag cannot point at an unknown blob");
}

/*
 * A batch (an import's records) is one transaction: rolled back, none of
 * its writes is there, though each of them ran its own transaction (a
 * savepoint then); committed, all are.
 */
/*
 * With a bucket attached (one that never answers: no worker pool runs
 * here, so nothing is sent), what the store records is queued for it in
 * the same transaction: a rolled-back batch queues nothing, a committed
 * one its blob, tag and link; gc keeps a queued blob whatever the quota;
 * and what came from the bucket is not queued again.
 */
static void
test_outbox(void)
{
	struct s3_settings	 ss;
	struct store_gc_result	 gr;
	struct store		*st;
	struct s3		*s3;
	char			 d[NM_DIGEST_SIZE], dir[] = "/tmp/nm-outbox.XXXXXX";
	char			*cause = NULL;

	CHECK(mkdtemp(dir) != NULL, "outbox data dir");
	st = store_open(dir, &cause);
	CHECK(st != NULL, "outbox store opens");
	if (st == NULL)
		return;
	CHECK(store_blob_put_mem(st, "before the bucket", 17, NULL, d,
	    &cause) == 0, "a blob before the bucket");
	memset(&ss, 0, sizeof ss);
	ss.ss_endpoint = "http://127.0.0.1:9";
	ss.ss_bucket = "NM_Test";
	ss.ss_access = "AKIDEXAMPLE";
	ss.ss_secret = "secret";
	CHECK(s3_new(&ss, &cause) == NULL && cause != NULL,
	    "a bucket name with capitals is refused");
	free(cause);
	cause = NULL;
	ss.ss_bucket = "nmtest";
	ss.ss_prefix = "bad prefix";
	CHECK(s3_new(&ss, &cause) == NULL, "a prefix with a space is refused");
	free(cause);
	cause = NULL;
	ss.ss_prefix = "site1";
	s3 = s3_new(&ss, &cause);
	CHECK(s3 != NULL, "s3_new");
	if (s3 == NULL)
		return;
	store_remote_attach(st, s3);
	CHECK(store_remote_pending(st) == 0, "nothing queued from before");

	CHECK(store_batch_begin(st) == 0, "batch begins");
	CHECK(store_blob_put_mem(st, "queued blob", 11, "application/json", d,
	    &cause) == 0 && store_utag_put(st, "docker.io", "library/q", "t",
	    d) == 0 && store_link_put(st, "docker.io", "library/q", d) == 0,
	    "blob, tag and link in a batch");
	CHECK(store_batch_end(st, 0) == -1, "batch rolled back");
	CHECK(store_remote_pending(st) == 0, "a rolled-back batch queues nothing");
	CHECK(store_batch_begin(st) == 0, "batch begins again");
	CHECK(store_blob_put_mem(st, "queued blob", 11, "application/json", d,
	    &cause) == 0 && store_utag_put(st, "docker.io", "library/q", "t",
	    d) == 0 && store_link_put(st, "docker.io", "library/q", d) == 0,
	    "the same writes");
	CHECK(store_batch_end(st, 1) == 0, "batch commits");
	CHECK(store_remote_pending(st) == 3, "blob, tag and link are queued");
	CHECK(store_utag_put(st, "docker.io", "library/q", "t", d) == 0 &&
	    store_remote_pending(st) == 3, "a tag checked again replaces its "
	    "queued object");
	CHECK(store_gc(st, 0, &gr, &cause) == 0, "gc to zero bytes");
	CHECK(store_blob_stat(st, d, NULL, NULL) == 0,
	    "gc keeps the queued blob");
	CHECK(store_remote_blob(st, d, &cause) == 0,
	    "a blob stored here needs no fetch");
	CHECK(store_remote_link(st, "docker.io", "library/q", d, &cause) == -1 &&
	    cause != NULL, "a bucket that does not answer is an error");
	free(cause);
	cause = NULL;
	store_remote_stop(st);
	store_close(st);
}

static void
test_batch(struct store *st)
{
	char	 d[NM_DIGEST_SIZE], got[NM_DIGEST_SIZE];
	char	*cause = NULL;
	time_t	 checked;

	CHECK(store_batch_begin(st) == 0, "batch begins");
	CHECK(store_blob_put_mem(st, "batch blob", 10, "application/json", d,
	    &cause) == 0, "a blob in the batch");
	CHECK(store_utag_put(st, "docker.io", "library/batch", "t", d) == 0,
	    "a tag in the batch");
	CHECK(store_link_put(st, "docker.io", "library/batch", d) == 0,
	    "a link in the batch");
	CHECK(store_batch_end(st, 0) == -1, "batch rolled back");
	CHECK(store_utag_get(st, "docker.io", "library/batch", "t", got,
	    &checked) == -1, "the rolled-back tag is not there");
	CHECK(store_link_has(st, "docker.io", "library/batch", d) == 0,
	    "the rolled-back link is not there");
	CHECK(store_blob_stat(st, d, NULL, NULL) == -1,
	    "the rolled-back blob has no row");

	CHECK(store_batch_begin(st) == 0, "batch begins again");
	CHECK(store_blob_put_mem(st, "batch blob", 10, "application/json", d,
	    &cause) == 0 && store_utag_put(st, "docker.io", "library/batch",
	    "t", d) == 0 && store_link_put(st, "docker.io", "library/batch",
	    d) == 0, "the same writes");
	CHECK(store_batch_end(st, 1) == 0, "batch commits");
	CHECK(store_utag_get(st, "docker.io", "library/batch", "t", got,
	    &checked) == 0 && strcmp(got, d) == 0, "the committed tag");
	CHECK(store_link_has(st, "docker.io", "library/batch", d) == 1,
	    "the committed link");
	CHECK(store_blob_stat(st, d, NULL, NULL) == 0, "the committed blob");
	free(cause);
}

/*
 * Repository links: a manifest links what it references (an index its
 * stored children and theirs), repositories and namespaces are separate,
 * and a store from before links gets them from its tags when it opens.
 */
static void
test_links(struct store **stp)
{
	struct store	*st = *stp;
	char		 cfg[NM_DIGEST_SIZE], lay[NM_DIGEST_SIZE];
	char		 man[NM_DIGEST_SIZE], idx[NM_DIGEST_SIZE];
	char		 other[NM_DIGEST_SIZE], *doc, *cause = NULL;
	const char	*absent = "sha256:"
	    "1111111111111111111111111111111111111111111111111111111111111111";

	CHECK(store_blob_put_mem(st, "link config", 11, NULL, cfg,
	    &cause) == 0 && store_blob_put_mem(st, "link layer", 10, NULL,
	    lay, &cause) == 0 && store_blob_put_mem(st, "link other", 10,
	    NULL, other, &cause) == 0, "link blobs");
	xasprintf(&doc, "{\"schemaVersion\":2,\"config\":{\"digest\":\"%s\"},"
	    "\"layers\":[{\"digest\":\"%s\"},{\"digest\":\"%s\"}]}", cfg, lay,
	    absent);
	CHECK(store_blob_put_mem(st, doc, strlen(doc), "application/"
	    "vnd.oci.image.manifest.v1+json", man, &cause) == 0, "manifest");
	free(doc);
	xasprintf(&doc, "{\"schemaVersion\":2,\"manifests\":[{\"digest\":"
	    "\"%s\"}]}", man);
	CHECK(store_blob_put_mem(st, doc, strlen(doc), "application/"
	    "vnd.oci.image.index.v1+json", idx, &cause) == 0, "index");
	free(doc);

	CHECK(!store_link_has(st, "docker.io", "library/a", idx),
	    "nothing linked at first");
	CHECK(store_link_manifest(st, "docker.io", "library/a", idx) == 0,
	    "link the index");
	CHECK(store_link_has(st, "docker.io", "library/a", idx) &&
	    store_link_has(st, "docker.io", "library/a", man) &&
	    store_link_has(st, "docker.io", "library/a", cfg) &&
	    store_link_has(st, "docker.io", "library/a", lay) &&
	    store_link_has(st, "docker.io", "library/a", absent),
	    "the index links its child and the child's config and layers");
	CHECK(!store_link_has(st, "docker.io", "library/a", other),
	    "an unrelated blob is not linked");
	CHECK(!store_link_has(st, "docker.io", "library/b", lay) &&
	    !store_link_has(st, "ghcr.io", "library/a", lay) &&
	    !store_link_has(st, STORE_NIX_NS, "library/a", lay),
	    "other repositories and namespaces do not see the links");
	CHECK(store_link_put(st, "docker.io", "library/b", other) == 0 &&
	    store_link_has(st, "docker.io", "library/b", other) &&
	    !store_link_has(st, "docker.io", "library/a", other),
	    "one blob linked to one repository");
	CHECK(store_link_put(st, "docker.io", "library/b", "sha256:x") == -1,
	    "an invalid digest is not linked");
	CHECK(store_link_manifest(st, "docker.io", "library/a", idx) == 0,
	    "linking again is a no-op");

	/* A store of version 3: its tags give the links. */
	CHECK(store_utag_put(st, "docker.io", "library/c", "latest", man) == 0,
	    "tag of library/c");
	store_close(st);
	CHECK(test_sql("DROP TABLE links; DROP TABLE lists; DROP TABLE remote_outbox; "
	    "PRAGMA user_version = 3") == 0, "back to version 3");
	*stp = st = store_open(datadir, &cause);
	if (st == NULL) {
		printf("store_open: %s\n", cause);
		exit(1);
	}
	CHECK(test_user_version() == 6, "migrated to version 6 again");
	CHECK(store_link_has(st, "docker.io", "library/c", man) &&
	    store_link_has(st, "docker.io", "library/c", cfg) &&
	    store_link_has(st, "docker.io", "library/c", lay),
	    "the backfill links a tag's manifest and its blobs");
	CHECK(!store_link_has(st, "docker.io", "library/a", idx) &&
	    !store_link_has(st, "docker.io", "library/c", other),
	    "the backfill links nothing else");
}

struct test_arg {
	struct store	*ta_store;
	int		 ta_id;
	int		 ta_failed;
};

/* The bytes of blob i of thread id; their length. */
static int
test_blob_bytes(char *buf, size_t len, int id, int i)
{
	return (snprintf(buf, len, "thread %d blob %d of the concurrency test",
	    id, i));
}

/* Stores NBLOBS distinct blobs, half from memory, half streamed. */
static void *
test_thread(void *arg)
{
	struct test_arg		*ta = arg;
	struct store		*st = ta->ta_store;
	struct store_writer	*sw;
	char			 buf[128], d[NM_DIGEST_SIZE], e[NM_DIGEST_SIZE];
	char			*cause = NULL;
	int			 i, n, rv;

	for (i = 0; i < NBLOBS; i++) {
		n = test_blob_bytes(buf, sizeof buf, ta->ta_id, i);
		nm_sha256_digest(buf, (size_t)n, e);
		if (i % 2 == 0)
			rv = store_blob_put_mem(st, buf, (size_t)n, "t/x", d,
			    &cause);
		else if ((sw = store_writer_new(st, &cause)) == NULL)
			rv = -1;
		else if (store_writer_write(sw, buf, 7) == -1 ||
		    store_writer_write(sw, buf + 7, (size_t)n - 7) == -1) {
			store_writer_abort(sw);
			rv = -1;
		} else
			rv = store_writer_commit(sw, e, NULL, d, &cause);
		if (rv == -1 || strcmp(d, e) != 0 ||
		    store_blob_stat(st, e, NULL, NULL) == -1) {
			printf("thread %d blob %d: %s\n", ta->ta_id, i,
			    cause != NULL ? cause : "failed");
			ta->ta_failed++;
		}
		free(cause);
		cause = NULL;
		store_blob_touch(st, e);
	}
	return (NULL);
}

/* Four threads storing blobs at once all succeed, and all read back. */
static void
test_threads(struct store *st)
{
	struct test_arg	 ta[NTHREADS];
	pthread_t	 t[NTHREADS];
	char		 buf[128], got[128], e[NM_DIGEST_SIZE];
	uint64_t	 size;
	int		 i, j, n, fd, started = 0, failed = 0, bad = 0;

	for (i = 0; i < NTHREADS; i++) {
		ta[i].ta_store = st;
		ta[i].ta_id = i;
		ta[i].ta_failed = 0;
		if (pthread_create(&t[i], NULL, test_thread, &ta[i]) == 0)
			started++;
	}
	CHECK(started == NTHREADS, "threads started");
	for (i = 0; i < started; i++) {
		pthread_join(t[i], NULL);
		failed += ta[i].ta_failed;
	}
	CHECK(failed == 0, "4 threads x 50 concurrent writes all succeed");
	CHECK(test_count("tmp") == 0, "no temp files after threads");
	for (i = 0; i < NTHREADS; i++) {
		for (j = 0; j < NBLOBS; j++) {
			n = test_blob_bytes(buf, sizeof buf, i, j);
			nm_sha256_digest(buf, (size_t)n, e);
			if ((fd = store_blob_open(st, e, &size)) == -1) {
				bad++;
				continue;
			}
			if (size != (uint64_t)n || read(fd, got,
			    sizeof got) != n || memcmp(got, buf, n) != 0)
				bad++;
			close(fd);
		}
	}
	CHECK(bad == 0, "all 200 concurrent blobs read back");
}

/*
 * Presigned URLs: the example of AWS's "Authenticating Requests: Using
 * Query Parameters" page (GET of examplebucket's test.txt as of
 * 2013-05-24T00:00:00Z for a day), whose signature AWS prints; then the
 * parameters a session token and an explicit default port bring.
 */
static void
test_presign(void)
{
	struct s3_settings	 ss;
	struct s3		*s3;
	char			*url, *cause = NULL;
	const char		*ak = "AKIAIOSFODNN7EXAMPLE";
	const char		*sk = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

	url = s3_sign_url("https://examplebucket.s3.amazonaws.com/test.txt",
	    ak, sk, NULL, "us-east-1", 1369353600, 86400);
	CHECK(url != NULL && strcmp(url,
	    "https://examplebucket.s3.amazonaws.com/test.txt"
	    "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
	    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1"
	    "%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z"
	    "&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature="
	    "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
	    == 0, "presigned URL matches AWS's example");
	free(url);
	/* The scheme's port is what a client leaves out of Host. */
	url = s3_sign_url("https://examplebucket.s3.amazonaws.com:443/test.txt",
	    ak, sk, NULL, "us-east-1", 1369353600, 86400);
	CHECK(url != NULL && strstr(url, "https://examplebucket.s3.amazonaws"
	    ".com/test.txt?") == url && strstr(url, "aeeed9bbccd4d02ee5c01"
	    "09b86d86835f995330da4c265957d157751f604d404") != NULL,
	    "a default port is left out, and signed as left out");
	free(url);
	url = s3_sign_url("http://127.0.0.1:7480/b/k", ak, sk, "tok/en+=",
	    "us-east-1", 1369353600, 60);
	CHECK(url != NULL && strstr(url, "http://127.0.0.1:7480/b/k?") == url &&
	    strstr(url, "&X-Amz-Expires=60&X-Amz-Security-Token=tok%2Fen%2B%3D"
	    "&X-Amz-SignedHeaders=host&X-Amz-Signature=") != NULL,
	    "a session token is signed among the parameters, escaped");
	free(url);
	CHECK(s3_sign_url("http://h/a b", ak, sk, NULL, "r", 0, 60) == NULL &&
	    s3_sign_url("http://h", ak, sk, NULL, "r", 0, 60) == NULL &&
	    s3_sign_url("ftp://h/k", ak, sk, NULL, "r", 0, 60) == NULL &&
	    s3_sign_url("http://h/k", ak, sk, NULL, "r", 0, 0) == NULL &&
	    s3_sign_url("http://h/k", ak, sk, NULL, "r", 0, 8 * 86400) == NULL,
	    "what cannot be presigned is refused");
	/* Through a client: endpoint, bucket, prefix and key, path-style. */
	memset(&ss, 0, sizeof ss);
	ss.ss_endpoint = "http://127.0.0.1:7480/";
	ss.ss_bucket = "mirror";
	ss.ss_prefix = "site";
	ss.ss_access = ak;
	ss.ss_secret = sk;
	s3 = s3_new(&ss, &cause);
	CHECK(s3 != NULL, "s3_new");
	if (s3 == NULL)
		return;
	url = s3_presign(s3, "blobs/sha256/ab", 1200, &cause);
	CHECK(url != NULL && strstr(url, "http://127.0.0.1:7480/mirror/site/"
	    "blobs/sha256/ab?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
	    "AKIAIOSFODNN7EXAMPLE%2F") == url && strstr(url, sk) == NULL &&
	    strstr(url, "&X-Amz-Expires=1200&") != NULL,
	    "s3_presign names the object and never the secret");
	free(url);
	CHECK(s3_presign(s3, "../x", 1200, &cause) == NULL && cause != NULL,
	    "a bad key is refused");
	free(cause);
	s3_free(s3);
}

int
main(void)
{
	struct store	*st;
	char		*cause = NULL;

	log_init(0);
	if (mkdtemp(datadir) == NULL) {
		perror("mkdtemp");
		return (1);
	}
	test_open_reopen();
	if ((st = store_open(datadir, &cause)) == NULL) {
		printf("store_open: %s\n", cause);
		return (1);
	}
	test_put_mem(st);
	test_lookup_unblocked(st);
	test_writer(st);
	test_writer_split(st);
	test_invalid(st);
	test_meta(st);
	test_tags(st);
	test_utags(st);
	test_batch(st);
	test_outbox();
	test_presign();
	test_lists(st);
	test_links(&st);
	test_threads(st);
	store_close(st);
	nftw(datadir, test_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	printf("test_store: %d passed, %d failed\n", npass, nfail);
	return (nfail != 0);
}
