/*
 * nix/tar.c: layer tarballs: store paths and the customisation layer as
 * reproducible gzip-compressed tar streams, with their digests.
 *
 * Compression is parallel, as pigz does it: the tar stream is cut into
 * blocks of TAR_BLOCK bytes, and the worker pool compresses a batch of
 * them at once (libdeflate, level 6), each into a gzip member of its own,
 * while the next batch is read.  The members are written in order, so a
 * layer is one gzip file of several members (RFC 1952), byte-identical on
 * any machine and with any number of cores: the cuts depend on the bytes
 * only.  The tar bytes (diff_id) and the gzip bytes (digest) are hashed on
 * the way, once.
 */

#include <sys/types.h>
#include <sys/stat.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libdeflate.h>

#include "nixmirror.h"
#include "nix/nix.h"

#define TAR_CHUNK	(64 * 1024)
#define TAR_BLOCK	(1024 * 1024)	/* tar bytes per gzip member */
#define TAR_LEVEL	6
#define TAR_MAXBATCH	16		/* blocks compressed at once, at most */
#define TAR_MTIME	1

/* A regular file already written in this layer, for hard links. */
struct tar_link {
	dev_t		 tl_dev;
	ino_t		 tl_ino;
	char		*tl_name;
};

/* One block of tar bytes and its gzip member. */
struct tar_block {
	struct libdeflate_compressor	*tb_c;
	unsigned char			*tb_in;
	size_t				 tb_inlen;
	unsigned char			*tb_out;
	size_t				 tb_outsize;
	size_t				 tb_outlen;	/* 0: failed */
};

/* A batch of blocks, filled, then compressed by a group of pool jobs. */
struct tar_batch {
	struct tar_block	 tb_blocks[TAR_MAXBATCH];
	size_t			 tb_n;		/* blocks in use */
	struct work_group	*tb_group;	/* while compressing */
};

/* The output side: tar bytes in, gzip bytes out to a file descriptor. */
struct tar_out {
	struct archive		*to_ar;
	int			 to_fd;
	struct tar_batch	 to_batch[2];	/* one fills, one compresses */
	int			 to_cur;	/* the batch being filled */
	size_t			 to_nblocks;	/* blocks per batch */
	uint64_t		 to_tarsize;
	struct nm_sha256	*to_tarsha;	/* diff_id */
	struct nm_sha256	*to_gzsha;	/* digest */
	uint64_t		 to_size;
	int			 to_failed;
	char			*to_cause;	/* why the output failed */
	void			*to_links;	/* tsearch tree of tar_link */
	struct tar_link		**to_linkv;
	size_t			 to_nlinks;
	char			 to_rbuf[TAR_CHUNK];
};

/* One entry of the customisation layer. */
struct tar_node {
	char		*tn_name;	/* relative, no trailing slash */
	mode_t		 tn_type;	/* AE_IFDIR, AE_IFLNK or AE_IFREG */
	mode_t		 tn_mode;
	char		*tn_target;	/* link target or file contents */
	int		 tn_skip;
};

/* The customisation layer being built: a tree for lookup, a list to sort. */
struct tar_join {
	void		 *tj_tree;
	struct tar_node	**tj_nodes;
	size_t		  tj_n;
};

static const char tar_passwd[] =
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/var/empty:/bin/false\n";
static const char tar_group[] = "root:x:0:\nnobody:x:65534:\n";

static int	tar_walk(struct tar_out *, const char *, char **);
static int	tar_link_cmp(const void *, const void *);
static int	tar_join_dir(struct tar_join *, const char *, const char *,
		    char **);

/* Writes all of buf to fd, across partial writes and interruptions. */
static int
tar_fd_write(int fd, const void *buf, size_t len)
{
	const char	*p = buf;
	ssize_t		 n;

	while (len > 0) {
		if ((n = write(fd, p, len)) == -1) {
			if (errno == EINTR)
				continue;
			return (-1);
		}
		p += n;
		len -= (size_t)n;
	}
	return (0);
}

/* A pool job: one block into one gzip member. */
static void
tar_block_compress(void *arg)
{
	struct tar_block	*tb = arg;

	tb->tb_outlen = libdeflate_gzip_compress(tb->tb_c, tb->tb_in,
	    tb->tb_inlen, tb->tb_out, tb->tb_outsize);
}

/* Hands a filled batch to the pool. */
static void
tar_batch_start(struct tar_batch *tb)
{
	size_t	 i;

	tb->tb_group = work_group_new();
	for (i = 0; i < tb->tb_n; i++)
		work_group_add(tb->tb_group, tar_block_compress,
		    &tb->tb_blocks[i]);
}

/*
 * Waits for a batch being compressed (helping with it) and writes its
 * members in order, hashing them; empties it.  0, or -1 with to_cause.
 */
static int
tar_batch_finish(struct tar_out *to, struct tar_batch *tb)
{
	struct tar_block	*b;
	size_t			 i;
	int			 rv = 0;

	if (tb->tb_group == NULL)
		return (0);
	work_group_wait(tb->tb_group);
	tb->tb_group = NULL;
	for (i = 0; i < tb->tb_n; i++) {
		b = &tb->tb_blocks[i];
		b->tb_inlen = 0;
		if (rv == -1)
			continue;
		if (b->tb_outlen == 0) {
			xasprintf(&to->to_cause, "gzip: compression failed");
			rv = -1;
		} else if (tar_fd_write(to->to_fd, b->tb_out,
		    b->tb_outlen) == -1) {
			xasprintf(&to->to_cause, "write layer: %s",
			    strerror(errno));
			rv = -1;
		} else {
			nm_sha256_update(to->to_gzsha, b->tb_out, b->tb_outlen);
			to->to_size += b->tb_outlen;
		}
	}
	tb->tb_n = 0;
	return (rv);
}

/*
 * The filled batch goes to the pool, after the one before it is written:
 * the pool compresses one batch while the next one fills.
 */
static int
tar_out_flush(struct tar_out *to)
{
	struct tar_batch	*cur = &to->to_batch[to->to_cur];
	struct tar_batch	*prev = &to->to_batch[!to->to_cur];

	if (tar_batch_finish(to, prev) == -1)
		return (-1);
	if (cur->tb_n > 0)
		tar_batch_start(cur);
	to->to_cur = !to->to_cur;
	return (0);
}

/*
 * The block being filled, with room in it; NULL when the batch before,
 * written to make room, failed (to_cause says why).
 */
static struct tar_block *
tar_out_block(struct tar_out *to)
{
	struct tar_batch	*tb = &to->to_batch[to->to_cur];
	struct tar_block	*b;

	if (tb->tb_n > 0 && tb->tb_blocks[tb->tb_n - 1].tb_inlen < TAR_BLOCK)
		return (&tb->tb_blocks[tb->tb_n - 1]);
	if (tb->tb_n == to->to_nblocks) {
		if (tar_out_flush(to) == -1)
			return (NULL);
		tb = &to->to_batch[to->to_cur];
	}
	b = &tb->tb_blocks[tb->tb_n++];
	if (b->tb_c == NULL) {
		if ((b->tb_c = libdeflate_alloc_compressor(TAR_LEVEL)) == NULL)
			fatalx("%s: libdeflate_alloc_compressor", __func__);
		b->tb_outsize = libdeflate_gzip_compress_bound(b->tb_c,
		    TAR_BLOCK);
		b->tb_in = xmalloc(TAR_BLOCK);
		b->tb_out = xmalloc(b->tb_outsize);
	}
	b->tb_inlen = 0;
	return (b);
}

/* The libarchive write callback: hashes tar bytes and cuts them in blocks. */
static la_ssize_t
tar_out_write_cb(struct archive *a, void *arg, const void *buf, size_t len)
{
	struct tar_out		*to = arg;
	struct tar_block	*b;
	const char		*p = buf;
	size_t			 left = len, n;

	if (to->to_failed) {
		archive_set_error(a, EIO, "layer output failed");
		return (-1);
	}
	nm_sha256_update(to->to_tarsha, buf, len);
	to->to_tarsize += len;
	while (left > 0) {
		if ((b = tar_out_block(to)) == NULL) {
			to->to_failed = 1;
			archive_set_error(a, EIO, "%s", to->to_cause);
			return (-1);
		}
		n = TAR_BLOCK - b->tb_inlen;
		if (n > left)
			n = left;
		memcpy(b->tb_in + b->tb_inlen, p, n);
		b->tb_inlen += n;
		p += n;
		left -= n;
	}
	return ((la_ssize_t)len);
}

/* Frees an output and everything it holds. */
static void
tar_out_free(struct tar_out *to)
{
	struct tar_batch	*tb;
	struct tar_block	*b;
	size_t			 i, j;

	if (to == NULL)
		return;
	if (to->to_ar != NULL) {
		/* Nothing more may reach the fd once we gave up. */
		to->to_failed = 1;
		archive_write_free(to->to_ar);
	}
	for (i = 0; i < 2; i++) {
		tb = &to->to_batch[i];
		if (tb->tb_group != NULL)
			work_group_wait(tb->tb_group);
		for (j = 0; j < TAR_MAXBATCH; j++) {
			b = &tb->tb_blocks[j];
			if (b->tb_c != NULL)
				libdeflate_free_compressor(b->tb_c);
			free(b->tb_in);
			free(b->tb_out);
		}
	}
	nm_sha256_free(to->to_tarsha);
	nm_sha256_free(to->to_gzsha);
	for (i = 0; i < to->to_nlinks; i++) {
		tdelete(to->to_linkv[i], &to->to_links, tar_link_cmp);
		free(to->to_linkv[i]->tl_name);
		free(to->to_linkv[i]);
	}
	free(to->to_linkv);
	free(to->to_cause);
	free(to);
}

/* Starts a tar stream into gzip into fd. */
static struct tar_out *
tar_out_new(int fd, char **cause)
{
	struct tar_out	*to;

	to = xcalloc(1, sizeof *to);
	to->to_fd = fd;
	to->to_tarsha = nm_sha256_new();
	to->to_gzsha = nm_sha256_new();
	/* Enough blocks per batch to keep every core busy to its end. */
	to->to_nblocks = 2 * (size_t)work_cpus() + 1;
	if (to->to_nblocks > TAR_MAXBATCH)
		to->to_nblocks = TAR_MAXBATCH;
	if ((to->to_ar = archive_write_new()) == NULL)
		fatalx("%s: archive_write_new", __func__);
	if (archive_write_set_format_pax_restricted(to->to_ar) != ARCHIVE_OK ||
	    archive_write_set_bytes_per_block(to->to_ar, 10240) != ARCHIVE_OK ||
	    archive_write_open(to->to_ar, to, NULL, tar_out_write_cb, NULL) !=
	    ARCHIVE_OK) {
		xasprintf(cause, "tar: %s", archive_error_string(to->to_ar));
		goto fail;
	}
	return (to);

fail:
	tar_out_free(to);
	return (NULL);
}

/* Sets the cause of a failed archive call on name. */
static void
tar_out_error(struct tar_out *to, const char *name, char **cause)
{
	if (to->to_cause != NULL)
		xasprintf(cause, "%s: %s", name, to->to_cause);
	else
		xasprintf(cause, "%s: %s", name,
		    archive_error_string(to->to_ar));
}

/* Ends the tar and gzip streams and fills in the digests and size. */
static int
tar_out_finish(struct tar_out *to, struct nix_tarinfo *info, char **cause)
{
	if (archive_write_close(to->to_ar) != ARCHIVE_OK) {
		tar_out_error(to, "tar", cause);
		return (-1);
	}
	/* An empty stream still makes a (one member) gzip file. */
	if (to->to_tarsize == 0 && tar_out_block(to) == NULL) {
		xasprintf(cause, "gzip: %s", to->to_cause);
		return (-1);
	}
	if (tar_out_flush(to) == -1 ||
	    tar_batch_finish(to, &to->to_batch[!to->to_cur]) == -1) {
		xasprintf(cause, "%s", to->to_cause);
		return (-1);
	}
	nm_sha256_final(to->to_tarsha, info->ti_diffid);
	nm_sha256_final(to->to_gzsha, info->ti_digest);
	to->to_tarsha = to->to_gzsha = NULL;
	info->ti_size = to->to_size;
	return (0);
}

/* Writes one header with the normalised metadata; frees the entry. */
static int
tar_out_header(struct tar_out *to, struct archive_entry *e, char **cause)
{
	int	 ret;

	archive_entry_set_mtime(e, TAR_MTIME, 0);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	ret = archive_write_header(to->to_ar, e);
	if (ret < ARCHIVE_WARN)
		tar_out_error(to, archive_entry_pathname(e), cause);
	else if (ret == ARCHIVE_WARN)
		log_debug("%s: %s: %s", __func__, archive_entry_pathname(e),
		    archive_error_string(to->to_ar));
	archive_entry_free(e);
	return (ret < ARCHIVE_WARN ? -1 : 0);
}

/* Makes an entry of a type, name and permission bits. */
static struct archive_entry *
tar_entry_new(const char *name, mode_t type, mode_t mode)
{
	struct archive_entry	*e;

	if ((e = archive_entry_new()) == NULL)
		fatalx("%s: archive_entry_new", __func__);
	archive_entry_copy_pathname(e, name);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, mode & 07777);
	return (e);
}

/* Writes a directory entry; name has no trailing slash. */
static int
tar_put_dir(struct tar_out *to, const char *name, mode_t mode, char **cause)
{
	char	*slashed;
	int	 ret;

	xasprintf(&slashed, "%s/", name);
	ret = tar_out_header(to, tar_entry_new(slashed, AE_IFDIR, mode), cause);
	free(slashed);
	return (ret);
}

/* Writes a symbolic link entry. */
static int
tar_put_symlink(struct tar_out *to, const char *name, const char *target,
    char **cause)
{
	struct archive_entry	*e;

	e = tar_entry_new(name, AE_IFLNK, 0777);
	archive_entry_copy_symlink(e, target);
	return (tar_out_header(to, e, cause));
}

/* Writes a regular file entry whose contents are in memory. */
static int
tar_put_data(struct tar_out *to, const char *name, mode_t mode,
    const char *data, char **cause)
{
	struct archive_entry	*e;
	size_t			 len = strlen(data);

	e = tar_entry_new(name, AE_IFREG, mode);
	archive_entry_set_size(e, (la_int64_t)len);
	if (tar_out_header(to, e, cause) == -1)
		return (-1);
	if (archive_write_data(to->to_ar, data, len) != (la_ssize_t)len) {
		tar_out_error(to, name, cause);
		return (-1);
	}
	return (0);
}

/* Compares hard link records by device and inode. */
static int
tar_link_cmp(const void *a, const void *b)
{
	const struct tar_link	*la = a, *lb = b;

	if (la->tl_dev != lb->tl_dev)
		return (la->tl_dev < lb->tl_dev ? -1 : 1);
	if (la->tl_ino != lb->tl_ino)
		return (la->tl_ino < lb->tl_ino ? -1 : 1);
	return (0);
}

/*
 * Finds the first name written for a file's inode, or remembers name as
 * that first one and returns NULL.
 */
static const char *
tar_link_find(struct tar_out *to, const struct stat *st, const char *name)
{
	struct tar_link	 key, *tl, **found;

	if (st->st_nlink < 2)
		return (NULL);
	key.tl_dev = st->st_dev;
	key.tl_ino = st->st_ino;
	found = tfind(&key, &to->to_links, tar_link_cmp);
	if (found != NULL)
		return ((*found)->tl_name);
	tl = xmalloc(sizeof *tl);
	*tl = key;
	tl->tl_name = xstrdup(name);
	if (tsearch(tl, &to->to_links, tar_link_cmp) == NULL)
		fatal("%s: tsearch", __func__);
	to->to_linkv = xreallocarray(to->to_linkv, to->to_nlinks + 1,
	    sizeof *to->to_linkv);
	to->to_linkv[to->to_nlinks++] = tl;
	return (NULL);
}

/* Copies an open file's st_size bytes into the archive in chunks. */
static int
tar_copy_fd(struct tar_out *to, int fd, const char *path, off_t size,
    char **cause)
{
	ssize_t	 n;
	off_t	 total = 0;

	for (;;) {
		if ((n = read(fd, to->to_rbuf, sizeof to->to_rbuf)) == -1) {
			if (errno == EINTR)
				continue;
			xasprintf(cause, "%s: %s", path, strerror(errno));
			return (-1);
		}
		if (n == 0)
			break;
		if (total + n > size)
			break;
		if (archive_write_data(to->to_ar, to->to_rbuf, (size_t)n) !=
		    n) {
			tar_out_error(to, path, cause);
			return (-1);
		}
		total += n;
	}
	if (total != size) {
		xasprintf(cause, "%s: changed size while being read", path);
		return (-1);
	}
	return (0);
}

/* Writes a regular file (or a hard link to its first name). */
static int
tar_put_file(struct tar_out *to, const char *path, const struct stat *st,
    char **cause)
{
	struct archive_entry	*e;
	const char		*name = path + 1, *first;
	int			 fd, ret;

	if ((first = tar_link_find(to, st, name)) != NULL) {
		e = tar_entry_new(name, AE_IFREG, st->st_mode);
		archive_entry_copy_hardlink(e, first);
		archive_entry_set_size(e, 0);
		return (tar_out_header(to, e, cause));
	}
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) == -1) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		return (-1);
	}
	e = tar_entry_new(name, AE_IFREG, st->st_mode);
	archive_entry_set_size(e, (la_int64_t)st->st_size);
	ret = tar_out_header(to, e, cause);
	if (ret == 0)
		ret = tar_copy_fd(to, fd, path, st->st_size, cause);
	close(fd);
	return (ret);
}

/* Compares two strings through pointers, for qsort. */
static int
tar_strcmp(const void *a, const void *b)
{
	return (strcmp(*(char *const *)a, *(char *const *)b));
}

/* Lists a directory's entry names, sorted by strcmp. */
static int
tar_dir_list(const char *path, char ***namesp, size_t *np, char **cause)
{
	DIR		*d;
	struct dirent	*de;
	char		**names = NULL;
	size_t		  n = 0;

	if ((d = opendir(path)) == NULL) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		return (-1);
	}
	for (;;) {
		errno = 0;
		if ((de = readdir(d)) == NULL)
			break;
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		names = xreallocarray(names, n + 1, sizeof *names);
		names[n++] = xstrdup(de->d_name);
	}
	if (errno != 0) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		closedir(d);
		while (n > 0)
			free(names[--n]);
		free(names);
		return (-1);
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof *names, tar_strcmp);
	*namesp = names;
	*np = n;
	return (0);
}

/* Writes a directory and, depth first, everything below it. */
static int
tar_walk_dir(struct tar_out *to, const char *path, const struct stat *st,
    char **cause)
{
	char	**names, *child;
	size_t	  n, i;
	int	  ret = 0;

	if (tar_put_dir(to, path + 1, st->st_mode, cause) == -1)
		return (-1);
	if (tar_dir_list(path, &names, &n, cause) == -1)
		return (-1);
	for (i = 0; i < n && ret == 0; i++) {
		xasprintf(&child, "%s/%s", path, names[i]);
		ret = tar_walk(to, child, cause);
		free(child);
	}
	xstrvfree(names, n);
	return (ret);
}

/* Reads a symbolic link's target; NULL with *cause set on error. */
static char *
tar_readlink(const char *path, const struct stat *st, char **cause)
{
	char	*target;
	size_t	 size;
	ssize_t	 n;

	size = st->st_size > 0 ? (size_t)st->st_size + 1 : 4096;
	for (;;) {
		target = xmalloc(size);
		if ((n = readlink(path, target, size)) == -1) {
			xasprintf(cause, "%s: %s", path, strerror(errno));
			free(target);
			return (NULL);
		}
		if ((size_t)n < size)
			break;
		free(target);
		size *= 2;
	}
	target[n] = '\0';
	return (target);
}

/* Writes one absolute path, whatever its type, and what is below it. */
static int
tar_walk(struct tar_out *to, const char *path, char **cause)
{
	struct stat	 st;
	char		*target;
	int		 ret;

	if (lstat(path, &st) == -1) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		return (-1);
	}
	if (S_ISDIR(st.st_mode))
		return (tar_walk_dir(to, path, &st, cause));
	if (S_ISREG(st.st_mode))
		return (tar_put_file(to, path, &st, cause));
	if (S_ISLNK(st.st_mode)) {
		if ((target = tar_readlink(path, &st, cause)) == NULL)
			return (-1);
		ret = tar_put_symlink(to, path + 1, target, cause);
		free(target);
		return (ret);
	}
	xasprintf(cause, "%s: unsupported file type %o", path,
	    (unsigned)(st.st_mode & S_IFMT));
	return (-1);
}

/*
 * Lists the ancestor directories of sorted absolute paths without the
 * leading slash ("nix", "nix/store"), sorted and unique.
 */
static void
tar_ancestors(char *const *paths, size_t n, char ***dirsp, size_t *ndirsp)
{
	char		**dirs = NULL;
	const char	 *p, *slash;
	size_t		  ndirs = 0, i;

	for (i = 0; i < n; i++) {
		p = paths[i] + 1;
		while ((slash = strchr(p, '/')) != NULL) {
			dirs = xreallocarray(dirs, ndirs + 1, sizeof *dirs);
			dirs[ndirs++] = strndup(paths[i] + 1,
			    (size_t)(slash - (paths[i] + 1)));
			if (dirs[ndirs - 1] == NULL)
				fatal("%s: strndup", __func__);
			p = slash + 1;
		}
	}
	if (ndirs > 0)
		qsort(dirs, ndirs, sizeof *dirs, tar_strcmp);
	for (i = 0; i + 1 < ndirs; i++) {
		if (strcmp(dirs[i], dirs[i + 1]) == 0) {
			free(dirs[i]);
			memmove(&dirs[i], &dirs[i + 1],
			    (ndirs - i - 1) * sizeof *dirs);
			ndirs--;
			i--;
		}
	}
	*dirsp = dirs;
	*ndirsp = ndirs;
}

/* Copies and checks the store paths: absolute, no trailing slash, sorted. */
static char **
tar_paths_sorted(char *const *paths, size_t n, char **cause)
{
	char	**v;
	size_t	  i, len;

	v = xcalloc(n, sizeof *v);
	for (i = 0; i < n; i++) {
		len = strlen(paths[i]);
		if (paths[i][0] != '/' || len < 2 || paths[i][len - 1] == '/' ||
		    strstr(paths[i], "//") != NULL) {
			xasprintf(cause, "%s: not a normal absolute path",
			    paths[i]);
			xstrvfree(v, i);
			return (NULL);
		}
		v[i] = xstrdup(paths[i]);
	}
	if (n > 0)
		qsort(v, n, sizeof *v, tar_strcmp);
	return (v);
}

/*
 * Writes store paths (absolute, sorted or not) as a gzip-compressed layer
 * to fd: their ancestors and every file below each path.
 */
int
nix_tar_paths(char *const *paths, size_t n, int fd, struct nix_tarinfo *info,
    char **cause)
{
	struct tar_out	 *to = NULL;
	char		**sorted, **dirs = NULL;
	size_t		  ndirs = 0, i;
	int		  ret = -1;

	if ((sorted = tar_paths_sorted(paths, n, cause)) == NULL)
		return (-1);
	tar_ancestors(sorted, n, &dirs, &ndirs);
	if ((to = tar_out_new(fd, cause)) == NULL)
		goto fail;
	for (i = 0; i < ndirs; i++) {
		if (tar_put_dir(to, dirs[i], 0755, cause) == -1)
			goto fail;
	}
	for (i = 0; i < n; i++) {
		if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0)
			continue;
		if (tar_walk(to, sorted[i], cause) == -1)
			goto fail;
	}
	if (tar_out_finish(to, info, cause) == -1)
		goto fail;
	ret = 0;

fail:
	tar_out_free(to);
	xstrvfree(dirs, ndirs);
	xstrvfree(sorted, n);
	return (ret);
}

/* Compares customisation entries by name. */
static int
tar_node_cmp(const void *a, const void *b)
{
	const struct tar_node	*na = a, *nb = b;

	return (strcmp(na->tn_name, nb->tn_name));
}

/* Finds a customisation entry by name. */
static struct tar_node *
tar_join_get(struct tar_join *tj, const char *name)
{
	struct tar_node	 key, **found;

	key.tn_name = (char *)(uintptr_t)name;
	found = tfind(&key, &tj->tj_tree, tar_node_cmp);
	return (found != NULL ? *found : NULL);
}

/* Adds a customisation entry or replaces the one of the same name. */
static void
tar_join_set(struct tar_join *tj, const char *name, mode_t type, mode_t mode,
    const char *target)
{
	struct tar_node	*tn;

	if ((tn = tar_join_get(tj, name)) == NULL) {
		tn = xcalloc(1, sizeof *tn);
		tn->tn_name = xstrdup(name);
		if (tsearch(tn, &tj->tj_tree, tar_node_cmp) == NULL)
			fatal("%s: tsearch", __func__);
		tj->tj_nodes = xreallocarray(tj->tj_nodes, tj->tj_n + 1,
		    sizeof *tj->tj_nodes);
		tj->tj_nodes[tj->tj_n++] = tn;
	}
	free(tn->tn_target);
	tn->tn_target = target != NULL ? xstrdup(target) : NULL;
	tn->tn_type = type;
	tn->tn_mode = mode;
}

/* Frees the customisation entries. */
static void
tar_join_clear(struct tar_join *tj)
{
	size_t	 i;

	for (i = 0; i < tj->tj_n; i++) {
		tdelete(tj->tj_nodes[i], &tj->tj_tree, tar_node_cmp);
		free(tj->tj_nodes[i]->tn_name);
		free(tj->tj_nodes[i]->tn_target);
		free(tj->tj_nodes[i]);
	}
	free(tj->tj_nodes);
	memset(tj, 0, sizeof *tj);
}

/*
 * Joins one entry of a package: directories merge, anything else becomes
 * a link to its store path unless an earlier package has the name.
 */
static int
tar_join_entry(struct tar_join *tj, const char *path, const char *rel,
    char **cause)
{
	struct tar_node	*tn;
	struct stat	 st;

	if (lstat(path, &st) == -1) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		return (-1);
	}
	tn = tar_join_get(tj, rel);
	if (!S_ISDIR(st.st_mode)) {
		if (tn == NULL)
			tar_join_set(tj, rel, AE_IFLNK, 0777, path);
		return (0);
	}
	if (tn != NULL && tn->tn_type != AE_IFDIR)
		return (0);
	if (tn == NULL)
		tar_join_set(tj, rel, AE_IFDIR, 0755, NULL);
	return (tar_join_dir(tj, path, rel, cause));
}

/* Joins the contents of a package directory at rel ("" for the root). */
static int
tar_join_dir(struct tar_join *tj, const char *path, const char *rel,
    char **cause)
{
	char	**names, *child, *crel;
	size_t	  n, i;
	int	  ret = 0;

	if (tar_dir_list(path, &names, &n, cause) == -1)
		return (-1);
	for (i = 0; i < n && ret == 0; i++) {
		xasprintf(&child, "%s/%s", path, names[i]);
		if (*rel == '\0')
			crel = xstrdup(names[i]);
		else
			xasprintf(&crel, "%s/%s", rel, names[i]);
		ret = tar_join_entry(tj, child, crel, cause);
		free(crel);
		free(child);
	}
	xstrvfree(names, n);
	return (ret);
}

/* Makes name a directory unless it already is one. */
static void
tar_join_mkdir(struct tar_join *tj, const char *name, mode_t mode)
{
	struct tar_node	*tn;

	if ((tn = tar_join_get(tj, name)) != NULL && tn->tn_type == AE_IFDIR)
		tn->tn_mode = mode;
	else
		tar_join_set(tj, name, AE_IFDIR, mode, NULL);
}

/* Adds the fixed entries: /tmp, /root, /usr/bin/env, /etc/passwd, group. */
static void
tar_join_base(struct tar_join *tj)
{
	struct tar_node	*env;
	char		*target = NULL;

	tar_join_mkdir(tj, "tmp", 01777);
	tar_join_mkdir(tj, "root", 0700);
	tar_join_mkdir(tj, "etc", 0755);
	tar_join_set(tj, "etc/passwd", AE_IFREG, 0644, tar_passwd);
	tar_join_set(tj, "etc/group", AE_IFREG, 0644, tar_group);
	env = tar_join_get(tj, "bin/env");
	if (env != NULL && env->tn_type == AE_IFLNK)
		target = xstrdup(env->tn_target);
	if (target != NULL) {
		tar_join_mkdir(tj, "usr", 0755);
		tar_join_mkdir(tj, "usr/bin", 0755);
		tar_join_set(tj, "usr/bin/env", AE_IFLNK, 0777, target);
		free(target);
	}
}

/* Compares customisation entries by name, through pointers, for qsort. */
static int
tar_nodep_cmp(const void *a, const void *b)
{
	return (tar_node_cmp(*(void *const *)a, *(void *const *)b));
}

/*
 * Sorts the entries and marks those whose parent is missing, not a
 * directory or itself skipped (what an override left behind).
 */
static void
tar_join_sort(struct tar_join *tj)
{
	struct tar_node	*tn, *parent;
	char		*name, *slash;
	size_t		 i;

	if (tj->tj_n > 0)
		qsort(tj->tj_nodes, tj->tj_n, sizeof *tj->tj_nodes,
		    tar_nodep_cmp);
	for (i = 0; i < tj->tj_n; i++) {
		tn = tj->tj_nodes[i];
		name = xstrdup(tn->tn_name);
		if ((slash = strrchr(name, '/')) != NULL) {
			*slash = '\0';
			parent = tar_join_get(tj, name);
			tn->tn_skip = parent == NULL || parent->tn_skip ||
			    parent->tn_type != AE_IFDIR;
		}
		free(name);
	}
}

/* Writes one customisation entry. */
static int
tar_join_put(struct tar_out *to, const struct tar_node *tn, char **cause)
{
	switch (tn->tn_type) {
	case AE_IFDIR:
		return (tar_put_dir(to, tn->tn_name, tn->tn_mode, cause));
	case AE_IFLNK:
		return (tar_put_symlink(to, tn->tn_name, tn->tn_target, cause));
	default:
		return (tar_put_data(to, tn->tn_name, tn->tn_mode,
		    tn->tn_target, cause));
	}
}

/*
 * Writes the customisation layer for the given top-level store paths: a
 * symlinkJoin of them at /, /tmp, /usr/bin/env, /etc/passwd, /etc/group.
 */
int
nix_tar_custom(char *const *paths, size_t n, int fd, struct nix_tarinfo *info,
    char **cause)
{
	struct tar_join	 tj;
	struct tar_out	*to = NULL;
	struct stat	 st;
	size_t		 i;
	int		 ret = -1;

	memset(&tj, 0, sizeof tj);
	for (i = 0; i < n; i++) {
		if (lstat(paths[i], &st) == -1) {
			xasprintf(cause, "%s: %s", paths[i], strerror(errno));
			goto fail;
		}
		if (!S_ISDIR(st.st_mode)) {
			log_debug("%s: %s: not a directory, not joined",
			    __func__, paths[i]);
			continue;
		}
		if (tar_join_dir(&tj, paths[i], "", cause) == -1)
			goto fail;
	}
	tar_join_base(&tj);
	tar_join_sort(&tj);
	if ((to = tar_out_new(fd, cause)) == NULL)
		goto fail;
	for (i = 0; i < tj.tj_n; i++) {
		if (!tj.tj_nodes[i]->tn_skip &&
		    tar_join_put(to, tj.tj_nodes[i], cause) == -1)
			goto fail;
	}
	if (tar_out_finish(to, info, cause) == -1)
		goto fail;
	ret = 0;

fail:
	tar_out_free(to);
	tar_join_clear(&tj);
	return (ret);
}
