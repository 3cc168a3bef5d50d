/*
 * policy/policy.h: configuration, and what is valid: names, tags, digests,
 * ranges.
 */
#ifndef POLICY_H
#define POLICY_H

#include <sys/types.h>
#include <sys/socket.h>

#include <stdint.h>
#include <stdio.h>

#include "nixmirror.h"

/* policy/validate.c */
/* OCI repository name grammar; host + name stay under 256 characters. */
int	policy_name_valid(const char *);
/* [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127} */
int	policy_tag_valid(const char *);
/* "sha256:" + 64 lowercase hex: the only algorithm stored or served. */
int	policy_digest_valid(const char *);
/* A digest of a known algorithm with a bad encoding, or an unknown algorithm. */
int	policy_digest_like(const char *);

#define POLICY_RANGE_NONE	0	/* no usable Range: serve all (200) */
#define POLICY_RANGE_OK		1	/* serve [start, end] (206) */
#define POLICY_RANGE_UNSAT	2	/* 416 */
/* Parses one "bytes=" range of a resource of size bytes. */
int	policy_range_parse(const char *, uint64_t size, uint64_t *start,
	    uint64_t *end);

/* A registry host with an optional port ("ghcr.io", "127.0.0.1:5000"). */
int	policy_ns_valid(const char *);

/* policy/ref.c */
/*
 * A parsed image reference.  For a Nix image pr_ns is NULL and pr_repo
 * is the name after the Nix prefix; pr_name is the name with its host
 * ("docker.io/library/busybox", or "nix/shell/htop"), pr_ref the whole
 * normalised reference.  A tag, a digest, or both.
 */
struct policy_ref {
	char	*pr_ns;		/* "docker.io", "ghcr.io"; NULL: Nix */
	char	*pr_repo;	/* "library/busybox", "shell/htop" */
	char	*pr_tag;	/* or NULL */
	char	*pr_digest;	/* or NULL */
	char	*pr_name;
	char	*pr_ref;
};
int	policy_ref_parse(const char *, struct policy_ref *, char **cause);
void	policy_ref_clear(struct policy_ref *);

/* policy/addr.c: where an upstream's redirects and realms may lead. */
struct sockaddr;
/* "loopback", "link-local", "private", ... or NULL for a public address. */
const char	*policy_addr_special(const struct sockaddr *);
int		 policy_addr_same(const struct sockaddr *, const struct sockaddr *);
/* NULL when an upstream at up (NULL: unknown) may send the mirror to to. */
const char	*policy_hop_refused(const struct sockaddr *up,
		    const struct sockaddr *to);
/* Whether host matches one of the upstream's redirect_hosts. */
int		 policy_hop_listed(const struct nm_upstream *, const char *host);

/* policy/rules.c: the --policy file (see nixmirror.8). */
struct sockaddr;
struct policy_limits {
	uint64_t	 pl_max_blob_bytes;	/* 0: no limit */
	uint64_t	 pl_max_tmp_bytes;	/* in flight; 0: no limit */
	int		 pl_max_concurrent_builds;
	int		 pl_build_timeout;	/* seconds */
	int		 pl_max_connections;
	int		 pl_max_connections_per_client;
	int		 pl_max_packages;	/* 0: no limit */
};
/*
 * Loads the policy file at start (NULL: allow everything, limits from the
 * configuration); 0, or -1 with *cause.
 */
int	policy_load(const char *file, char **cause);
/* SIGHUP: parses the whole file again; swaps only if valid; logs either. */
void	policy_reload(void);
/* Parses a policy document and throws it away (tests, fuzzing). */
int	policy_parse(const char *text, size_t len, char **cause);
/* Each check: 1 allowed, 0 denied with *why naming the rule (freed by caller). */
int	policy_client_allowed(const struct sockaddr *, char **why);
/*
 * A connection from a balancer in clients.proxies: 1, and *client is the
 * address its X-Forwarded-For header names (the rightmost one that is
 * not a balancer's; the balancer itself without the header; family 0
 * when the header holds something else).  0 for any other peer.
 */
int	policy_client_forwarded(const struct sockaddr *peer, const char *xff,
	    struct sockaddr_storage *client);
/* May a client read /metrics and the status page (status.allow, else loopback)? */
int	policy_status_allowed(const struct sockaddr *, char **why);
int	policy_upstream_allowed(const char *ns, const char *repo, char **why);
int	policy_nix_allowed(char *const *pkgs, size_t n, char **why);
/* The limits in force now. */
void	policy_limits_get(struct policy_limits *);

/* policy/config.c */
/* The upstream that serves a namespace, or NULL. */
const struct nm_upstream *policy_upstream_find(const struct nm_config *,
	    const char *);
void	policy_config_defaults(struct nm_config *);
/* Parses the command line of "serve"; 0 or -1 with *cause set. */
int	policy_config_args(struct nm_config *, int, char **, char **cause);
/* Reads the JSON config file; keys already set on the command line win. */
int	policy_config_file(struct nm_config *, const char *, char **cause);
/* Checks the finished configuration. */
int	policy_config_check(struct nm_config *, char **cause);
void	policy_config_usage(FILE *);
/* The package source's location; *kind is "path", "git" or "channel". */
const char *policy_config_source(const struct nm_config *, const char **kind);
/* Whether a flag's value is the next argument ("--data DIR"). */
int	policy_config_flag_takes_value(const char *);

#endif /* POLICY_H */
