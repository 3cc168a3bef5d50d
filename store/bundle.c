/*
 * store/bundle.c: OCI image layout bundles, an air-gapped site's way in
 * and out of the store.
 *
 * Export writes stored images as an OCI image layout in a tar: oci-layout,
 * index.json naming each image's manifest with its full reference, and
 * blobs/sha256/<hex> holding the manifests, child manifests, configs,
 * layers and referrers (SBOMs) byte for byte as stored.  Import reads
 * such a tar (from nixmirror or any other tool), hashes every blob while
 * reading it into a temp file, and records nothing until the whole
 * bundle checked out: then blobs, manifests, links, referrer lists and
 * tags, so a corrupt or truncated bundle leaves the store as it was.
 */
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>

#include "nixmirror.h"
#include "policy/policy.h"
#include "store/store.h"
#include "store/store_int.h"

#define BUNDLE_MAX_JSON	(4 * 1024 * 1024)	/* a manifest, index.json */
#define BUNDLE_MAX_DEPTH 2			/* index, manifest, theirs */
#define BUNDLE_CHUNK	(256 * 1024)
#define BUNDLE_REF_NAME	"org.opencontainers.image.ref.name"
#define BUNDLE_CTR_NAME	"io.containerd.image.name"
#define BUNDLE_MT_INDEX	"application/vnd.oci.image.index.v1+json"
#define BUNDLE_MT_OCI	"application/vnd.oci.image.manifest.v1+json"

/* A set of digests, in the order they were added. */
struct bundle_set {
	char		(*bs_d)[NM_DIGEST_SIZE];
	size_t		 bs_n;
	size_t		 bs_cap;
};

static int
bundle_set_has(const struct bundle_set *bs, const char *digest)
{
	size_t	 i;

	for (i = 0; i < bs->bs_n; i++)
		if (strcmp(bs->bs_d[i], digest) == 0)
			return (1);
	return (0);
}

static void
bundle_set_add(struct bundle_set *bs, const char *digest)
{
	if (bundle_set_has(bs, digest))
		return;
	if (bs->bs_n == bs->bs_cap) {
		bs->bs_cap = bs->bs_cap == 0 ? 32 : bs->bs_cap * 2;
		bs->bs_d = xreallocarray(bs->bs_d, bs->bs_cap, sizeof *bs->bs_d);
	}
	snprintf(bs->bs_d[bs->bs_n++], NM_DIGEST_SIZE, "%s", digest);
}

/* The store's namespace and repository of a reference. */
static const char *
bundle_ns(const struct policy_ref *pr)
{
	return (pr->pr_ns != NULL ? pr->pr_ns : STORE_NIX_NS);
}

/* The kind of a referrers list: Nix images keep theirs under "". */
static char *
bundle_referrers_kind(const char *digest)
{
	char	*kind;

	xasprintf(&kind, "%s%s", STORE_LIST_REFERRERS, digest);
	return (kind);
}

/* The digest of descriptor d, when it is a valid sha256 one. */
static const char *
bundle_desc_digest(json_t *d)
{
	const char	*s = json_string_value(json_object_get(d, "digest"));

	return (s != NULL && policy_digest_valid(s) ? s : NULL);
}

/*
 * Export: adds a stored manifest and everything it needs to set.  An
 * index takes the child manifests that are stored whole (a multi-arch
 * image prefetched for one platform has one); an image manifest needs
 * its config and every layer.  0, or -1 with *cause.
 */
static int
bundle_collect(struct store *st, struct bundle_set *set, const char *digest,
    const char *ref, int depth, char **cause)
{
	json_t		*root, *v;
	const char	*d;
	uint64_t	 size;
	size_t		 i, mark;
	char		*sub = NULL;

	if ((root = store_manifest_json(st, digest)) == NULL) {
		xasprintf(cause, "%s: manifest %s is not stored", ref, digest);
		return (-1);
	}
	bundle_set_add(set, digest);
	if (json_is_array(json_object_get(root, "manifests"))) {
		json_array_foreach(json_object_get(root, "manifests"), i, v) {
			if ((d = bundle_desc_digest(v)) == NULL ||
			    depth >= BUNDLE_MAX_DEPTH ||
			    store_blob_stat(st, d, &size, NULL) == -1)
				continue;
			mark = set->bs_n;
			if (bundle_collect(st, set, d, ref, depth + 1,
			    &sub) == -1) {
				/* A child not stored whole stays out. */
				set->bs_n = mark;
				free(sub);
				sub = NULL;
			}
		}
		json_decref(root);
		return (0);
	}
	if ((d = bundle_desc_digest(json_object_get(root, "config"))) != NULL &&
	    store_blob_stat(st, d, &size, NULL) == -1) {
		xasprintf(cause, "%s: config %s is not stored", ref, d);
		json_decref(root);
		return (-1);
	}
	if (d != NULL)
		bundle_set_add(set, d);
	json_array_foreach(json_object_get(root, "layers"), i, v) {
		if ((d = bundle_desc_digest(v)) == NULL)
			continue;
		if (store_blob_stat(st, d, &size, NULL) == -1) {
			xasprintf(cause, "%s: layer %s is not stored (evicted?); "
			    "prefetch the image again", ref, d);
			json_decref(root);
			return (-1);
		}
		bundle_set_add(set, d);
	}
	json_decref(root);
	return (0);
}

/* The index.json descriptor of a stored manifest; NULL when not stored. */
static json_t *
bundle_descriptor(struct store *st, const char *digest)
{
	uint64_t	 size;
	char		*type = NULL;
	json_t		*d;

	if (store_blob_stat(st, digest, &size, &type) == -1 || type == NULL) {
		free(type);
		return (NULL);
	}
	d = json_pack("{s:s, s:s, s:I}", "mediaType", type, "digest", digest,
	    "size", (json_int_t)size);
	free(type);
	return (d);
}

/*
 * Export: the referrers the store keeps for a manifest, whole ones only,
 * added to set and to the index's manifests (without a ref name).
 */
static void
bundle_collect_referrers(struct store *st, struct bundle_set *set,
    json_t *manifests, const struct policy_ref *pr, const char *digest)
{
	json_t		*list, *v, *d;
	const char	*dg;
	char		*kind, *text = NULL, *cause = NULL;
	size_t		 i, mark;
	time_t		 fetched;

	kind = bundle_referrers_kind(digest);
	list = store_list_get(st, bundle_ns(pr), pr->pr_ns != NULL ?
	    pr->pr_repo : "", kind, &text, &fetched) == 0 ?
	    json_loads(text, 0, NULL) : NULL;
	free(kind);
	free(text);
	json_array_foreach(list, i, v) {
		if ((dg = bundle_desc_digest(v)) == NULL ||
		    bundle_set_has(set, dg) ||
		    (d = bundle_descriptor(st, dg)) == NULL)
			continue;
		mark = set->bs_n;
		if (bundle_collect(st, set, dg, pr->pr_ref, 1, &cause) == -1) {
			set->bs_n = mark;
			free(cause);
			cause = NULL;
			json_decref(d);
			continue;
		}
		if (json_is_string(json_object_get(v, "artifactType")))
			json_object_set(d, "artifactType",
			    json_object_get(v, "artifactType"));
		json_array_append_new(manifests, d);
	}
	json_decref(list);
}

/* Export: one tar entry of len bytes from memory. */
static int
bundle_put_mem(struct archive *a, const char *name, const void *buf,
    size_t len)
{
	struct archive_entry	*e;
	int			 rv = 0;

	e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, (la_int64_t)len);
	if (archive_write_header(a, e) != ARCHIVE_OK ||
	    archive_write_data(a, buf, len) != (la_ssize_t)len)
		rv = -1;
	archive_entry_free(e);
	return (rv);
}

/* Export: a directory entry. */
static int
bundle_put_dir(struct archive *a, const char *name)
{
	struct archive_entry	*e;
	int			 rv;

	e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, AE_IFDIR);
	archive_entry_set_perm(e, 0755);
	rv = archive_write_header(a, e) == ARCHIVE_OK ? 0 : -1;
	archive_entry_free(e);
	return (rv);
}

/*
 * Export: a stored blob as blobs/sha256/<hex>, hashed on the way, so a
 * file damaged on disk is an error rather than a bad bundle.
 */
static int
bundle_put_blob(struct archive *a, struct store *st, const char *digest,
    char *buf, char **cause)
{
	struct archive_entry	*e;
	struct nm_sha256	*sha;
	char			 name[96], got[NM_DIGEST_SIZE];
	uint64_t		 size, left;
	ssize_t			 n;
	int			 fd, rv = -1;

	if ((fd = store_blob_open(st, digest, &size)) == -1) {
		xasprintf(cause, "blob %s is no longer stored", digest);
		return (-1);
	}
	snprintf(name, sizeof name, "blobs/sha256/%s", digest + 7);
	e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, (la_int64_t)size);
	sha = nm_sha256_new();
	if (archive_write_header(a, e) != ARCHIVE_OK)
		goto out;
	for (left = size; left > 0; left -= (uint64_t)n) {
		n = read(fd, buf, left < BUNDLE_CHUNK ? left : BUNDLE_CHUNK);
		if (n <= 0) {
			xasprintf(cause, "blob %s: %s", digest, n == 0 ?
			    "shorter than its size" : strerror(errno));
			goto out;
		}
		nm_sha256_update(sha, buf, (size_t)n);
		if (archive_write_data(a, buf, (size_t)n) != n)
			goto out;
	}
	nm_sha256_final(sha, got);
	sha = NULL;
	if (strcmp(got, digest) != 0)
		xasprintf(cause, "stored blob %s is damaged (its bytes hash to "
		    "%s); run nixmirror gc and prefetch again", digest, got);
	else
		rv = 0;
out:
	if (rv == -1 && *cause == NULL)
		xasprintf(cause, "writing %s: %s", name, archive_error_string(a));
	if (sha != NULL)
		nm_sha256_free(sha);
	archive_entry_free(e);
	close(fd);
	return (rv);
}

/* Export: the manifest a reference names, from its tag or digest. */
static int
bundle_resolve(struct store *st, const struct policy_ref *pr,
    char digest[NM_DIGEST_SIZE])
{
	time_t	 checked;

	if (pr->pr_digest != NULL) {
		if (!store_link_has(st, bundle_ns(pr), pr->pr_repo,
		    pr->pr_digest))
			return (-1);
		snprintf(digest, NM_DIGEST_SIZE, "%s", pr->pr_digest);
		return (0);
	}
	return (store_utag_get(st, bundle_ns(pr), pr->pr_repo, pr->pr_tag,
	    digest, &checked));
}

/* Writes the images as an OCI image layout tar at path; see store.h. */
int
store_export(struct store *st, const struct policy_ref *refs, size_t nrefs,
    const char *path, uint64_t *bytes, char **cause)
{
	struct bundle_set	 set;
	struct archive		*a = NULL;
	json_t			*index, *manifests, *d;
	char			 digest[NM_DIGEST_SIZE], *tmp = NULL, *text;
	char			*missing = NULL, *old, *buf = NULL;
	const char		*ctr;
	struct stat		 sb;
	size_t			 i;
	int			 rv = -1;

	memset(&set, 0, sizeof set);
	manifests = json_array();
	for (i = 0; i < nrefs; i++) {
		if (bundle_resolve(st, &refs[i], digest) == -1 ||
		    (d = bundle_descriptor(st, digest)) == NULL) {
			old = missing;
			xasprintf(&missing, "%s%s%s", old != NULL ? old : "",
			    old != NULL ? ", " : "", refs[i].pr_ref);
			free(old);
			continue;
		}
		if (bundle_collect(st, &set, digest, refs[i].pr_ref, 0,
		    cause) == -1) {
			json_decref(d);
			goto out;
		}
		/* containerd's own annotation wants a Docker-style name. */
		ctr = refs[i].pr_ns == NULL ? "docker.io/" : "";
		xasprintf(&text, "%s%s", ctr, refs[i].pr_ref);
		json_object_set_new(d, "annotations", json_pack("{s:s, s:s}",
		    BUNDLE_REF_NAME, refs[i].pr_ref, BUNDLE_CTR_NAME, text));
		free(text);
		json_array_append_new(manifests, d);
		bundle_collect_referrers(st, &set, manifests, &refs[i], digest);
	}
	if (missing != NULL) {
		xasprintf(cause, "not in the store: %s (prefetch them, or "
		    "export with --fetch)", missing);
		goto out;
	}
	index = json_pack("{s:i, s:s, s:o}", "schemaVersion", 2, "mediaType",
	    BUNDLE_MT_INDEX, "manifests", json_incref(manifests));
	text = json_dumps(index, JSON_COMPACT);
	json_decref(index);

	xasprintf(&tmp, "%s.tmp.%ld", path, (long)getpid());
	a = archive_write_new();
	buf = xmalloc(BUNDLE_CHUNK);
	if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
	    archive_write_open_filename(a, tmp) != ARCHIVE_OK) {
		xasprintf(cause, "%s: %s", tmp, archive_error_string(a));
		free(text);
		goto out;
	}
	if (bundle_put_mem(a, "oci-layout", "{\"imageLayoutVersion\":"
	    "\"1.0.0\"}", 30) == -1 ||
	    bundle_put_mem(a, "index.json", text, strlen(text)) == -1 ||
	    bundle_put_dir(a, "blobs/") == -1 ||
	    bundle_put_dir(a, "blobs/sha256/") == -1) {
		xasprintf(cause, "%s: %s", tmp, archive_error_string(a));
		free(text);
		goto out;
	}
	free(text);
	for (i = 0; i < set.bs_n; i++)
		if (bundle_put_blob(a, st, set.bs_d[i], buf, cause) == -1)
			goto out;
	if (archive_write_close(a) != ARCHIVE_OK) {
		xasprintf(cause, "%s: %s", tmp, archive_error_string(a));
		goto out;
	}
	if (stat(tmp, &sb) == 0 && bytes != NULL)
		*bytes = (uint64_t)sb.st_size;
	if (rename(tmp, path) == -1) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		goto out;
	}
	rv = 0;
out:
	if (a != NULL)
		archive_write_free(a);
	if (rv == -1 && tmp != NULL)
		(void)unlink(tmp);
	free(tmp);
	free(buf);
	free(missing);
	free(set.bs_d);
	json_decref(manifests);
	return (rv);
}

/* Import: one blob of the bundle. */
struct bundle_blob {
	char			 bb_digest[NM_DIGEST_SIZE];
	struct store_writer	*bb_w;		/* NULL: stored already */
	char			*bb_json;	/* small blobs' bytes */
	size_t			 bb_len;
	uint64_t		 bb_size;
	const char		*bb_type;	/* media type once walked */
	int			 bb_used;	/* reached from index.json */
};

/* Import: what was read, and what index.json asks for. */
struct bundle_in {
	struct store		*bi_store;
	struct bundle_blob	*bi_blobs;
	size_t			 bi_n;
	size_t			 bi_cap;
	char			*bi_index;	/* index.json's bytes */
	size_t			 bi_indexlen;
	char			*bi_layout;	/* oci-layout's */
	size_t			 bi_layoutlen;
};

static struct bundle_blob *
bundle_in_find(struct bundle_in *bi, const char *digest)
{
	size_t	 i;

	for (i = 0; i < bi->bi_n; i++)
		if (strcmp(bi->bi_blobs[i].bb_digest, digest) == 0)
			return (&bi->bi_blobs[i]);
	return (NULL);
}

static void
bundle_in_free(struct bundle_in *bi)
{
	size_t	 i;

	for (i = 0; i < bi->bi_n; i++) {
		store_writer_abort(bi->bi_blobs[i].bb_w);
		free(bi->bi_blobs[i].bb_json);
	}
	free(bi->bi_blobs);
	free(bi->bi_index);
	free(bi->bi_layout);
}

/* Import: reads a small entry into memory; 0, or -1 with *cause. */
static int
bundle_read_small(struct archive *a, const char *name, la_int64_t size,
    char **out, size_t *len, char **cause)
{
	la_ssize_t	 n;
	size_t		 have = 0;

	if (size < 0 || size > BUNDLE_MAX_JSON) {
		xasprintf(cause, "%s is larger than %d bytes", name,
		    BUNDLE_MAX_JSON);
		return (-1);
	}
	free(*out);
	*out = xmalloc((size_t)size + 1);
	while ((n = archive_read_data(a, *out + have, (size_t)size + 1 -
	    have)) > 0)
		have += (size_t)n;
	if (n < 0 || have != (size_t)size) {
		xasprintf(cause, "%s is truncated: %s", name, n < 0 ?
		    archive_error_string(a) : "short read");
		return (-1);
	}
	(*out)[have] = '\0';
	*len = have;
	return (0);
}

/*
 * Import: one blobs/sha256/<hex> entry, hashed as it is read; a blob
 * the store lacks goes to a temp file.  0, or -1 with *cause.
 */
static int
bundle_read_blob(struct bundle_in *bi, struct archive *a, const char *hex,
    la_int64_t size, char *buf, char **cause)
{
	struct bundle_blob	*bb;
	struct nm_sha256	*sha = NULL;
	char			 digest[NM_DIGEST_SIZE], got[NM_DIGEST_SIZE];
	uint64_t		 ssize;
	la_ssize_t		 n;
	uint64_t		 have = 0;

	snprintf(digest, sizeof digest, "sha256:%s", hex);
	if (!policy_digest_valid(digest)) {
		xasprintf(cause, "blobs/sha256/%.80s is not named by a sha256 "
		    "digest", hex);
		return (-1);
	}
	if (bundle_in_find(bi, digest) != NULL)
		return (0);	/* a second copy: the first was checked */
	if (bi->bi_n == bi->bi_cap) {
		bi->bi_cap = bi->bi_cap == 0 ? 32 : bi->bi_cap * 2;
		bi->bi_blobs = xreallocarray(bi->bi_blobs, bi->bi_cap,
		    sizeof *bi->bi_blobs);
	}
	bb = &bi->bi_blobs[bi->bi_n++];
	memset(bb, 0, sizeof *bb);
	memcpy(bb->bb_digest, digest, sizeof digest);
	if (store_blob_stat(bi->bi_store, digest, &ssize, NULL) == -1) {
		if ((bb->bb_w = store_writer_new(bi->bi_store, cause)) == NULL)
			return (-1);
	} else
		sha = nm_sha256_new();
	if (size >= 0 && size <= BUNDLE_MAX_JSON)
		bb->bb_json = xmalloc((size_t)size + 1);
	while ((n = archive_read_data(a, buf, BUNDLE_CHUNK)) > 0) {
		if (bb->bb_json != NULL && have + (uint64_t)n <= (uint64_t)size)
			memcpy(bb->bb_json + have, buf, (size_t)n);
		have += (uint64_t)n;
		if (sha != NULL)
			nm_sha256_update(sha, buf, (size_t)n);
		else if (store_writer_write(bb->bb_w, buf, (size_t)n) == -1) {
			xasprintf(cause, "writing blob %s: %s", digest,
			    strerror(errno));
			return (-1);
		}
	}
	if (n < 0 || have != (uint64_t)size) {
		if (sha != NULL)
			nm_sha256_free(sha);
		xasprintf(cause, "blob %s is truncated: %s", digest, n < 0 ?
		    archive_error_string(a) : "short read");
		return (-1);
	}
	bb->bb_size = have;
	if (bb->bb_json != NULL) {
		bb->bb_json[have] = '\0';
		bb->bb_len = have;
	}
	if (sha != NULL) {
		nm_sha256_final(sha, got);
		if (strcmp(got, digest) != 0)
			goto bad;
		return (0);
	}
	if (store_writer_verify(bb->bb_w, digest, cause) == -1) {
		free(*cause);
		*cause = NULL;
		goto bad;
	}
	return (0);
bad:
	xasprintf(cause, "blob %s does not match its digest: the bundle is "
	    "corrupt, and nothing was imported", digest);
	return (-1);
}

/* Import: reads every entry of the tar. */
static int
bundle_read(struct bundle_in *bi, const char *path, char **cause)
{
	struct archive		*a;
	struct archive_entry	*e;
	const char		*name;
	char			*buf;
	int			 r, rv = -1;

	a = archive_read_new();
	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a);
	if (archive_read_open_filename(a, path, BUNDLE_CHUNK) != ARCHIVE_OK) {
		xasprintf(cause, "%s: %s", path, archive_error_string(a));
		archive_read_free(a);
		return (-1);
	}
	buf = xmalloc(BUNDLE_CHUNK);
	while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		name = archive_entry_pathname(e);
		while (name[0] == '.' && name[1] == '/')
			name += 2;
		if (archive_entry_filetype(e) != AE_IFREG)
			continue;
		if (strcmp(name, "index.json") == 0) {
			if (bundle_read_small(a, name, archive_entry_size(e),
			    &bi->bi_index, &bi->bi_indexlen, cause) == -1)
				goto out;
		} else if (strcmp(name, "oci-layout") == 0) {
			if (bundle_read_small(a, name, archive_entry_size(e),
			    &bi->bi_layout, &bi->bi_layoutlen, cause) == -1)
				goto out;
		} else if (strncmp(name, "blobs/sha256/", 13) == 0) {
			if (bundle_read_blob(bi, a, name + 13,
			    archive_entry_size(e), buf, cause) == -1)
				goto out;
		} else if (strncmp(name, "blobs/", 6) == 0) {
			xasprintf(cause, "%s: only sha256 blobs are supported",
			    name);
			goto out;
		}
	}
	if (r != ARCHIVE_EOF) {
		xasprintf(cause, "%s is truncated or not a tar: %s", path,
		    archive_error_string(a));
		goto out;
	}
	if (bi->bi_index == NULL) {
		xasprintf(cause, "%s has no index.json: not an OCI image "
		    "layout", path);
		goto out;
	}
	rv = 0;
out:
	free(buf);
	archive_read_free(a);
	return (rv);
}

/* Import: a manifest's JSON, from the bundle or else the store. */
static json_t *
bundle_in_json(struct bundle_in *bi, const char *digest)
{
	struct bundle_blob	*bb = bundle_in_find(bi, digest);
	json_t			*root;

	if (bb == NULL)
		return (store_manifest_json(bi->bi_store, digest));
	if (bb->bb_json == NULL)
		return (NULL);
	root = json_loadb(bb->bb_json, bb->bb_len, JSON_REJECT_DUPLICATES,
	    NULL);
	if (root != NULL && !json_is_object(root)) {
		json_decref(root);
		root = NULL;
	}
	return (root);
}

/* Import: whether the bundle or the store holds a blob; marks it used. */
static int
bundle_in_use(struct bundle_in *bi, const char *digest, const char *type)
{
	struct bundle_blob	*bb = bundle_in_find(bi, digest);
	uint64_t		 size;

	if (bb != NULL) {
		bb->bb_used = 1;
		if (type != NULL && bb->bb_type == NULL)
			bb->bb_type = type;
		return (1);
	}
	return (store_blob_stat(bi->bi_store, digest, &size, NULL) == 0);
}

/* A manifest's media type: the descriptor's, else its own field. */
static const char *
bundle_media_type(json_t *desc, json_t *root)
{
	const char	*t;

	if ((t = json_string_value(json_object_get(desc, "mediaType"))) !=
	    NULL || (t = json_string_value(json_object_get(root,
	    "mediaType"))) != NULL)
		return (t);
	return (json_is_array(json_object_get(root, "manifests")) ?
	    BUNDLE_MT_INDEX : BUNDLE_MT_OCI);
}

/*
 * Import: checks that a manifest and what it needs are in the bundle or
 * the store, marks them used, and adds the manifests to set (with their
 * media types kept in the blobs).  Child manifests that are in neither
 * are skipped (a layout of one platform of a multi-arch image).
 */
static int
bundle_walk(struct bundle_in *bi, json_t *desc, const char *digest,
    const char *ref, struct bundle_set *set, json_t *types, int depth,
    char **cause)
{
	json_t		*root, *v;
	const char	*d, *type;
	size_t		 i;
	int		 rv = 0;

	if ((root = bundle_in_json(bi, digest)) == NULL) {
		xasprintf(cause, "%s: manifest %s is %s", ref, digest,
		    bundle_in_use(bi, digest, NULL) ? "not a JSON object" :
		    "not in the bundle");
		return (-1);
	}
	type = bundle_media_type(desc, root);
	json_object_set_new(types, digest, json_string(type));
	(void)bundle_in_use(bi, digest, NULL);
	bundle_set_add(set, digest);
	if (json_is_array(json_object_get(root, "manifests"))) {
		json_array_foreach(json_object_get(root, "manifests"), i, v) {
			if ((d = bundle_desc_digest(v)) == NULL ||
			    depth >= BUNDLE_MAX_DEPTH ||
			    !bundle_in_use(bi, d, NULL))
				continue;
			if ((rv = bundle_walk(bi, v, d, ref, set, types,
			    depth + 1, cause)) == -1)
				break;
		}
		json_decref(root);
		return (rv);
	}
	if ((d = bundle_desc_digest(json_object_get(root, "config"))) != NULL &&
	    !bundle_in_use(bi, d, NULL)) {
		xasprintf(cause, "%s: the bundle lacks config %s", ref, d);
		rv = -1;
	}
	json_array_foreach(json_object_get(root, "layers"), i, v) {
		if (rv == 0 && (d = bundle_desc_digest(v)) != NULL &&
		    !bundle_in_use(bi, d, NULL)) {
			xasprintf(cause, "%s: the bundle lacks layer %s", ref,
			    d);
			rv = -1;
		}
	}
	json_decref(root);
	return (rv);
}

/* Import: one image index.json names, or a referrer. */
struct bundle_image {
	struct policy_ref	 im_ref;
	char			 im_digest[NM_DIGEST_SIZE];
	struct bundle_set	 im_set;	/* its manifests */
};

/* Import: merges referrer descriptors into the list kept for subject. */
static int
bundle_referrers_put(struct store *st, const char *ns, const char *repo,
    const char *subject, json_t *adds)
{
	json_t		*list = NULL, *v, *w;
	char		*kind, *text = NULL;
	size_t		 i, j;
	time_t		 fetched;
	int		 rv, seen;

	kind = bundle_referrers_kind(subject);
	if (store_list_get(st, ns, repo, kind, &text, &fetched) == 0)
		list = json_loads(text, 0, NULL);
	free(text);
	if (!json_is_array(list)) {
		json_decref(list);
		list = json_array();
	}
	json_array_foreach(adds, i, v) {
		seen = 0;
		json_array_foreach(list, j, w)
			if (json_equal(json_object_get(v, "digest"),
			    json_object_get(w, "digest")))
				seen = 1;
		if (!seen)
			json_array_append(list, v);
	}
	text = json_dumps(list, JSON_COMPACT);
	rv = store_list_put(st, ns, repo, kind, text);
	free(text);
	free(kind);
	json_decref(list);
	return (rv);
}

/* The name index.json gives a manifest: containerd's, else the OCI one. */
static const char *
bundle_ref_name(json_t *desc)
{
	json_t		*ann = json_object_get(desc, "annotations");
	const char	*s;

	if ((s = json_string_value(json_object_get(ann, BUNDLE_CTR_NAME))) !=
	    NULL)
		return (s);
	return (json_string_value(json_object_get(ann, BUNDLE_REF_NAME)));
}

/* Imports an OCI image layout tar; see store.h. */
int
store_import(struct store *st, const char *path,
    struct store_import_result *res, char **cause)
{
	struct bundle_in	 bi;
	struct bundle_image	*ims = NULL;
	struct bundle_blob	*bb;
	struct rlimit		 rl;
	json_t			*index = NULL, *v, *root, *types, *refs, *subj;
	json_t			*adds;
	const char		*d, *name, *sd, *key;
	char			*sub = NULL;
	size_t			 i, j, k, nims = 0;
	int			 rv = -1, inbatch = 0;

	memset(&bi, 0, sizeof bi);
	memset(res, 0, sizeof *res);
	bi.bi_store = st;
	types = json_object();
	refs = json_object();	/* subject digest → referrer descriptors */
	/* Every blob the store lacks is an open temp file until the end. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (bundle_read(&bi, path, cause) == -1)
		goto out;
	if (bi.bi_layout != NULL && ((root = json_loadb(bi.bi_layout,
	    bi.bi_layoutlen, 0, NULL)) == NULL || !json_is_string(
	    json_object_get(root, "imageLayoutVersion")))) {
		json_decref(root);
		xasprintf(cause, "%s: oci-layout is not an image layout "
		    "marker", path);
		goto out;
	} else if (bi.bi_layout != NULL)
		json_decref(root);
	if ((index = json_loadb(bi.bi_index, bi.bi_indexlen,
	    JSON_REJECT_DUPLICATES, NULL)) == NULL ||
	    !json_is_array(json_object_get(index, "manifests"))) {
		xasprintf(cause, "%s: index.json is not an image index", path);
		goto out;
	}
	ims = xcalloc(json_array_size(json_object_get(index, "manifests")) + 1,
	    sizeof *ims);
	json_array_foreach(json_object_get(index, "manifests"), i, v) {
		if ((d = bundle_desc_digest(v)) == NULL) {
			xasprintf(cause, "index.json entry %zu has no sha256 "
			    "digest", i);
			goto out;
		}
		if ((name = bundle_ref_name(v)) == NULL) {
			/* A referrer (an SBOM, a signature): of its subject. */
			root = bundle_in_json(&bi, d);
			subj = json_object_get(root, "subject");
			if ((sd = bundle_desc_digest(subj)) == NULL) {
				json_decref(root);
				log_warnx("%s: index.json entry %s has no "
				    "name and no subject; skipped", path, d);
				continue;
			}
			if (json_object_get(refs, sd) == NULL)
				json_object_set_new(refs, sd, json_array());
			json_array_append(json_object_get(refs, sd), v);
			json_decref(root);
			continue;
		}
		if (policy_ref_parse(name, &ims[nims].im_ref, &sub) == -1) {
			xasprintf(cause, "index.json names %s \"%s\", which is "
			    "not a full image reference (%s)", d, name, sub);
			free(sub);
			goto out;
		}
		if (ims[nims].im_ref.pr_digest != NULL &&
		    strcmp(ims[nims].im_ref.pr_digest, d) != 0) {
			xasprintf(cause, "index.json names %s as %s", d, name);
			nims++;
			goto out;
		}
		snprintf(ims[nims].im_digest, NM_DIGEST_SIZE, "%s", d);
		if (bundle_walk(&bi, v, d, name, &ims[nims].im_set, types, 0,
		    cause) == -1) {
			nims++;
			goto out;
		}
		nims++;
	}
	/* Referrers need their own blobs, and a subject that is imported. */
	json_object_foreach(refs, key, adds) {
		json_array_foreach(adds, j, v) {
			struct bundle_set	 rs;

			memset(&rs, 0, sizeof rs);
			if (bundle_walk(&bi, v, bundle_desc_digest(v),
			    "a referrer", &rs, types, 1, cause) == -1) {
				free(rs.bs_d);
				goto out;
			}
			free(rs.bs_d);
		}
	}
	if (nims == 0) {
		xasprintf(cause, "%s: index.json names no image", path);
		goto out;
	}

	/*
	 * Everything checked: commit the blobs, then record, all in one
	 * transaction.  A blob file renamed into place before a failure has
	 * no row, so nothing shows it (gc removes it later, or the next
	 * import records it).
	 */
	if (store_batch_begin(st) == -1) {
		xasprintf(cause, "cannot start recording the bundle");
		goto out;
	}
	inbatch = 1;
	for (i = 0; i < bi.bi_n; i++) {
		bb = &bi.bi_blobs[i];
		if (bb->bb_w == NULL || !bb->bb_used)
			continue;
		key = json_string_value(json_object_get(types, bb->bb_digest));
		if (store_writer_commit(bb->bb_w, bb->bb_digest, key != NULL ?
		    key : "application/octet-stream", NULL, cause) == -1) {
			bb->bb_w = NULL;
			goto out;
		}
		bb->bb_w = NULL;
		res->ir_blobs++;
		res->ir_bytes += bb->bb_size;
	}
	json_object_foreach(types, key, v)
		if (store_manifest_put(st, key, json_string_value(v)) == -1) {
			xasprintf(cause, "cannot record manifest %s", key);
			goto out;
		}
	for (i = 0; i < nims; i++) {
		const struct policy_ref	*pr = &ims[i].im_ref;

		if (store_link_manifest(st, bundle_ns(pr), pr->pr_repo,
		    ims[i].im_digest) == -1) {
			xasprintf(cause, "cannot link %s", pr->pr_ref);
			goto out;
		}
		for (j = 0; j < ims[i].im_set.bs_n; j++) {
			sd = ims[i].im_set.bs_d[j];
			if ((adds = json_object_get(refs, sd)) == NULL)
				continue;
			json_array_foreach(adds, k, v)
				if (store_link_manifest(st, bundle_ns(pr),
				    pr->pr_repo, bundle_desc_digest(v)) == -1)
					goto linkfail;
			if (bundle_referrers_put(st, bundle_ns(pr),
			    pr->pr_ns != NULL ? pr->pr_repo : "", sd,
			    adds) == -1)
				goto linkfail;
			res->ir_referrers += json_array_size(adds);
		}
	}
	/* Tags last: a tag is what makes an image visible by name. */
	for (i = 0; i < nims; i++) {
		const struct policy_ref	*pr = &ims[i].im_ref;

		if (pr->pr_tag != NULL && store_utag_put(st, bundle_ns(pr),
		    pr->pr_repo, pr->pr_tag, ims[i].im_digest) == -1) {
			xasprintf(cause, "cannot tag %s", pr->pr_ref);
			goto out;
		}
		res->ir_images++;
		res->ir_refs = xreallocarray(res->ir_refs, res->ir_images,
		    sizeof *res->ir_refs);
		xasprintf(&res->ir_refs[res->ir_images - 1], "%s %s",
		    pr->pr_ref, ims[i].im_digest);
	}
	inbatch = 0;
	if (store_batch_end(st, 1) == -1) {
		xasprintf(cause, "cannot commit the bundle's records");
		goto out;
	}
	rv = 0;
	goto out;
linkfail:
	xasprintf(cause, "cannot link the referrers of %s", ims[i].im_ref.pr_ref);
out:
	if (inbatch)
		(void)store_batch_end(st, 0);
	if (rv == -1)
		store_import_result_clear(res);
	for (i = 0; i < nims; i++) {
		policy_ref_clear(&ims[i].im_ref);
		free(ims[i].im_set.bs_d);
	}
	free(ims);
	json_decref(index);
	json_decref(types);
	json_decref(refs);
	bundle_in_free(&bi);
	return (rv);
}

void
store_import_result_clear(struct store_import_result *res)
{
	xstrvfree(res->ir_refs, res->ir_images);
	memset(res, 0, sizeof *res);
}
