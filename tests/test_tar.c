/*
 * tests/test_tar.c: layer tarballs and the image config and manifests.
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <event2/event.h>
#include <jansson.h>

#include "nixmirror.h"
#include "nix/nix.h"

#define BIG_SIZE	(1536 * 1024)

static int	 passed, failed;
static char	*base;		/* the temporary directory */
static char	*store;		/* base + "/store" */

/* Records one check. */
static void
check(int ok, const char *what, int line)
{
	if (ok)
		passed++;
	else {
		failed++;
		printf("FAIL line %d: %s\n", line, what);
	}
}
#define CHECK(c)	check((c), #c, __LINE__)

/* One entry read back from a layer. */
struct entry {
	char		*e_name;
	mode_t		 e_type;
	mode_t		 e_perm;
	time_t		 e_mtime;
	long		 e_mtimensec;
	int		 e_atimeset;
	la_int64_t	 e_uid, e_gid;
	char		*e_link;	/* symlink target */
	char		*e_hard;	/* hard link target */
	char		*e_data;
	size_t		 e_len;
};

struct layer {
	struct entry	*l_v;
	size_t		 l_n;
	char		*l_gz;
	size_t		 l_gzlen;
	char		*l_tar;
	size_t		 l_tarlen;
};

/* A path under the fake store, caller frees. */
static char *
spath(const char *rel)
{
	char	*path;

	xasprintf(&path, "%s/%s", store, rel);
	return (path);
}

/* Writes a file with contents and mode under the fake store. */
static void
put_file(const char *rel, const void *data, size_t len, mode_t mode)
{
	char	*path = spath(rel);
	FILE	*f;

	if ((f = fopen(path, "w")) == NULL || fwrite(data, 1, len, f) != len ||
	    fclose(f) != 0)
		fatal("%s", path);
	if (chmod(path, mode) == -1)
		fatal("chmod %s", path);
	free(path);
}

/* Makes a directory under the fake store. */
static void
put_dir(const char *rel)
{
	char	*path = spath(rel);

	if (mkdir(path, 0755) == -1)
		fatal("mkdir %s", path);
	free(path);
}

/* Makes a symbolic link under the fake store. */
static void
put_link(const char *target, const char *rel)
{
	char	*path = spath(rel);

	if (symlink(target, path) == -1)
		fatal("symlink %s", path);
	free(path);
}

/* Sets the mode of something under the fake store. */
static void
put_mode(const char *rel, mode_t mode)
{
	char	*path = spath(rel);

	if (chmod(path, mode) == -1)
		fatal("chmod %s", path);
	free(path);
}

/* Incompressible but fixed bytes. */
static char *
big_data(void)
{
	char		*p;
	uint64_t	 x = 0x9e3779b97f4a7c15ULL;
	size_t		 i;

	p = xmalloc(BIG_SIZE);
	for (i = 0; i < BIG_SIZE; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (char)(x >> 24);
	}
	return (p);
}

/* Builds the fake store. */
static void
make_store(void)
{
	char	*a, *b, *big;

	xasprintf(&base, "%s/test_tar.XXXXXX",
	    getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(base) == NULL)
		fatal("mkdtemp");
	xasprintf(&store, "%s/store", base);
	if (mkdir(store, 0755) == -1)
		fatal("mkdir");
	put_dir("aaa-foo");
	put_dir("aaa-foo/bin");
	put_file("aaa-foo/bin/foo", "hello foo\n", 10, 0555);
	put_dir("aaa-foo/lib");
	put_file("aaa-foo/lib/libfoo.so", "lib", 3, 0444);
	put_link("libfoo.so", "aaa-foo/lib/link");
	put_dir("aaa-foo/share");
	put_dir("bbb-big");
	big = big_data();
	put_file("bbb-big/data", big, BIG_SIZE, 0444);
	free(big);
	put_dir("ccc-bar");
	put_file("ccc-bar/B", "B", 1, 0444);
	put_file("ccc-bar/_x", "_", 1, 0444);
	put_file("ccc-bar/a", "a", 1, 0444);
	put_dir("ccc-bar/bin");
	a = spath("aaa-foo/bin/foo");
	b = spath("ccc-bar/bin/bar");
	if (link(a, b) == -1)
		fatal("link");
	free(a);
	free(b);
	put_file("ddd-script.sh", "#!/bin/sh\n", 10, 0555);
	put_mode("aaa-foo/bin", 0555);
	put_mode("aaa-foo/lib", 0555);
	put_mode("aaa-foo/share", 0555);
	put_mode("aaa-foo", 0555);
	put_mode("ccc-bar", 0555);

	/* Two packages for the customisation layer. */
	put_dir("p1-hello");
	put_dir("p1-hello/bin");
	put_file("p1-hello/bin/hello", "1", 1, 0555);
	put_file("p1-hello/bin/env", "e", 1, 0555);
	put_dir("p1-hello/etc");
	put_file("p1-hello/etc/passwd", "evil", 4, 0444);
	put_dir("p1-hello/share");
	put_dir("p1-hello/share/man");
	put_file("p1-hello/share/man/hello.1", "m", 1, 0444);
	put_dir("p2-tools");
	put_dir("p2-tools/bin");
	put_file("p2-tools/bin/hello", "2", 1, 0555);
	put_file("p2-tools/bin/tool", "t", 1, 0555);
	put_link("bin", "p2-tools/sbin");
	put_dir("p2-tools/share");
	put_dir("p2-tools/share/doc");
	put_file("p2-tools/share/doc/x", "x", 1, 0444);
}

/* Removes the fake store. */
static void
remove_store(void)
{
	char	*cmd;

	xasprintf(&cmd, "chmod -R u+w '%s' && rm -rf '%s'", base, base);
	if (system(cmd) != 0)
		printf("could not remove %s\n", base);
	free(cmd);
}

/* Reads all of an fd from the start. */
static char *
read_fd(int fd, size_t *lenp)
{
	char	*buf = NULL;
	size_t	 len = 0;
	ssize_t	 n;

	if (lseek(fd, 0, SEEK_SET) == -1)
		fatal("lseek");
	for (;;) {
		buf = xreallocarray(buf, len + 65536, 1);
		if ((n = read(fd, buf + len, 65536)) == -1)
			fatal("read");
		if (n == 0)
			break;
		len += (size_t)n;
	}
	*lenp = len;
	return (buf);
}

static int	gz_members;	/* members the last gunzip read */

/* Decompresses gzip bytes, every member of them, with zlib. */
static char *
gunzip(const char *gz, size_t gzlen, size_t *lenp)
{
	z_stream	 zs;
	char		*out = NULL;
	size_t		 cap = 0, total = 0;
	int		 ret;

	gz_members = 0;
	memset(&zs, 0, sizeof zs);
	if (inflateInit2(&zs, 15 + 16) != Z_OK)
		fatalx("inflateInit2");
	zs.next_in = (Bytef *)(uintptr_t)gz;
	zs.avail_in = (uInt)gzlen;
	do {
		if (cap - total < (1 << 20)) {
			cap += 1 << 20;
			out = xreallocarray(out, cap, 1);
		}
		zs.next_out = (Bytef *)out + total;
		zs.avail_out = (uInt)(cap - total);
		ret = inflate(&zs, Z_NO_FLUSH);
		total = (size_t)((char *)zs.next_out - out);
		if (ret == Z_STREAM_END) {
			gz_members++;
			/* RFC 1952: a gzip file is a series of members. */
			if (zs.avail_in > 0 && inflateReset(&zs) == Z_OK)
				ret = Z_OK;
		}
	} while (ret == Z_OK);
	*lenp = ret == Z_STREAM_END ? total : 0;
	inflateEnd(&zs);
	return (out);
}

/* Reads a layer's entries back with libarchive. */
static int
read_layer(const char *gz, size_t gzlen, struct layer *l)
{
	struct archive		*a;
	struct archive_entry	*ae;
	struct entry		*e;
	la_ssize_t		 n;
	int			 ret;

	a = archive_read_new();
	archive_read_support_format_all(a);
	archive_read_support_filter_gzip(a);
	if (archive_read_open_memory(a, gz, gzlen) != ARCHIVE_OK)
		return (-1);
	while ((ret = archive_read_next_header(a, &ae)) == ARCHIVE_OK) {
		l->l_v = xreallocarray(l->l_v, l->l_n + 1, sizeof *l->l_v);
		e = &l->l_v[l->l_n++];
		memset(e, 0, sizeof *e);
		e->e_name = xstrdup(archive_entry_pathname(ae));
		e->e_type = archive_entry_filetype(ae);
		e->e_perm = archive_entry_perm(ae);
		e->e_mtime = archive_entry_mtime(ae);
		e->e_mtimensec = archive_entry_mtime_nsec(ae);
		e->e_atimeset = archive_entry_atime_is_set(ae) ||
		    archive_entry_ctime_is_set(ae);
		e->e_uid = archive_entry_uid(ae);
		e->e_gid = archive_entry_gid(ae);
		if (archive_entry_symlink(ae) != NULL)
			e->e_link = xstrdup(archive_entry_symlink(ae));
		if (archive_entry_hardlink(ae) != NULL)
			e->e_hard = xstrdup(archive_entry_hardlink(ae));
		e->e_data = xmalloc(archive_entry_size(ae) + 1);
		n = archive_read_data(a, e->e_data, archive_entry_size(ae) + 1);
		e->e_len = n > 0 ? (size_t)n : 0;
		if (n > 0 && n < archive_entry_size(ae)) {
			/* Large entries come in pieces. */
			while ((n = archive_read_data(a, e->e_data + e->e_len,
			    archive_entry_size(ae) - e->e_len)) > 0)
				e->e_len += (size_t)n;
		}
		e->e_data[e->e_len] = '\0';
	}
	archive_read_free(a);
	return (ret == ARCHIVE_EOF ? 0 : -1);
}

/* Frees a layer read back. */
static void
layer_free(struct layer *l)
{
	size_t	 i;

	for (i = 0; i < l->l_n; i++) {
		free(l->l_v[i].e_name);
		free(l->l_v[i].e_link);
		free(l->l_v[i].e_hard);
		free(l->l_v[i].e_data);
	}
	free(l->l_v);
	free(l->l_gz);
	free(l->l_tar);
}

/* Finds an entry by name relative to the store ("aaa-foo/bin/"). */
static struct entry *
layer_find(struct layer *l, const char *rel)
{
	char	*name;
	size_t	 i;

	xasprintf(&name, "%s/%s", store + 1, rel);
	for (i = 0; i < l->l_n; i++) {
		if (strcmp(l->l_v[i].e_name, name) == 0 ||
		    strcmp(l->l_v[i].e_name, rel) == 0)
			break;
	}
	free(name);
	return (i < l->l_n ? &l->l_v[i] : NULL);
}

/* Writes a layer into a temporary file and reads everything back. */
static int
make_layer(int custom, char *const *paths, size_t n, struct nix_tarinfo *ti,
    struct layer *l)
{
	char	*tmp, *cause = NULL;
	int	 fd, ret;

	xasprintf(&tmp, "%s/layer.XXXXXX", base);
	if ((fd = mkstemp(tmp)) == -1)
		fatal("mkstemp");
	unlink(tmp);
	free(tmp);
	memset(ti, 0, sizeof *ti);
	memset(l, 0, sizeof *l);
	if (custom)
		ret = nix_tar_custom(paths, n, fd, ti, &cause);
	else
		ret = nix_tar_paths(paths, n, fd, ti, &cause);
	if (ret == -1) {
		printf("layer failed: %s\n", cause);
		free(cause);
		close(fd);
		return (-1);
	}
	l->l_gz = read_fd(fd, &l->l_gzlen);
	close(fd);
	l->l_tar = gunzip(l->l_gz, l->l_gzlen, &l->l_tarlen);
	return (read_layer(l->l_gz, l->l_gzlen, l));
}

/* Checks the metadata every entry must have. */
static void
check_meta(struct layer *l)
{
	size_t	 i;
	int	 ok = 1;

	for (i = 0; i < l->l_n; i++) {
		if (l->l_v[i].e_mtime != 1 || l->l_v[i].e_mtimensec != 0 ||
		    l->l_v[i].e_atimeset || l->l_v[i].e_uid != 0 ||
		    l->l_v[i].e_gid != 0) {
			printf("bad metadata: %s\n", l->l_v[i].e_name);
			ok = 0;
		}
	}
	CHECK(ok && l->l_n > 0);
}

/* Checks the entry names against a list relative to the store. */
static void
check_names(struct layer *l, const char *const *want, size_t n)
{
	char	*name;
	size_t	 i;
	int	 ok = l->l_n == n;

	for (i = 0; ok && i < n; i++) {
		xasprintf(&name, "%s/%s", store + 1, want[i]);
		if (strcmp(l->l_v[i].e_name, name) != 0) {
			printf("entry %zu: %s, want %s\n", i,
			    l->l_v[i].e_name, name);
			ok = 0;
		}
		free(name);
	}
	CHECK(ok);
}

/* The store-path layer: order, metadata, links, contents, digests. */
static void
test_paths(void)
{
	static const char *const want[] = {
		"aaa-foo/", "aaa-foo/bin/", "aaa-foo/bin/foo", "aaa-foo/lib/",
		"aaa-foo/lib/libfoo.so", "aaa-foo/lib/link", "aaa-foo/share/",
		"bbb-big/", "bbb-big/data",
		"ccc-bar/", "ccc-bar/B", "ccc-bar/_x", "ccc-bar/a",
		"ccc-bar/bin/", "ccc-bar/bin/bar", "ddd-script.sh",
	};
	struct nix_tarinfo	 ti1, ti2;
	struct layer		 l1, l2;
	struct entry		*e;
	char			*paths[4], digest[NM_DIGEST_SIZE], *big, *name;
	char			*p, *q;
	size_t			 nanc = 0, i;

	xasprintf(&paths[0], "%s/ccc-bar", store);
	xasprintf(&paths[1], "%s/aaa-foo", store);
	xasprintf(&paths[2], "%s/ddd-script.sh", store);
	xasprintf(&paths[3], "%s/bbb-big", store);
	CHECK(make_layer(0, paths, 4, &ti1, &l1) == 0);
	CHECK(make_layer(0, paths, 4, &ti2, &l2) == 0);

	/* Reproducible, and the digests are what they say. */
	CHECK(l1.l_gzlen == l2.l_gzlen &&
	    memcmp(l1.l_gz, l2.l_gz, l1.l_gzlen) == 0);
	CHECK(strcmp(ti1.ti_digest, ti2.ti_digest) == 0);
	CHECK(strcmp(ti1.ti_diffid, ti2.ti_diffid) == 0);
	CHECK(ti1.ti_size == l1.l_gzlen);
	nm_sha256_digest(l1.l_gz, l1.l_gzlen, digest);
	CHECK(strcmp(digest, ti1.ti_digest) == 0);
	CHECK(l1.l_tarlen > BIG_SIZE && l1.l_tarlen % 10240 == 0);
	nm_sha256_digest(l1.l_tar, l1.l_tarlen, digest);
	CHECK(strcmp(digest, ti1.ti_diffid) == 0);
	CHECK(strcmp(ti1.ti_digest, ti1.ti_diffid) != 0);
	/* Blocks of 1 MiB compressed apart: one member each. */
	CHECK(gz_members == (int)((l1.l_tarlen + (1 << 20) - 1) >> 20));
	CHECK(l1.l_gzlen > 10 && (unsigned char)l1.l_gz[0] == 0x1f &&
	    (unsigned char)l1.l_gz[1] == 0x8b && memcmp(l1.l_gz + 4,
	    "\0\0\0\0", 4) == 0);

	/* The ancestors first: every directory above the store paths. */
	for (p = store + 1; (q = strchr(p, '/')) != NULL || *p != '\0';
	    p = q + 1) {
		name = strndup(store + 1, q != NULL ?
		    (size_t)(q - (store + 1)) : strlen(store + 1));
		if (nanc >= l1.l_n ||
		    strncmp(l1.l_v[nanc].e_name, name, strlen(name)) != 0 ||
		    strcmp(l1.l_v[nanc].e_name + strlen(name), "/") != 0 ||
		    l1.l_v[nanc].e_type != AE_IFDIR ||
		    l1.l_v[nanc].e_perm != 0755)
			printf("ancestor %zu: want %s/\n", nanc, name);
		else
			nanc++;
		free(name);
		if (q == NULL)
			break;
	}
	CHECK(nanc > 1 && l1.l_v[0].e_name[0] != '/');
	if (nanc <= l1.l_n) {
		l1.l_v += nanc;
		l1.l_n -= nanc;
		check_names(&l1, want, sizeof want / sizeof want[0]);
		l1.l_v -= nanc;
		l1.l_n += nanc;
	}
	check_meta(&l1);

	/* Types, modes, links and contents. */
	e = layer_find(&l1, "aaa-foo/bin/");
	CHECK(e != NULL && e->e_type == AE_IFDIR && e->e_perm == 0555);
	e = layer_find(&l1, "aaa-foo/bin/foo");
	CHECK(e != NULL && e->e_type == AE_IFREG && e->e_perm == 0555 &&
	    strcmp(e->e_data, "hello foo\n") == 0 && e->e_hard == NULL);
	e = layer_find(&l1, "aaa-foo/lib/libfoo.so");
	CHECK(e != NULL && e->e_perm == 0444 && strcmp(e->e_data, "lib") == 0);
	e = layer_find(&l1, "aaa-foo/lib/link");
	CHECK(e != NULL && e->e_type == AE_IFLNK && e->e_link != NULL &&
	    strcmp(e->e_link, "libfoo.so") == 0);
	e = layer_find(&l1, "ccc-bar/bin/bar");
	xasprintf(&name, "%s/aaa-foo/bin/foo", store + 1);
	CHECK(e != NULL && e->e_hard != NULL && strcmp(e->e_hard, name) == 0);
	free(name);
	e = layer_find(&l1, "ddd-script.sh");
	CHECK(e != NULL && e->e_type == AE_IFREG && e->e_perm == 0555 &&
	    strcmp(e->e_data, "#!/bin/sh\n") == 0);
	e = layer_find(&l1, "bbb-big/data");
	big = big_data();
	CHECK(e != NULL && e->e_len == BIG_SIZE &&
	    memcmp(e->e_data, big, BIG_SIZE) == 0);
	/* Incompressible: the gzip is not much smaller than the data. */
	CHECK(l1.l_gzlen > BIG_SIZE);
	free(big);

	layer_free(&l1);
	layer_free(&l2);
	for (i = 0; i < 4; i++)
		free(paths[i]);
}

/* Errors: relative paths, missing paths and special files. */
static void
test_paths_errors(void)
{
	struct nix_tarinfo	 ti;
	char			*paths[1], *cause = NULL, *tmp;
	int			 fd;

	xasprintf(&tmp, "%s/err.XXXXXX", base);
	if ((fd = mkstemp(tmp)) == -1)
		fatal("mkstemp");
	unlink(tmp);
	free(tmp);
	paths[0] = (char *)(uintptr_t)"relative/path";
	CHECK(nix_tar_paths(paths, 1, fd, &ti, &cause) == -1 &&
	    cause != NULL && strstr(cause, "relative/path") != NULL);
	free(cause);
	cause = NULL;
	xasprintf(&paths[0], "%s/zzz-missing", store);
	CHECK(nix_tar_paths(paths, 1, fd, &ti, &cause) == -1 &&
	    cause != NULL && strstr(cause, "zzz-missing") != NULL);
	free(cause);
	free(paths[0]);
	cause = NULL;
	xasprintf(&paths[0], "%s/fifo", base);
	if (mkfifo(paths[0], 0644) == -1)
		fatal("mkfifo");
	CHECK(nix_tar_paths(paths, 1, fd, &ti, &cause) == -1 &&
	    cause != NULL && strstr(cause, "unsupported") != NULL);
	free(cause);
	free(paths[0]);
	close(fd);
}

/* The customisation layer: a symlinkJoin plus the fixed files. */
static void
test_custom(void)
{
	static const char *const want[] = {
		"bin/", "bin/env", "bin/hello", "bin/tool", "etc/",
		"etc/group", "etc/passwd", "root/", "sbin", "share/",
		"share/doc/", "share/doc/x", "share/man/", "share/man/hello.1",
		"tmp/", "usr/", "usr/bin/", "usr/bin/env",
	};
	struct nix_tarinfo	 ti1, ti2;
	struct layer		 l1, l2;
	struct entry		*e;
	char			*paths[2], *t;
	size_t			 i;
	int			 ok;

	xasprintf(&paths[0], "%s/p1-hello", store);
	xasprintf(&paths[1], "%s/p2-tools", store);
	CHECK(make_layer(1, paths, 2, &ti1, &l1) == 0);
	CHECK(make_layer(1, paths, 2, &ti2, &l2) == 0);
	CHECK(l1.l_gzlen == l2.l_gzlen &&
	    memcmp(l1.l_gz, l2.l_gz, l1.l_gzlen) == 0 &&
	    strcmp(ti1.ti_digest, ti2.ti_digest) == 0);
	CHECK(ti1.ti_size == l1.l_gzlen);

	ok = l1.l_n == sizeof want / sizeof want[0];
	for (i = 0; ok && i < l1.l_n; i++) {
		if (strcmp(l1.l_v[i].e_name, want[i]) != 0) {
			printf("custom entry %zu: %s, want %s\n", i,
			    l1.l_v[i].e_name, want[i]);
			ok = 0;
		}
	}
	CHECK(ok);
	check_meta(&l1);

	e = layer_find(&l1, "bin/hello");
	xasprintf(&t, "%s/p1-hello/bin/hello", store);
	CHECK(e != NULL && e->e_type == AE_IFLNK && strcmp(e->e_link, t) == 0);
	free(t);
	e = layer_find(&l1, "bin/tool");
	xasprintf(&t, "%s/p2-tools/bin/tool", store);
	CHECK(e != NULL && e->e_type == AE_IFLNK && strcmp(e->e_link, t) == 0);
	free(t);
	e = layer_find(&l1, "sbin");
	xasprintf(&t, "%s/p2-tools/sbin", store);
	CHECK(e != NULL && e->e_type == AE_IFLNK && strcmp(e->e_link, t) == 0);
	free(t);
	e = layer_find(&l1, "usr/bin/env");
	xasprintf(&t, "%s/p1-hello/bin/env", store);
	CHECK(e != NULL && e->e_type == AE_IFLNK && strcmp(e->e_link, t) == 0);
	free(t);
	e = layer_find(&l1, "bin/");
	CHECK(e != NULL && e->e_type == AE_IFDIR && e->e_perm == 0755);
	e = layer_find(&l1, "tmp/");
	CHECK(e != NULL && e->e_type == AE_IFDIR && e->e_perm == 01777);
	e = layer_find(&l1, "root/");
	CHECK(e != NULL && e->e_type == AE_IFDIR && e->e_perm == 0700);
	e = layer_find(&l1, "etc/passwd");
	CHECK(e != NULL && e->e_type == AE_IFREG && e->e_perm == 0644 &&
	    strcmp(e->e_data, "root:x:0:0:root:/root:/bin/sh\n"
	    "nobody:x:65534:65534:nobody:/var/empty:/bin/false\n") == 0);
	e = layer_find(&l1, "etc/group");
	CHECK(e != NULL && e->e_type == AE_IFREG &&
	    strcmp(e->e_data, "root:x:0:\nnobody:x:65534:\n") == 0);
	layer_free(&l1);
	layer_free(&l2);

	/* Without bin/env there is no /usr/bin/env; order decides the wins. */
	CHECK(make_layer(1, &paths[1], 1, &ti1, &l1) == 0);
	CHECK(layer_find(&l1, "usr/bin/env") == NULL &&
	    layer_find(&l1, "usr/") == NULL && layer_find(&l1, "tmp/") != NULL);
	e = layer_find(&l1, "bin/hello");
	xasprintf(&t, "%s/p2-tools/bin/hello", store);
	CHECK(e != NULL && strcmp(e->e_link, t) == 0);
	free(t);
	CHECK(strcmp(ti1.ti_digest, ti2.ti_digest) != 0);
	layer_free(&l1);
	free(paths[0]);
	free(paths[1]);
}

/* The image config. */
static void
test_config(void)
{
	struct nix_image_layer	 layers[2];
	json_t			*j;
	json_error_t		 err;
	char			*s, *s2;
	const char		*arch = NULL, *os = NULL, *created = NULL;
	const char		*type = NULL;
	json_t			*env = NULL, *cmd = NULL, *diffids = NULL;

	memset(layers, 0, sizeof layers);
	nm_sha256_digest("a", 1, layers[0].il_diffid);
	nm_sha256_digest("b", 1, layers[1].il_diffid);
	strcpy(layers[0].il_digest, "sha256:00");
	s = nix_image_config(layers, 2, NM_SYSTEM_X86, "/nix/store/x-cacert",
	    "/nix/store/y-hello/bin/hello", 0, NULL);
	s2 = nix_image_config(layers, 2, NM_SYSTEM_X86, "/nix/store/x-cacert",
	    "/nix/store/y-hello/bin/hello", 0, NULL);
	CHECK(s != NULL && s2 != NULL && strcmp(s, s2) == 0);
	CHECK(s != NULL && strchr(s, ' ') == NULL && strchr(s, '\n') == NULL);
	j = json_loads(s, 0, &err);
	CHECK(j != NULL && json_unpack(j,
	    "{s:s, s:s, s:s, s:{s:o, s:o}, s:{s:s, s:o}}",
	    "architecture", &arch, "os", &os, "created", &created,
	    "config", "Env", &env, "Cmd", &cmd,
	    "rootfs", "type", &type, "diff_ids", &diffids) == 0);
	CHECK(arch != NULL && strcmp(arch, "amd64") == 0 &&
	    strcmp(os, "linux") == 0 &&
	    strcmp(created, "1970-01-01T00:00:01Z") == 0 &&
	    strcmp(type, "layers") == 0);
	CHECK(json_array_size(env) == 2 && strcmp(json_string_value(
	    json_array_get(env, 0)),
	    "PATH=/bin:/usr/bin:/sbin:/usr/sbin") == 0 &&
	    strcmp(json_string_value(json_array_get(env, 1)),
	    "SSL_CERT_FILE=/nix/store/x-cacert/etc/ssl/certs/ca-bundle.crt") ==
	    0);
	CHECK(json_array_size(cmd) == 1 && strcmp(json_string_value(
	    json_array_get(cmd, 0)), "/nix/store/y-hello/bin/hello") == 0);
	CHECK(json_array_size(diffids) == 2 && strcmp(json_string_value(
	    json_array_get(diffids, 1)), layers[1].il_diffid) == 0 &&
	    strcmp(json_string_value(json_array_get(diffids, 0)),
	    "sha256:ca978112ca1bbdcafac231b39a23dc4d"
	    "a786eff8147c4e72b9807785afee48bb") == 0);
	json_decref(j);
	free(s);
	free(s2);

	/* arm64, shell wins over a program, no cacert. */
	s = nix_image_config(layers, 1, NM_SYSTEM_ARM64, NULL, "/x/bin/y", 1, NULL);
	j = s != NULL ? json_loads(s, 0, &err) : NULL;
	CHECK(j != NULL && strcmp(json_string_value(json_object_get(j,
	    "architecture")), "arm64") == 0);
	env = json_object_get(json_object_get(j, "config"), "Env");
	cmd = json_object_get(json_object_get(j, "config"), "Cmd");
	CHECK(json_array_size(env) == 1 && json_array_size(cmd) == 1 &&
	    strcmp(json_string_value(json_array_get(cmd, 0)), "bash") == 0);
	json_decref(j);
	free(s);

	/* No program, no shell: no Cmd; unknown systems are refused. */
	s = nix_image_config(layers, 0, NM_SYSTEM_X86, NULL, NULL, 0, NULL);
	CHECK(s != NULL && strcmp(s, "{\"architecture\":\"amd64\","
	    "\"config\":{\"Env\":[\"PATH=/bin:/usr/bin:/sbin:/usr/sbin\"]},"
	    "\"created\":\"1970-01-01T00:00:01Z\",\"os\":\"linux\","
	    "\"rootfs\":{\"diff_ids\":[],\"type\":\"layers\"}}") == 0);
	free(s);
	CHECK(nix_image_config(layers, 1, "mips-linux", NULL, NULL, 0, NULL) ==
	    NULL);
}

/* The manifests in both forms. */
static void
test_manifest(void)
{
	struct nix_image_layer	 layers[2];
	json_t			*j, *lv;
	json_error_t		 err;
	char			*s, *s2;
	json_int_t		 size = 0;
	const char		*mt = NULL, *cmt = NULL, *cdig = NULL;
	int			 schema = 0;

	memset(layers, 0, sizeof layers);
	strcpy(layers[0].il_digest, "sha256:aa");
	layers[0].il_size = 123;
	strcpy(layers[1].il_digest, "sha256:bb");
	layers[1].il_size = 5000000000ULL;
	s = nix_image_manifest(layers, 1, "sha256:cc", 42, 0);
	CHECK(s != NULL && strcmp(s, "{\"config\":{\"digest\":\"sha256:cc\","
	    "\"mediaType\":\"application/vnd.docker.container.image.v1+json\","
	    "\"size\":42},\"layers\":[{\"digest\":\"sha256:aa\","
	    "\"mediaType\":"
	    "\"application/vnd.docker.image.rootfs.diff.tar.gzip\","
	    "\"size\":123}],\"mediaType\":"
	    "\"application/vnd.docker.distribution.manifest.v2+json\","
	    "\"schemaVersion\":2}") == 0);
	free(s);

	s = nix_image_manifest(layers, 2, "sha256:cc", 42, 1);
	s2 = nix_image_manifest(layers, 2, "sha256:cc", 42, 1);
	CHECK(s != NULL && s2 != NULL && strcmp(s, s2) == 0);
	j = json_loads(s, 0, &err);
	CHECK(j != NULL && json_unpack(j, "{s:i, s:s, s:{s:s, s:I, s:s}, s:o}",
	    "schemaVersion", &schema, "mediaType", &mt, "config",
	    "mediaType", &cmt, "size", &size, "digest", &cdig,
	    "layers", &lv) == 0);
	CHECK(schema == 2 && mt != NULL &&
	    strcmp(mt, "application/vnd.oci.image.manifest.v1+json") == 0 &&
	    strcmp(cmt, "application/vnd.oci.image.config.v1+json") == 0 &&
	    size == 42 && strcmp(cdig, "sha256:cc") == 0);
	CHECK(json_array_size(lv) == 2 && strcmp(json_string_value(
	    json_object_get(json_array_get(lv, 1), "mediaType")),
	    "application/vnd.oci.image.layer.v1.tar+gzip") == 0 &&
	    json_is_integer(json_object_get(json_array_get(lv, 1), "size")) &&
	    json_integer_value(json_object_get(json_array_get(lv, 1),
	    "size")) == 5000000000LL);
	json_decref(j);
	free(s);
	free(s2);

	/* A layer's store paths are an annotation, in the OCI form only. */
	layers[0].il_paths = (char *)(uintptr_t)"/nix/store/a-x /nix/store/b-y";
	s = nix_image_manifest(layers, 2, "sha256:cc", 42, 1);
	j = s != NULL ? json_loads(s, 0, &err) : NULL;
	lv = json_object_get(j, "layers");
	CHECK(json_is_string(json_object_get(json_object_get(json_array_get(lv,
	    0), "annotations"), NIX_ANN_PATHS)) && strcmp(json_string_value(
	    json_object_get(json_object_get(json_array_get(lv, 0),
	    "annotations"), NIX_ANN_PATHS)), layers[0].il_paths) == 0);
	CHECK(json_object_get(json_array_get(lv, 1), "annotations") == NULL);
	json_decref(j);
	free(s);
	s = nix_image_manifest(layers, 2, "sha256:cc", 42, 0);
	CHECK(s != NULL && strstr(s, "annotations") == NULL);
	free(s);
	layers[0].il_paths = NULL;
}

/* Labels go into the config's "config" object, sorted like the rest. */
static void
test_labels(void)
{
	struct nix_image_layer	 layers[1];
	json_t			*labels, *j;
	char			*s;

	memset(layers, 0, sizeof layers);
	nm_sha256_digest("a", 1, layers[0].il_diffid);
	labels = json_pack("{s:s, s:s}", "org.opencontainers.image.revision",
	    "abc", "dev.nixmirror.packages", "hello");
	s = nix_image_config(layers, 1, NM_SYSTEM_X86, NULL, NULL, 0, labels);
	j = s != NULL ? json_loads(s, 0, NULL) : NULL;
	CHECK(json_equal(json_object_get(json_object_get(j, "config"),
	    "Labels"), labels));
	CHECK(s != NULL && strstr(s, "\"Labels\":{\"dev.nixmirror.packages\""
	    ":\"hello\",\"org.opencontainers.image.revision\":\"abc\"}") !=
	    NULL);
	json_decref(j);
	free(s);
	json_decref(labels);
	labels = json_object();
	s = nix_image_config(layers, 1, NM_SYSTEM_X86, NULL, NULL, 0, labels);
	CHECK(s != NULL && strstr(s, "Labels") == NULL);
	free(s);
	json_decref(labels);
}

/*
 * The bytes of a layer do not depend on how many cores compress it: one
 * (no pool: the caller compresses every block) or the machine's (pool).
 */
static void
test_cores(void)
{
	struct event_base	*eb;
	struct nix_tarinfo	 ti1, ti2;
	struct layer		 l1, l2;
	char			*paths[2], *cause = NULL;

	xasprintf(&paths[0], "%s/bbb-big", store);
	xasprintf(&paths[1], "%s/aaa-foo", store);
	CHECK(make_layer(0, paths, 2, &ti1, &l1) == 0);
	if ((eb = event_base_new()) == NULL ||
	    work_init(eb, 0, &cause) == -1)
		fatalx("work_init: %s", cause != NULL ? cause : "no base");
	CHECK(make_layer(0, paths, 2, &ti2, &l2) == 0);
	printf("layer of %zu tar bytes, %d members, with 1 and %d cores\n",
	    l1.l_tarlen, gz_members, work_cpus());
	CHECK(l1.l_gzlen == l2.l_gzlen &&
	    memcmp(l1.l_gz, l2.l_gz, l1.l_gzlen) == 0);
	CHECK(strcmp(ti1.ti_digest, ti2.ti_digest) == 0 &&
	    strcmp(ti1.ti_diffid, ti2.ti_diffid) == 0);
	CHECK(gz_members > 1);
	work_drain();
	event_base_free(eb);
	layer_free(&l1);
	layer_free(&l2);
	free(paths[0]);
	free(paths[1]);
}

int
main(void)
{
	log_init(0);
	make_store();
	test_paths();
	test_cores();
	test_paths_errors();
	test_custom();
	test_config();
	test_manifest();
	test_labels();
	remove_store();
	free(store);
	free(base);
	printf("test_tar: %d passed, %d failed\n", passed, failed);
	return (failed != 0);
}
