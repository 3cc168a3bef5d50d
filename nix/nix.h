/*
 * nix/nix.h: from an image name to a built image: the name grammar, Nix
 * itself, layering, layer tarballs and the image config and manifests.
 */
#ifndef NIX_H
#define NIX_H

#include <sys/types.h>

#include <stdint.h>

#include <jansson.h>

#include "nixmirror.h"

/*
 * A parsed Nix image name.  Packages are attribute paths ("git",
 * "haskellpackages.pandoc"), sorted and unique, with the meta-packages
 * expanded; cacert and iana-etc are not in the list (the evaluator adds
 * them when the package set has them).
 */
struct nix_request {
	char		**nr_pkgs;
	size_t		  nr_npkgs;
	int		  nr_shell;	/* "shell" was asked for */
	const char	 *nr_system;	/* NM_SYSTEM_X86 or NM_SYSTEM_ARM64 */
	int		  nr_peer;	/* asked by another replica */
};

/* One store path of a runtime closure. */
struct nix_path {
	char		*np_path;	/* /nix/store/<hash>-<name> */
	uint64_t	 np_narsize;
	char		 np_narhash[65];	/* SHA-256 of the NAR, hex, or "" */
	size_t		*np_refs;	/* indices into nc_paths */
	size_t		 np_nrefs;
	int		 np_requested;	/* an output of a package asked for */
	char		*np_license;	/* its meta's SPDX ids, or NULL */
	char		*np_homepage;	/* its meta.homepage, or NULL */
};

/* The result of evaluating and realising a request. */
struct nix_closure {
	struct nix_path	 *nc_paths;	/* sorted by np_path */
	size_t		  nc_npaths;
	size_t		 *nc_roots;	/* top-level outputs, in request order */
	size_t		  nc_nroots;
	char		**nc_rootpaths;	/* the same as store paths, for the
					   customisation layer */
	char		 *nc_cmd;	/* absolute program for Cmd, or NULL */
	char		 *nc_cacert;	/* cacert store path, or NULL */
};

/* A group of store paths that become one layer. */
struct nix_layer {
	size_t		*nl_paths;	/* indices into nc_paths, sorted */
	size_t		 nl_npaths;
	uint64_t	 nl_size;	/* sum of narsize */
	double		 nl_rating;
};

struct nix_layering {
	struct nix_layer *nl_layers;	/* in image order */
	size_t		  nl_nlayers;
};

/* What writing a layer tarball produced. */
struct nix_tarinfo {
	char		 ti_digest[NM_DIGEST_SIZE];	/* of the gzip bytes */
	char		 ti_diffid[NM_DIGEST_SIZE];	/* of the tar bytes */
	uint64_t	 ti_size;			/* gzip bytes */
};

/* Result codes of the Nix steps. */
#define NIX_OK		0
#define NIX_ENOTFOUND	1	/* packages or a revision do not exist (404) */
#define NIX_EFAIL	2	/* evaluation or build failed (500) */
#define NIX_ETIMEOUT	3	/* a step ran past the timeout (500) */
#define NIX_EBUSY	4	/* the build queue is full (429, Retry-After) */

/* nix/name.c */
/*
 * Parses the part of a repository name after the Nix prefix
 * ("shell/git/htop"); 0, or -1 with *cause set.
 */
int	nix_name_parse(const char *, struct nix_request *, char **cause);
void	nix_request_clear(struct nix_request *);
/* A stable text form of a request: system and sorted packages. */
char	*nix_request_key(const struct nix_request *);
/* The name after the prefix a client pulls it by ("shell/hello"). */
char	*nix_request_name(const struct nix_request *);

/* nix/eval.c: blocking; runs in a build worker thread. */
/*
 * The package set expression for a source: a path, a git url at a commit,
 * or a channel; rev is the commit for NM_SOURCE_REPO, else NULL.
 */
struct nix_source {
	enum nm_source_type	 ns_type;
	const char		*ns_loc;	/* path, url or channel */
	const char		*ns_rev;	/* 40 hex or NULL */
};
/*
 * Evaluates, realises and reads the runtime closure of a request.  Returns
 * NIX_OK, or a NIX_E* code with *cause set to a one-line reason that names
 * missing or ambiguous packages; the whole log goes to the server log.
 */
/* Where a build reports its phase as it goes (the status page). */
struct nix_progress {
	void	(*np_fn)(void *, const char *phase);
	void	 *np_arg;
};
int	nix_closure_build(const struct nix_source *,
	    const struct nix_request *, int timeout,
	    const struct nix_progress *, struct nix_closure *, char **cause);
void	nix_closure_clear(struct nix_closure *);
/*
 * Resolves a git ref ("latest" is the default branch, 40 hex is itself)
 * to a commit with git ls-remote; NIX_OK, NIX_ENOTFOUND or NIX_EFAIL.
 */
int	nix_git_resolve(const char *url, const char *ref, int timeout,
	    char commit[41], char **cause);
/*
 * The tags and branches of a git repository that can be image tags;
 * NIX_OK with *refs (NULL-terminated; nix_refs_free), or NIX_E*, *cause.
 */
int	nix_git_refs(const char *url, int timeout, char ***refs, size_t *nrefs,
	    char **cause);
void	nix_refs_free(char **);
/*
 * A NAR hash as path-info gives it (SRI "sha256-<base64>" or Nix's
 * "sha256:<base32>") as 64 hex digits, or "".
 */
void	nix_narhash_hex(const char *, char hex[65]);
/*
 * Runs argv (no shell) with stdin from /dev/null, collecting stdout and
 * stderr, killing its process group after timeout seconds.  Returns
 * NIX_OK when it exited 0, NIX_ETIMEOUT, else NIX_EFAIL.
 */
int	nix_run(char *const argv[], int timeout, char **out, char **err);
/* Kills every running child and refuses new ones (shutdown). */
void	nix_run_killall(void);

/* nix/layer.c */
/*
 * Loads popularity data: a JSON object from store-path name without the
 * hash ("glibc-2.37") to a count.  NULL file gives an empty object.
 */
json_t	*nix_popularity_load(const char *file, char **cause);
/* The popularity of a store path (1 when unknown). */
uint64_t nix_popularity_get(json_t *, const char *path);
/*
 * Groups a closure into at most budget layers with the popularity and
 * dominator-tree algorithm; the order is deterministic, popular first.
 */
void	nix_layer_group(const struct nix_closure *, json_t *popularity,
	    size_t budget, struct nix_layering *);
/*
 * Layering version 2: every store path a layer of its own while the
 * closure fits the budget; past it, the smallest paths share buckets
 * chosen by their hash.  No decision depends on the image's other paths,
 * so a layer keeps its digest across images.  Popular first, then the
 * paths with the smallest own closures.
 */
void	nix_layer_group_stable(const struct nix_closure *, json_t *popularity,
	    size_t budget, struct nix_layering *);
void	nix_layering_clear(struct nix_layering *);
/*
 * Immediate dominators of a graph with n nodes and root 0: succ[i] lists
 * nsucc[i] successors.  idom[0] = 0; unreachable nodes get SIZE_MAX.
 */
void	nix_dominators(size_t n, size_t *const *succ, const size_t *nsucc,
	    size_t *idom);

/* nix/tar.c */
/*
 * Writes store paths (absolute, sorted or not) as a gzip-compressed layer
 * to fd: "nix/", "nix/store/" and every file below each path, sorted,
 * mtime 1, uid/gid 0, modes from the store, symlinks and hard links kept.
 */
int	nix_tar_paths(char *const *paths, size_t n, int fd,
	    struct nix_tarinfo *, char **cause);
/*
 * Writes the customisation layer for the given top-level store paths: a
 * symlinkJoin of them at /, /tmp, /usr/bin/env, /etc/passwd, /etc/group.
 */
int	nix_tar_custom(char *const *paths, size_t n, int fd,
	    struct nix_tarinfo *, char **cause);

/* nix/image.c */
/* Serialises and frees a JSON value in canonical form; caller frees. */
char	*nix_json_canonical(json_t *);
struct nix_image_layer {
	char		 il_digest[NM_DIGEST_SIZE];
	char		 il_diffid[NM_DIGEST_SIZE];
	uint64_t	 il_size;
	char		*il_paths;	/* its store paths, for the OCI
					   manifest's annotation, or NULL */
};
/* The annotation of an OCI manifest's layer naming its store paths. */
#define NIX_ANN_PATHS	"dev.nixmirror.store-paths"
/*
 * The image config JSON (canonical bytes, caller frees) for the layers of
 * an image of the given system, with PATH, SSL_CERT_FILE, Cmd and the
 * labels (an object of strings, or NULL; not taken).
 */
char	*nix_image_config(const struct nix_image_layer *, size_t n,
	    const char *system, const char *cacert, const char *cmd, int shell,
	    json_t *labels);
/*
 * A manifest (canonical bytes, caller frees) in Docker schema2 form
 * (oci = 0) or OCI form (oci = 1).
 */
char	*nix_image_manifest(const struct nix_image_layer *, size_t n,
	    const char *config_digest, uint64_t config_size, int oci);

/* nix/sbom.c */
#define NIX_MT_OCI_MANIFEST	"application/vnd.oci.image.manifest.v1+json"
#define NIX_MT_SPDX		"application/spdx+json"
#define NIX_MT_EMPTY		"application/vnd.oci.empty.v1+json"
#define NIX_EMPTY_DIGEST	\
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
/*
 * The SPDX 2.3 SBOM (canonical JSON; caller frees) of an image from its
 * closure: one package per store path, the references as DEPENDS_ON,
 * the image CONTAINS the packages asked for.  digest is the image's OCI
 * manifest (the document's namespace), revision the package set's or
 * NULL.
 */
char	*nix_sbom_spdx(const struct nix_closure *, const struct nix_request *,
	    const char *digest, const char *revision);
/* The OCI 1.1 artifact manifest making an SBOM a referrer of subject. */
char	*nix_sbom_referrer(const char *sbom_digest, uint64_t sbom_size,
	    const char *subject_type, const char *subject_digest,
	    uint64_t subject_size);

/* nix/build.c: the build queue; runs in the event loop's thread. */
struct event_base;
struct nix_build_result {
	int		 br_status;	/* NIX_OK or NIX_E* */
	char		*br_cause;
	char		 br_docker[NM_DIGEST_SIZE];	/* schema2 manifest */
	char		 br_oci[NM_DIGEST_SIZE];	/* OCI manifest */
};
typedef void (*nix_build_cb)(const struct nix_build_result *, void *);
struct store;
void	nix_build_init(struct event_base *, struct store *, json_t *pop);
/*
 * Finds or builds the image for a request at a tag; calls cb from the
 * event loop when done.  Identical requests in flight share one build.
 * Returns a handle for nix_build_cancel (the build itself goes on).
 */
struct nix_waiter;
struct nix_waiter *nix_build_get(const struct nix_request *, const char *tag,
	    nix_build_cb, void *);
void	nix_build_cancel(struct nix_waiter *);
/* Stops the queue: kills running Nix children and waits for the workers. */
void	nix_build_shutdown(void);
/*
 * Replicas sharing a bucket: the replica that owns an image key builds
 * it for the others.  no_other says whether another one owns key;
 * no_ask has it built there, by GET of path (the image "what"; a pool job
 * waits, up to timeout seconds, or until *stop is set): 0 when it
 * answered with the manifest, 2 when it answered that the image does not
 * exist (*cause: its message), 1 when no replica but this one is left to
 * ask, -1 with a cause when they failed.
 */
struct nix_owner {
	int	(*no_other)(const char *key);
	int	(*no_ask)(const char *what, const char *key, const char *path,
		    int timeout, const int *stop, char **cause);
};
void	nix_build_set_owner(const struct nix_owner *);

#endif /* NIX_H */
