/*
 * store/store.h: SQLite metadata and content-addressed blob files under the
 * data directory.  Every function is safe to call from any thread.
 */
#ifndef STORE_H
#define STORE_H

#include <sys/types.h>

#include <stdint.h>
#include <time.h>

#include "nixmirror.h"

struct store;
struct iovec;
struct store_writer;

/* store/db.c */
/* Creates a directory and its missing parents, mode 0755; 0 or -1. */
int		 store_mkdirs(const char *);
/* Opens (creating and migrating) DIR/nixmirror.db and DIR/blobs. */
struct store	*store_open(const char *dir, char **cause);
void		 store_close(struct store *);

/* Media type and size of a stored blob; 0, or -1 when unknown. */
int	store_blob_stat(struct store *, const char *digest, uint64_t *size,
	    char **media_type);
/* Records an access to a blob (for later eviction). */
void	store_blob_touch(struct store *, const char *digest);

/* Manifests are blobs with a row saying so. */
int	store_manifest_put(struct store *, const char *digest,
	    const char *media_type);

/* A layer built from a set of store paths; key is the digest of the set. */
struct store_layer {
	char		 sl_digest[NM_DIGEST_SIZE];
	char		 sl_diffid[NM_DIGEST_SIZE];
	uint64_t	 sl_size;
};
int	store_layer_get(struct store *, const char *key, struct store_layer *);
int	store_layer_put(struct store *, const char *key,
	    const struct store_layer *);

/* An image: source revision + sorted packages + system → manifests. */
struct store_image {
	char		 si_docker[NM_DIGEST_SIZE];
	char		 si_oci[NM_DIGEST_SIZE];
	time_t		 si_created;
};
int	store_image_get(struct store *, const char *key, struct store_image *);
int	store_image_put(struct store *, const char *key,
	    const struct store_image *);

/* Git tag → commit resolutions, with history. */
int	store_tag_put(struct store *, const char *source, const char *tag,
	    const char *commit);
/* The newest resolution not older than max_age seconds; 0 or -1. */
int	store_tag_get(struct store *, const char *source, const char *tag,
	    int max_age, char commit[41]);

/* Upstream tag → digest history (pull-through cache). */
int	store_utag_put(struct store *, const char *ns, const char *repo,
	    const char *tag, const char *digest);
int	store_utag_get(struct store *, const char *ns, const char *repo,
	    const char *tag, char digest[NM_DIGEST_SIZE], time_t *checked);
/* The bytes and the number of the stored blobs; 0 or -1. */
int	store_stats(struct store *, uint64_t *bytes, uint64_t *blobs);
/* The tags of a repository it resolved: a JSON array's text, or NULL. */
char	*store_utag_list(struct store *, const char *ns, const char *repo);

/*
 * Lists an upstream answered, by (ns, repo, kind): kind "tags", or
 * "referrers <digest>"; body is JSON text.
 */
#define STORE_LIST_TAGS		"tags"
#define STORE_LIST_REFERRERS	"referrers "	/* then the digest */
int	store_list_put(struct store *, const char *ns, const char *repo,
	    const char *kind, const char *body);
/* The kept list (caller frees *body) and when it was fetched; 0 or -1. */
int	store_list_get(struct store *, const char *ns, const char *repo,
	    const char *kind, char **body, time_t *fetched);

/* store/link.c: which repository (namespace, name) holds a digest. */
/* The namespace of the Nix images' links. */
#define STORE_NIX_NS	"@nix"
/* Whether (ns, repo) links to digest: 1, else 0. */
int	store_link_has(struct store *, const char *ns, const char *repo,
	    const char *digest);
/* Links one digest to (ns, repo); 0 or -1. */
int	store_link_put(struct store *, const char *ns, const char *repo,
	    const char *digest);
/*
 * Links a manifest and what it references (config, layers, child
 * manifests and theirs, where stored) to (ns, repo); 0 or -1.
 */
int	store_link_manifest(struct store *, const char *ns, const char *repo,
	    const char *digest);

/*
 * The writes between these two are one transaction: all or none of them
 * is recorded.  The caller's thread holds the store lock in between.
 */
int	store_batch_begin(struct store *);
int	store_batch_end(struct store *, int ok);

/* store/blob.c */
/* The file path of a blob (need not exist); caller frees. */
char	*store_blob_path(struct store *, const char *digest);
/* Opens a stored blob for reading; fd, or -1 when absent. */
int	 store_blob_open(struct store *, const char *digest, uint64_t *size);
/* Stores bytes held in memory as a blob (e.g. a manifest or config). */
int	 store_blob_put_mem(struct store *, const void *, size_t,
	    const char *media_type, char digest[NM_DIGEST_SIZE], char **cause);

/*
 * A blob being written: a temp file under DIR/tmp, hashed as it is written,
 * fsynced and renamed into place on commit, so no half blob is ever visible.
 */
struct store_writer *store_writer_new(struct store *, char **cause);
/* The temp file's descriptor, for writers that write it themselves. */
int	 store_writer_fd(struct store_writer *);
int	 store_writer_write(struct store_writer *, const void *, size_t);
/*
 * The two halves of store_writer_write, for a caller that hashes in one
 * thread while another writes the same bytes: store_writer_hash hashes
 * and counts them, store_writer_put writes them (0, or -1 with errno).
 */
void	 store_writer_hash(struct store_writer *, const struct iovec *, int);
int	 store_writer_put(struct store_writer *, const struct iovec *, int);
/* A read-only descriptor of the temp file, for readers that follow it. */
int	 store_writer_reader(struct store_writer *);
uint64_t store_writer_size(struct store_writer *);
/*
 * Commits the blob.  When the bytes went through store_writer_write the
 * digest is computed and compared with expect (if not NULL); when they were
 * written to the fd directly, expect must be given and is trusted.
 */
int	 store_writer_commit(struct store_writer *, const char *expect,
	    const char *media_type, char digest[NM_DIGEST_SIZE], char **cause);
/*
 * Checks the bytes written through store_writer_write against expect
 * before the commit, which then trusts it; 0, or -1 with *cause.
 */
int	 store_writer_verify(struct store_writer *, const char *expect,
	    char **cause);
/* Discards the temp file and frees the writer. */
void	 store_writer_abort(struct store_writer *);

/* Removes leftover temp files of an earlier run (done by store_open). */
void	 store_tmp_clean(struct store *);

/* store/bundle.c: OCI image layout tars, for air-gapped sites. */
struct policy_ref;
/*
 * Writes the images the references name (by tag, or by a digest their
 * repository links to) with what they reference and their referrers as
 * an OCI image layout tar at path, whole or not at all; *bytes is its
 * size.  0, or -1 with *cause naming what is not stored.
 */
int	 store_export(struct store *, const struct policy_ref *, size_t,
	    const char *path, uint64_t *bytes, char **cause);
/* What an import stored. */
struct store_import_result {
	size_t		  ir_images;	/* named manifests recorded */
	char		**ir_refs;	/* "REF DIGEST" of each */
	size_t		  ir_blobs;	/* blobs new to the store */
	uint64_t	  ir_bytes;	/* their bytes */
	size_t		  ir_referrers;	/* referrers recorded */
};
/*
 * Imports an OCI image layout tar (any tool's, with full references as
 * ref names): every blob is checked against its digest before anything
 * is recorded, then blobs, manifests, links, referrers and tags.  An
 * import of what is stored changes nothing.  0, or -1 with *cause.
 */
int	 store_import(struct store *, const char *path,
	    struct store_import_result *, char **cause);
void	 store_import_result_clear(struct store_import_result *);

/* store/gc.c */
/* What a garbage collection did; sizes are sums of blobs.size. */
struct store_gc_result {
	uint64_t	 sg_before;	/* bytes stored before */
	uint64_t	 sg_after;	/* bytes stored after */
	uint64_t	 sg_freed;	/* bytes of evicted blobs and orphans */
	uint64_t	 sg_blobs;	/* blobs evicted, orphans included */
	uint64_t	 sg_orphans;	/* files in blobs/ without a row */
	uint64_t	 sg_lost;	/* rows whose file had gone (dropped) */
	uint64_t	 sg_kept;	/* blobs pinned, recent or referenced */
};
/*
 * Evicts least-recently-used blobs until the store holds at most max_bytes,
 * never one that is pinned, used in the last minute, or referenced by a
 * manifest that stays; removes orphan files.  0, or -1 with *cause.
 */
int	 store_gc(struct store *, uint64_t max_bytes, struct store_gc_result *,
	    char **cause);
/* Over quota and no gc running: runs store_gc in a detached thread. */
void	 store_gc_maybe(struct store *, uint64_t max_bytes);
/* Stops a background gc between batches and waits for it (shutdown). */
void	 store_gc_wait(void);
/* Pins a stored manifest (and so what it references), or unpins it. */
int	 store_pin_put(struct store *, const char *digest);
int	 store_pin_del(struct store *, const char *digest);

/*
 * store/s3.c: a blocking client of an S3-compatible object store; run it
 * in workers only.  Keys are relative to the prefix and hold only
 * letters, digits and ._/-.  Calls return 0, S3_ABSENT for a missing
 * object, or -1 with *cause (which never holds a credential).
 */
#define S3_ABSENT	1
struct s3;
struct s3_settings {
	const char	*ss_endpoint;	/* http(s)://HOST[:PORT] */
	const char	*ss_bucket;
	const char	*ss_region;	/* NULL: us-east-1 */
	const char	*ss_prefix;	/* NULL: none */
	const char	*ss_access;
	const char	*ss_secret;
	const char	*ss_token;	/* NULL: none */
	const char	*ss_cafile;	/* NULL: the system's */
	int64_t		 ss_rate;	/* upload bytes/s, 0: no limit */
};
/* Takes bytes of an object as they arrive; -1 stops the transfer. */
typedef int (*s3_sink_fn)(const void *, size_t, void *);
/* Told an object's size (-1: not known) before its bytes; -1 stops. */
typedef int (*s3_start_fn)(int64_t, void *);
struct s3	*s3_new(const struct s3_settings *, char **cause);
void		 s3_free(struct s3 *);
const char	*s3_where(const struct s3 *);
void		 s3_cancel(struct s3 *);
int		 s3_cancelled(struct s3 *);
int	s3_check(struct s3 *, char **cause);
int	s3_head(struct s3 *, const char *key, uint64_t *size, char **ctype,
	    char **cause);
int	s3_get_stream(struct s3 *, const char *key, s3_start_fn, s3_sink_fn,
	    void *, char **ctype, char **cause);
int	s3_get_mem(struct s3 *, const char *key, size_t max, char **data,
	    size_t *len, char **cause);
int	s3_put_mem(struct s3 *, const char *key, const void *, size_t,
	    const char *ctype, char **cause);
int	s3_put_file(struct s3 *, const char *key, int fd, uint64_t size,
	    const char *ctype, void (*started)(const char *, void *), void *,
	    char **cause);
int	s3_delete(struct s3 *, const char *key, char **cause);
/* A URL that lets its holder GET key for expires seconds; NULL: *cause. */
char	*s3_presign(struct s3 *, const char *key, int expires, char **cause);
/* SigV4 query signing of a GET of url, as of now (s3.c; for the tests). */
char	*s3_sign_url(const char *url, const char *access, const char *secret,
	    const char *token, const char *region, time_t now, int expires);
int	s3_abort_upload(struct s3 *, const char *key, const char *upload_id,
	    char **cause);

/*
 * store/remote.c: the object store that replicas share.  Each replica's
 * database stays its own index; what it records goes up to the bucket
 * behind it (blobs first, then the small objects that name them), and
 * what it misses it looks up there.  The fetches block (pool jobs) and
 * return 0, S3_ABSENT, or -1 with *cause when the bucket cannot answer.
 */
/* Attaches the bucket (the store owns it from now on) and starts the
 * uploads still queued by an earlier run. */
void	 store_remote_attach(struct store *, struct s3 *);
/* Whether a bucket is attached. */
int	 store_remote_on(struct store *);
/* Starts the uploader unless it runs (any thread). */
void	 store_remote_kick(struct store *);
/* Stops the uploader between objects (before work_drain). */
void	 store_remote_stop(struct store *);
/*
 * Marks what this thread records from now on (until it is called with 0)
 * as come from the bucket: not queued to go up again.
 */
void	 store_remote_quiet(int);
/* Whether store_remote_stop ran: transfers end. */
int	 store_remote_stopping(struct store *);
/* Items still to upload (for /metrics and the tests). */
int64_t	 store_remote_pending(struct store *);
/*
 * A blob's bytes from the bucket as they arrive, unchecked: the caller
 * checks them against the digest before it uses them.
 */
/*
 * The size of the blob in the bucket and (url not NULL) a presigned URL
 * of it, good for expires seconds: 0, S3_ABSENT when the bucket lacks
 * it, or -1 with *cause.
 */
int	 store_remote_presign(struct store *, const char *digest, int expires,
	    char **url, uint64_t *size, char **cause);
int	 store_remote_get(struct store *, const char *digest, s3_start_fn,
	    s3_sink_fn, void *, char **cause);
/* A blob from the bucket into the store, checked against its digest. */
int	 store_remote_blob(struct store *, const char *digest, char **cause);
/* Whether (ns, repo) links to digest in the bucket; recorded locally. */
int	 store_remote_link(struct store *, const char *ns, const char *repo,
	    const char *digest, char **cause);
/*
 * An upstream tag's resolution another replica made, when newer than
 * ours: recorded with its time, its manifest stored and linked.
 */
int	 store_remote_utag(struct store *, const char *ns, const char *repo,
	    const char *tag, char **cause);
/* A Nix image another replica built: its manifests stored, recorded. */
int	 store_remote_image(struct store *, const char *key, char **cause);
/* A layer another replica built: its blob stored, recorded. */
int	 store_remote_layer(struct store *, const char *key, char **cause);

#endif /* STORE_H */
