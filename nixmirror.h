/*
 * nixmirror.h: what every module shares: logging, allocation, the global
 * configuration and digests.
 */
#ifndef NIXMIRROR_H
#define NIXMIRROR_H

#include <sys/types.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define NM_PRINTF(a, b)	__attribute__((format(printf, a, b)))
#define NM_DEAD		__attribute__((noreturn))

/* "sha256:" + 64 lowercase hex digits + NUL. */
#define NM_DIGEST_SIZE	72
#define NM_SYSTEM_X86	"x86_64-linux"
#define NM_SYSTEM_ARM64	"aarch64-linux"

/* Where the Nix package set comes from. */
enum nm_source_type {
	NM_SOURCE_CHANNEL = 0,
	NM_SOURCE_PATH,
	NM_SOURCE_REPO,
};

/* A pull-through upstream: the registry that serves a namespace. */
struct nm_upstream {
	char			*up_ns;		/* "docker.io", "ghcr.io" */
	char			*up_url;	/* "https://registry-1.docker.io" */
	char			*up_user;	/* credentials for its token realm */
	char			*up_pass;
	char			**up_redirect_hosts;	/* globs, config only */
	size_t			 up_nredirect_hosts;
	int			 up_peer;	/* another replica (proxy/peer.c) */
};

/* The global configuration: command line over --config file over defaults. */
struct nm_config {
	char			*cf_listen;	/* ADDR:PORT */
	char			*cf_data;	/* data directory */
	enum nm_source_type	 cf_source;
	char			*cf_pkgs_path;
	char			*cf_pkgs_repo;
	char			*cf_channel;
	char			*cf_popularity;	/* file or NULL */
	char			*cf_nix_prefix;
	char			*cf_config;	/* file it came from, or NULL */
	int			 cf_build_timeout;	/* seconds per Nix step */
	int			 cf_max_builds;	/* concurrent builds */
	int			 cf_max_layers;	/* store-path layers */
	int			 cf_layering;	/* 1 or 2: nix_layer_group* */
	int			 cf_tag_ttl;	/* seconds a git tag resolution lasts */
	int			 cf_debug;
	struct nm_upstream	*cf_upstreams;
	size_t			 cf_nupstreams;
	char			*cf_upstream_ca;	/* extra CA file or NULL */
	int			 cf_offline;	/* never contact an upstream */
	char			*cf_nix_ns;	/* an ns that means our Nix images */
	int			 cf_upstream_timeout;	/* seconds */
	int			 cf_upstream_min_rate;	/* bytes/s, 0: none */
	int			 cf_upstream_max_connections; /* 0: no cap */
	char			*cf_policy;	/* --policy file or NULL */
	int64_t			 cf_max_store_bytes;	/* 0: no quota */
	char			*cf_tls_cert;
	char			*cf_tls_key;
	char			*cf_log_format;	/* "text" or "json" */
	/* The object store that replicas share (store/remote.c). */
	char			*cf_s3_endpoint;
	char			*cf_s3_bucket;
	char			*cf_s3_region;
	char			*cf_s3_prefix;
	char			*cf_s3_access_key;	/* else from the env */
	char			*cf_s3_secret_key;
	char			*cf_s3_session_token;
	char			*cf_s3_ca;
	int64_t			 cf_s3_upload_rate;	/* bytes/s, 0: none */
	int			 cf_s3_redirect;	/* 307 to the bucket */
	/* The replicas: base URLs, this one's among them (proxy/peer.c). */
	char			*cf_peers;	/* comma-separated */
	char			*cf_peer_self;
};

extern struct nm_config *nm_conf;

/* log.c */
void	log_init(int debug);
void	log_quiet(int);
void	log_json(int);
void	log_on_warn(void (*)(const char *));
char	*nm_redact(const char *, int);
void	log_warn(const char *, ...) NM_PRINTF(1, 2);
void	log_warnx(const char *, ...) NM_PRINTF(1, 2);
void	log_warn_detail(const char *, ...) NM_PRINTF(1, 2);
void	log_info(const char *, ...) NM_PRINTF(1, 2);
void	log_debug(const char *, ...) NM_PRINTF(1, 2);
void	fatal(const char *, ...) NM_PRINTF(1, 2) NM_DEAD;
void	fatalx(const char *, ...) NM_PRINTF(1, 2) NM_DEAD;

/* xmalloc.c */
void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xreallocarray(void *, size_t, size_t);
char	*xstrdup(const char *);
/* Gives free heap memory back to the kernel (when no stream runs). */
void	 xheap_trim(void);
/* Frees n strings and the array that holds them (NULL is fine). */
void	 xstrvfree(char **, size_t);
/* The n strings joined by sep, in a new string. */
char	*xstrvjoin(char *const *, size_t, const char *sep);
int	 xasprintf(char **, const char *, ...) NM_PRINTF(2, 3);
int	 xvasprintf(char **, const char *, va_list) NM_PRINTF(2, 0);
/* A copy with every byte outside printable ASCII written as \xHH. */
char	*xstrvis(const char *);

/* metrics.c: the counters behind /metrics (Prometheus text format). */
struct metrics_store {
	uint64_t	 ms_bytes;	/* of the stored blobs */
	uint64_t	 ms_blobs;
	int64_t		 ms_quota;	/* max_store_bytes, 0: none */
	int64_t		 ms_s3_pending;	/* not yet in the bucket, -1: none */
};
void	 metrics_init(void);
/* On the loop: an answered request (route "manifest", "blob", ...). */
void	 metrics_request(const char *route, int status, uint64_t bytes);
/* On the loop: a finished upstream request, and body bytes received. */
void	 metrics_upstream(const char *ns, int failed);
void	 metrics_upstream_bytes(const char *ns, uint64_t bytes);
void	 metrics_upstream_ratelimit(const char *ns, int64_t remaining);
/* On the loop: a blob or manifest served from the store, fetched, joined. */
#define METRICS_HIT		0
#define METRICS_MISS		1
#define METRICS_COALESCED	2
void	 metrics_cache(const char *type, const char *ns, int outcome);
/* On the loop: client connections (+1, -1), and the guard's refusals. */
void	 metrics_connection(int delta);
void	 metrics_refused(int status);
/* Any thread: what the store quota evicted. */
void	 metrics_evicted(uint64_t blobs, uint64_t bytes);
/* Any thread: builds running (+1, -1) and a finished one (NIX_* code). */
void	 metrics_build_running(int delta);
void	 metrics_build(int result, double seconds);
/* The exposition text, caller frees. */
char	*metrics_text(const struct metrics_store *);
/* On the loop: for the status page. */
struct metrics_hits {
	uint64_t	 mh_hits;
	uint64_t	 mh_misses;
	uint64_t	 mh_coalesced;
};
void	 metrics_hits(struct metrics_hits *);
int64_t	 metrics_ratelimit(const char *ns);	/* -1: never sent */

/*
 * status.c: what the status page (/ and /status.json) shows.  Any thread
 * but status_json and status_html, which run on the loop.
 */
struct json_t;
void	 status_init(void);
void	 status_upstream(const char *ns, const char *err);	/* NULL: ok */
void	 status_revision(const char *tag, const char *commit);
int	 status_build_start(const char *image, const char *pkgs);
void	 status_build_phase(int, const char *, ...) NM_PRINTF(2, 3);
/* A queued build starts to run, in a first phase. */
void	 status_build_running(int, const char *phase);
void	 status_build_end(int, int ok, const char *digest_or_error);
/* Off the page with no record: the image needed no build after all. */
void	 status_build_forget(int);
/* A warning of the log; never logs itself. */
void	 status_error(const char *);
struct json_t *status_json(const struct metrics_store *);
char	*status_html(const struct json_t *);

/* digest.c: SHA-256 through OpenSSL's EVP interface. */
struct nm_sha256;
struct nm_sha256 *nm_sha256_new(void);
void	 nm_sha256_update(struct nm_sha256 *, const void *, size_t);
/* Writes "sha256:<hex>" into out and frees the context. */
void	 nm_sha256_final(struct nm_sha256 *, char out[NM_DIGEST_SIZE]);
void	 nm_sha256_free(struct nm_sha256 *);
void	 nm_sha256_digest(const void *, size_t, char out[NM_DIGEST_SIZE]);

/*
 * work.c: the one pool of worker threads (at most 72, fewer for tests),
 * created by main and drained at shutdown.  A job's fn runs in a worker;
 * its done runs afterwards on the event loop.
 */
struct event_base;
struct work_group;
typedef void (*work_fn)(void *);
typedef void (*work_done_fn)(void *);
int	 work_init(struct event_base *, int max_threads, char **cause);
/* A short job (a commit); 0, or -1 when it cannot be started. */
int	 work_submit(work_fn, work_done_fn, void *);
/* A long job (a build, a gc), which never takes the last threads. */
int	 work_submit_long(work_fn, work_done_fn, void *);
/* The number of cores: how many CPU jobs run at once. */
int	 work_cpus(void);
/* Whether the pool takes jobs (set up, not draining). */
int	 work_available(void);
/*
 * CPU jobs that one thread (often a worker itself) hands out and waits
 * for, running them itself when no other thread is free.
 */
struct work_group *work_group_new(void);
void	 work_group_add(struct work_group *, work_fn, void *);
void	 work_group_wait(struct work_group *);
/* Refuses new jobs, finishes and joins everything, runs the last dones. */
void	 work_drain(void);

#endif /* NIXMIRROR_H */
