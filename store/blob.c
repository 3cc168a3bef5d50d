/*
 * store/blob.c: content-addressed blob files under DIR/blobs/sha256.
 *
 * A blob is written to a temp file under DIR/tmp, hashed on the way,
 * fsynced, made read-only and renamed into DIR/blobs/sha256/<2 hex>/<hex>;
 * its directory is fsynced before the database row is written.  So a file
 * in blobs/ is always complete, and a row always has its file, except for
 * files removed behind our back, which store_blob_stat() checks for.
 * Paths are only ever built from digests that policy_digest_valid() takes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1	/* mkostemp */
#endif

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nixmirror.h"
#include "policy/policy.h"
#include "store/store.h"
#include "store/store_int.h"

#define STORE_IOV_MAX	64	/* vectors per writev */

struct store_writer {
	struct store		*sw_store;
	int			 sw_fd;
	char			*sw_path;	/* temp file, NULL once gone */
	struct nm_sha256	*sw_sha;
	uint64_t		 sw_size;	/* bytes through write() */
	int			 sw_fdused;	/* fd handed to the caller */
	char			 sw_digest[NM_DIGEST_SIZE]; /* once verified */
};

static void	store_writer_free(struct store_writer *);
static int	store_writer_digest(struct store_writer *, const char *,
		    char *, uint64_t *, char **);
static int	store_writer_place(struct store_writer *, const char *,
		    uint64_t, int *, char **);
static int	store_fsync_dir(const char *);

/* The file path of a blob (need not exist); caller frees. */
char *
store_blob_path(struct store *st, const char *digest)
{
	char	*path;

	if (digest == NULL || !policy_digest_valid(digest))
		return (NULL);
	xasprintf(&path, "%s/%.2s/%s", st->st_blobs, digest + 7, digest + 7);
	return (path);
}

/* Opens a stored blob for reading; fd, or -1 when absent. */
int
store_blob_open(struct store *st, const char *digest, uint64_t *size)
{
	struct stat	 sb;
	char		*path;
	int		 fd;

	if ((path = store_blob_path(st, digest)) == NULL)
		return (-1);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd == -1)
		return (-1);
	if (fstat(fd, &sb) == -1 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return (-1);
	}
	if (size != NULL)
		*size = (uint64_t)sb.st_size;
	return (fd);
}

/* Stores bytes held in memory as a blob (e.g. a manifest or config). */
int
store_blob_put_mem(struct store *st, const void *buf, size_t len,
    const char *media_type, char digest[NM_DIGEST_SIZE], char **cause)
{
	struct store_writer	*sw;

	if ((sw = store_writer_new(st, cause)) == NULL)
		return (-1);
	if (store_writer_write(sw, buf, len) == -1) {
		xasprintf(cause, "cannot write blob: %s", strerror(errno));
		store_writer_abort(sw);
		return (-1);
	}
	return (store_writer_commit(sw, NULL, media_type, digest, cause));
}

/* Starts a blob in a new temp file under DIR/tmp. */
struct store_writer *
store_writer_new(struct store *st, char **cause)
{
	struct store_writer	*sw;

	sw = xcalloc(1, sizeof *sw);
	sw->sw_store = st;
	xasprintf(&sw->sw_path, "%s/blob.XXXXXX", st->st_tmp);
	if ((sw->sw_fd = mkostemp(sw->sw_path, O_CLOEXEC)) == -1) {
		xasprintf(cause, "%s: %s", sw->sw_path, strerror(errno));
		free(sw->sw_path);
		free(sw);
		return (NULL);
	}
	sw->sw_sha = nm_sha256_new();
	return (sw);
}

/* The temp file's descriptor, for writers that write it themselves. */
int
store_writer_fd(struct store_writer *sw)
{
	sw->sw_fdused = 1;
	return (sw->sw_fd);
}

/*
 * A new read-only descriptor of the temp file, for readers that follow
 * the writer; it stays valid when the file is renamed or removed.
 */
int
store_writer_reader(struct store_writer *sw)
{
	int	 fd;

	if (sw->sw_path == NULL)
		return (-1);
	if ((fd = open(sw->sw_path, O_RDONLY | O_CLOEXEC)) == -1)
		log_warn("%s: %s", __func__, sw->sw_path);
	return (fd);
}

/* Bytes written so far through store_writer_write. */
uint64_t
store_writer_size(struct store_writer *sw)
{
	return (sw->sw_size);
}

/* Writes and hashes all of buf; 0, or -1 with errno set. */
int
store_writer_write(struct store_writer *sw, const void *buf, size_t len)
{
	const char	*p = buf;
	ssize_t		 n;

	nm_sha256_update(sw->sw_sha, buf, len);
	sw->sw_size += len;
	while (len > 0) {
		if ((n = write(sw->sw_fd, p, len)) == -1) {
			if (errno == EINTR)
				continue;
			log_warn("%s: %s", __func__, sw->sw_path);
			return (-1);
		}
		p += n;
		len -= (size_t)n;
	}
	return (0);
}

/*
 * Hashes bytes that store_writer_put writes, maybe in another thread at
 * the same time; see store.h.
 */
void
store_writer_hash(struct store_writer *sw, const struct iovec *iov, int n)
{
	int	 i;

	for (i = 0; i < n; i++) {
		nm_sha256_update(sw->sw_sha, iov[i].iov_base, iov[i].iov_len);
		sw->sw_size += iov[i].iov_len;
	}
}

/* Writes bytes without hashing them; 0, or -1 with errno set. */
int
store_writer_put(struct store_writer *sw, const struct iovec *iov, int n)
{
	struct iovec	 part[STORE_IOV_MAX];
	ssize_t		 w;
	size_t		 off = 0;
	int		 i, k;

	for (i = 0; i < n; ) {
		/* Up to STORE_IOV_MAX vectors, the first one off bytes in. */
		for (k = 0; k < STORE_IOV_MAX && i + k < n; k++)
			part[k] = iov[i + k];
		part[0].iov_base = (char *)part[0].iov_base + off;
		part[0].iov_len -= off;
		if ((w = writev(sw->sw_fd, part, k)) == -1) {
			if (errno == EINTR)
				continue;
			log_warn("%s: %s", __func__, sw->sw_path);
			return (-1);
		}
		/* Steps over what was written. */
		while (i < n && (size_t)w >= iov[i].iov_len - off) {
			w -= (ssize_t)(iov[i].iov_len - off);
			off = 0;
			i++;
		}
		off += (size_t)w;
	}
	return (0);
}

/* Closes and removes the temp file if still there, and frees the writer. */
static void
store_writer_free(struct store_writer *sw)
{
	if (sw->sw_fd != -1)
		close(sw->sw_fd);
	if (sw->sw_path != NULL) {
		if (unlink(sw->sw_path) == -1 && errno != ENOENT)
			log_warn("%s: unlink %s", __func__, sw->sw_path);
		free(sw->sw_path);
	}
	nm_sha256_free(sw->sw_sha);
	free(sw);
}

/* Discards the temp file and frees the writer. */
void
store_writer_abort(struct store_writer *sw)
{
	if (sw != NULL)
		store_writer_free(sw);
}

/* Works out the blob's digest and size, checking expect if possible. */
static int
store_writer_digest(struct store_writer *sw, const char *expect,
    char *digest, uint64_t *size, char **cause)
{
	struct stat	 sb;

	if (expect != NULL && !policy_digest_valid(expect)) {
		xasprintf(cause, "invalid digest \"%.80s\"", expect);
		return (-1);
	}
	if (sw->sw_fdused) {
		/* Bytes went around us: the caller's digest is trusted. */
		if (expect == NULL) {
			xasprintf(cause, "blob written to fd without digest");
			return (-1);
		}
		if (fstat(sw->sw_fd, &sb) == -1) {
			xasprintf(cause, "fstat: %s", strerror(errno));
			return (-1);
		}
		memcpy(digest, expect, NM_DIGEST_SIZE);
		*size = (uint64_t)sb.st_size;
		return (0);
	}
	if (sw->sw_sha != NULL) {
		nm_sha256_final(sw->sw_sha, sw->sw_digest);
		sw->sw_sha = NULL;
	}
	memcpy(digest, sw->sw_digest, NM_DIGEST_SIZE);
	*size = sw->sw_size;
	if (expect != NULL && strcmp(expect, digest) != 0) {
		xasprintf(cause, "digest mismatch: expected %s, got %s",
		    expect, digest);
		return (-1);
	}
	return (0);
}

/*
 * Checks the bytes written so far against expect, before the commit (no
 * byte may follow); 0, or -1 with *cause on a mismatch.
 */
int
store_writer_verify(struct store_writer *sw, const char *expect,
    char **cause)
{
	char		 d[NM_DIGEST_SIZE];
	uint64_t	 size;

	if (sw->sw_fdused || expect == NULL) {
		xasprintf(cause, "nothing to verify");
		return (-1);
	}
	return (store_writer_digest(sw, expect, d, &size, cause));
}

/* Fsyncs a directory so that renames and creations in it are durable. */
static int
store_fsync_dir(const char *path)
{
	int	 fd, rv;

	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return (-1);
	rv = fsync(fd);
	close(fd);
	return (rv);
}

/*
 * Moves the temp file to the blob's path, unless an identical blob is
 * there already; *placed says whether this call put the file there.
 */
static int
store_writer_place(struct store_writer *sw, const char *digest,
    uint64_t size, int *placed, char **cause)
{
	struct store	*st = sw->sw_store;
	struct stat	 sb;
	char		*path, *sub;
	int		 newdir = 0, rv = -1;

	*placed = 0;
	path = store_blob_path(st, digest);
	xasprintf(&sub, "%s/%.2s", st->st_blobs, digest + 7);
	if (mkdir(sub, 0755) == 0)
		newdir = 1;
	else if (errno != EEXIST) {
		xasprintf(cause, "%s: %s", sub, strerror(errno));
		goto out;
	}
	if (stat(path, &sb) == 0 && (uint64_t)sb.st_size == size) {
		/* Content addressed: same digest and size, same bytes. */
		rv = 0;
		goto out;
	}
	if (rename(sw->sw_path, path) == -1) {
		xasprintf(cause, "rename %s: %s", path, strerror(errno));
		goto out;
	}
	free(sw->sw_path);
	sw->sw_path = NULL;
	*placed = 1;
	if (store_fsync_dir(sub) == -1 ||
	    (newdir && store_fsync_dir(st->st_blobs) == -1)) {
		xasprintf(cause, "fsync %s: %s", sub, strerror(errno));
		goto out;
	}
	rv = 0;
out:
	free(sub);
	free(path);
	return (rv);
}

/*
 * Commits the blob: fsync, read-only, digest check, rename into place,
 * then the database row.  The writer is freed whatever happens.
 */
int
store_writer_commit(struct store_writer *sw, const char *expect,
    const char *media_type, char digest[NM_DIGEST_SIZE], char **cause)
{
	char		 d[NM_DIGEST_SIZE];
	uint64_t	 size;
	int		 placed = 0;

	if (fsync(sw->sw_fd) == -1 || fchmod(sw->sw_fd, 0444) == -1) {
		xasprintf(cause, "%s: %s", sw->sw_path, strerror(errno));
		goto fail;
	}
	if (store_writer_digest(sw, expect, d, &size, cause) == -1)
		goto fail;
	/*
	 * Placing the file and recording its row happen under the store
	 * lock, which gc holds while it deletes rows and unlinks files: a
	 * file found in place here cannot be unlinked before its row exists.
	 */
	store_lock(sw->sw_store);
	if (store_writer_place(sw, d, size, &placed, cause) == -1) {
		store_unlock(sw->sw_store);
		goto fail;
	}
	if (store_db_blob_add_locked(sw->sw_store, d, size, media_type) == -1) {
		store_unlock(sw->sw_store);
		xasprintf(cause, "cannot record blob %s", d);
		goto fail;
	}
	store_unlock(sw->sw_store);
	if (digest != NULL)
		memcpy(digest, d, NM_DIGEST_SIZE);
	store_writer_free(sw);
	return (0);
fail:
	/*
	 * A blob placed before a later step failed stays: it is complete and
	 * content addressed, and a concurrent commit of the same bytes may
	 * already have recorded it (removing it would break that row).
	 */
	(void)placed;
	store_writer_free(sw);
	return (-1);
}

/* Removes every file left in DIR/tmp, e.g. by a crash mid-write. */
void
store_tmp_clean(struct store *st)
{
	struct dirent	*de;
	DIR		*d;
	int		 n = 0;

	if ((d = opendir(st->st_tmp)) == NULL) {
		log_warn("%s: %s", __func__, st->st_tmp);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == -1) {
			if (errno != ENOENT)
				log_warn("%s: %s/%s", __func__, st->st_tmp,
				    de->d_name);
			continue;
		}
		n++;
	}
	closedir(d);
	if (n > 0)
		log_info("%s: removed %d temp files", __func__, n);
}
