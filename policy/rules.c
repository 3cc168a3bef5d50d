/*
 * policy/rules.c: the --policy file: which clients may connect, which
 * upstream repositories and Nix attribute paths may be pulled, and the
 * limits in force.  The file is JSON (nixmirror.8 documents every key):
 *
 *	{ "clients":   { "allow": [CIDR...], "deny": [CIDR...],
 *	                 "proxies": [CIDR...] },
 *	  "upstreams": { "NS" | "*": { "allow": [GLOB...],
 *	                               "deny": [GLOB...] } },
 *	  "nix":       { "allow": [GLOB...], "deny": [GLOB...],
 *	                 "max_packages": N },
 *	  "limits":    { "max_blob_bytes": N, "max_concurrent_builds": N,
 *	                 "build_timeout_s": N, "max_connections": N,
 *	                 "max_connections_per_client": N },
 *	  "status":    { "allow": [CIDR...] } }
 *
 * Globs are fnmatch(3) patterns without FNM_PATHNAME, so a star matches
 * slashes too: "library/" then a star matches "library/a/b".  Nix
 * attribute paths are compared without regard to case (image names are
 * lowercase).  Deny wins over
 * allow; an absent section or allow list allows everything; an empty allow
 * list allows nothing.
 *
 * The policy in force may be read from any thread and is replaced on
 * SIGHUP.  A parsed policy is immutable and reference counted: a check
 * takes a reference under a mutex held only to copy the pointer, so a
 * reload (which parses the whole new file first, then swaps the pointer)
 * never waits behind checks, nor checks behind a reload.  A read-write
 * lock would starve the reload while checks keep coming.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1	/* FNM_CASEFOLD */
#endif
#include <sys/types.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "nixmirror.h"
#include "policy/policy.h"

#define POLICY_MAX_FILE		(1024 * 1024)
#define POLICY_DEF_CONNS	1024
#define POLICY_DEF_CONNS_CLIENT	64
#define POLICY_DEF_BUILDS	2
#define POLICY_DEF_TIMEOUT	600
#define POLICY_DEF_BLOB		(16ULL << 30)	/* bytes of one blob */
#define POLICY_DEF_TMP		(32ULL << 30)	/* bytes of downloads */

/* A list of globs; pg_set is 0 when the list was absent (allow all). */
struct policy_globs {
	char		**pg_v;
	size_t		  pg_n;
	int		  pg_set;
};

/* One address block of clients.allow or clients.deny. */
struct policy_cidr {
	int		 pc_af;		/* AF_INET or AF_INET6 */
	uint8_t		 pc_addr[16];	/* host bits cleared */
	int		 pc_bits;
	char		*pc_text;	/* as written, for messages */
};

struct policy_cidrs {
	struct policy_cidr *pcs_v;
	size_t		  pcs_n;
	int		  pcs_set;
};

/* The rules of one upstream namespace ("docker.io", or "*" for the rest). */
struct policy_upstream {
	char			*pu_ns;
	struct policy_globs	 pu_allow;
	struct policy_globs	 pu_deny;
};

/* A whole parsed policy; limits left 0 here fall back to the defaults. */
struct policy {
	int			 p_refs;	/* under policy_mtx */
	struct policy_cidrs	 p_callow;
	struct policy_cidrs	 p_cdeny;
	struct policy_cidrs	 p_cproxies;	/* balancers: X-Forwarded-For */
	struct policy_cidrs	 p_sallow;	/* status.allow */
	struct policy_upstream	*p_ups;
	size_t			 p_nups;
	struct policy_globs	 p_nallow;
	struct policy_globs	 p_ndeny;
	struct policy_limits	 p_limits;
	int			 p_conns_set;	/* 0 given: no limit */
	int			 p_blob_set;
	int			 p_tmp_set;
	int			 p_conns_client_set;
};

static pthread_mutex_t	 policy_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct policy	*policy_cur;	/* NULL: allow everything */

static int	policy_obj_check(json_t *, const char *, const char *const *,
		    char **);

/* Frees a glob list. */
static void
policy_globs_clear(struct policy_globs *pg)
{
	xstrvfree(pg->pg_v, pg->pg_n);
	memset(pg, 0, sizeof *pg);
}

/* Frees an address list. */
static void
policy_cidrs_clear(struct policy_cidrs *pcs)
{
	size_t	 i;

	for (i = 0; i < pcs->pcs_n; i++)
		free(pcs->pcs_v[i].pc_text);
	free(pcs->pcs_v);
	memset(pcs, 0, sizeof *pcs);
}

/* Frees a parsed policy. */
static void
policy_free(struct policy *p)
{
	size_t	 i;

	if (p == NULL)
		return;
	policy_cidrs_clear(&p->p_callow);
	policy_cidrs_clear(&p->p_cdeny);
	policy_cidrs_clear(&p->p_cproxies);
	policy_cidrs_clear(&p->p_sallow);
	for (i = 0; i < p->p_nups; i++) {
		free(p->p_ups[i].pu_ns);
		policy_globs_clear(&p->p_ups[i].pu_allow);
		policy_globs_clear(&p->p_ups[i].pu_deny);
	}
	free(p->p_ups);
	policy_globs_clear(&p->p_nallow);
	policy_globs_clear(&p->p_ndeny);
	free(p);
}

/* Checks an object has only the given keys; 0, or -1 naming the path. */
static int
policy_obj_check(json_t *obj, const char *path, const char *const *keys,
    char **cause)
{
	const char	*key;
	json_t		*v;
	size_t		 i;

	if (!json_is_object(obj)) {
		xasprintf(cause, "%s: expected an object", path);
		return (-1);
	}
	json_object_foreach(obj, key, v) {
		for (i = 0; keys[i] != NULL; i++)
			if (strcmp(keys[i], key) == 0)
				break;
		if (keys[i] == NULL) {
			xasprintf(cause, "%s%s%.100s: unknown key", path,
			    *path != '\0' ? "." : "", key);
			return (-1);
		}
	}
	return (0);
}

/* Reads an array of non-empty strings into a glob list. */
static int
policy_globs_parse(json_t *arr, const char *path, struct policy_globs *pg,
    char **cause)
{
	json_t	*v;
	size_t	 i;

	if (arr == NULL)
		return (0);
	if (!json_is_array(arr)) {
		xasprintf(cause, "%s: expected an array of strings", path);
		return (-1);
	}
	pg->pg_set = 1;
	pg->pg_v = xcalloc(json_array_size(arr) + 1, sizeof *pg->pg_v);
	json_array_foreach(arr, i, v) {
		if (!json_is_string(v) || json_string_length(v) == 0 ||
		    strlen(json_string_value(v)) != json_string_length(v)) {
			xasprintf(cause, "%s[%zu]: expected a non-empty string",
			    path, i);
			return (-1);
		}
		pg->pg_v[pg->pg_n++] = xstrdup(json_string_value(v));
	}
	return (0);
}

/* Parses "ADDR", "ADDR/BITS" (v4 or v6); 0, or -1. */
static int
policy_cidr_parse(const char *text, struct policy_cidr *pc)
{
	char		 buf[INET6_ADDRSTRLEN + 8], *slash, *end;
	long		 bits;
	int		 max, i;

	if (strlen(text) >= sizeof buf)
		return (-1);
	snprintf(buf, sizeof buf, "%s", text);
	if ((slash = strchr(buf, '/')) != NULL)
		*slash++ = '\0';
	memset(pc->pc_addr, 0, sizeof pc->pc_addr);
	if (inet_pton(AF_INET, buf, pc->pc_addr) == 1)
		pc->pc_af = AF_INET;
	else if (inet_pton(AF_INET6, buf, pc->pc_addr) == 1)
		pc->pc_af = AF_INET6;
	else
		return (-1);
	max = pc->pc_af == AF_INET ? 32 : 128;
	bits = max;
	if (slash != NULL) {
		errno = 0;
		bits = strtol(slash, &end, 10);
		if (*slash < '0' || *slash > '9' || *end != '\0' ||
		    errno != 0 || bits > max)
			return (-1);
	}
	pc->pc_bits = (int)bits;
	/* Host bits are cleared: "10.1.2.3/8" means 10.0.0.0/8. */
	for (i = 0; i < max / 8; i++) {
		if (i * 8 >= bits)
			pc->pc_addr[i] = 0;
		else if (i * 8 + 8 > bits)
			pc->pc_addr[i] &= (uint8_t)(0xff <<
			    (8 - (bits - i * 8)));
	}
	return (0);
}

/* Reads an array of address blocks. */
static int
policy_cidrs_parse(json_t *arr, const char *path, struct policy_cidrs *pcs,
    char **cause)
{
	struct policy_cidr	*pc;
	json_t			*v;
	size_t			 i;

	if (arr == NULL)
		return (0);
	if (!json_is_array(arr)) {
		xasprintf(cause, "%s: expected an array of addresses", path);
		return (-1);
	}
	pcs->pcs_set = 1;
	pcs->pcs_v = xcalloc(json_array_size(arr) + 1, sizeof *pcs->pcs_v);
	json_array_foreach(arr, i, v) {
		pc = &pcs->pcs_v[pcs->pcs_n];
		if (!json_is_string(v) ||
		    policy_cidr_parse(json_string_value(v), pc) == -1) {
			xasprintf(cause, "%s[%zu]: expected an address or "
			    "ADDRESS/BITS (\"10.0.0.0/8\", \"::1/128\")", path,
			    i);
			return (-1);
		}
		pc->pc_text = xstrdup(json_string_value(v));
		pcs->pcs_n++;
	}
	return (0);
}

/* Parses "clients". */
static int
policy_clients_parse(struct policy *p, json_t *o, char **cause)
{
	static const char *const keys[] = { "allow", "deny", "proxies", NULL };

	if (o == NULL)
		return (0);
	if (policy_obj_check(o, "clients", keys, cause) == -1 ||
	    policy_cidrs_parse(json_object_get(o, "allow"), "clients.allow",
	    &p->p_callow, cause) == -1 ||
	    policy_cidrs_parse(json_object_get(o, "deny"), "clients.deny",
	    &p->p_cdeny, cause) == -1 ||
	    policy_cidrs_parse(json_object_get(o, "proxies"), "clients.proxies",
	    &p->p_cproxies, cause) == -1)
		return (-1);
	return (0);
}

/* Parses "status": who may read /metrics and the status page. */
static int
policy_status_parse(struct policy *p, json_t *o, char **cause)
{
	static const char *const keys[] = { "allow", NULL };

	if (o == NULL)
		return (0);
	if (policy_obj_check(o, "status", keys, cause) == -1 ||
	    policy_cidrs_parse(json_object_get(o, "allow"), "status.allow",
	    &p->p_sallow, cause) == -1)
		return (-1);
	return (0);
}

/* Parses "upstreams": one object of rules per namespace. */
static int
policy_upstreams_parse(struct policy *p, json_t *o, char **cause)
{
	static const char *const keys[] = { "allow", "deny", NULL };
	struct policy_upstream	*pu;
	const char		*ns;
	json_t			*v;
	char			*path;
	int			 rc;

	if (o == NULL)
		return (0);
	if (!json_is_object(o)) {
		xasprintf(cause, "upstreams: expected an object");
		return (-1);
	}
	p->p_ups = xcalloc(json_object_size(o) + 1, sizeof *p->p_ups);
	json_object_foreach(o, ns, v) {
		xasprintf(&path, "upstreams.%.100s", ns);
		if (strcmp(ns, "*") != 0 && !policy_ns_valid(ns)) {
			xasprintf(cause, "%s: not a registry host (or \"*\")",
			    path);
			free(path);
			return (-1);
		}
		pu = &p->p_ups[p->p_nups++];
		pu->pu_ns = xstrdup(ns);
		rc = policy_obj_check(v, path, keys, cause);
		free(path);
		if (rc == -1)
			return (-1);
		xasprintf(&path, "upstreams.%s.allow", ns);
		rc = policy_globs_parse(json_object_get(v, "allow"), path,
		    &pu->pu_allow, cause);
		free(path);
		if (rc == -1)
			return (-1);
		xasprintf(&path, "upstreams.%s.deny", ns);
		rc = policy_globs_parse(json_object_get(v, "deny"), path,
		    &pu->pu_deny, cause);
		free(path);
		if (rc == -1)
			return (-1);
	}
	return (0);
}

/* Reads an integer in [lo, hi] if present; 1 set, 0 absent, -1 error. */
static int
policy_int_parse(json_t *o, const char *sect, const char *key, int64_t lo,
    int64_t hi, int64_t *out, char **cause)
{
	json_t		*v;
	json_int_t	 n;

	if ((v = json_object_get(o, key)) == NULL)
		return (0);
	if (!json_is_integer(v) || (n = json_integer_value(v)) < lo ||
	    n > hi) {
		xasprintf(cause, "%s.%s: expected an integer from %lld to %lld",
		    sect, key, (long long)lo, (long long)hi);
		return (-1);
	}
	*out = (int64_t)n;
	return (1);
}

/* Parses "nix". */
static int
policy_nix_parse(struct policy *p, json_t *o, char **cause)
{
	static const char *const keys[] = { "allow", "deny", "max_packages",
	    NULL };
	int64_t	 n = 0;

	if (o == NULL)
		return (0);
	if (policy_obj_check(o, "nix", keys, cause) == -1 ||
	    policy_globs_parse(json_object_get(o, "allow"), "nix.allow",
	    &p->p_nallow, cause) == -1 ||
	    policy_globs_parse(json_object_get(o, "deny"), "nix.deny",
	    &p->p_ndeny, cause) == -1 ||
	    policy_int_parse(o, "nix", "max_packages", 0, 1000000, &n,
	    cause) == -1)
		return (-1);
	p->p_limits.pl_max_packages = (int)n;
	return (0);
}

/* Parses "limits"; what is absent stays 0 for the defaults. */
static int
policy_limits_parse(struct policy *p, json_t *o, char **cause)
{
	static const char *const keys[] = { "max_blob_bytes", "max_tmp_bytes",
	    "max_concurrent_builds", "build_timeout_s", "max_connections",
	    "max_connections_per_client", NULL };
	struct policy_limits	*pl = &p->p_limits;
	int64_t			 n;
	int			 rc;

	if (o == NULL)
		return (0);
	if (policy_obj_check(o, "limits", keys, cause) == -1)
		return (-1);
	n = 0;
	if ((rc = policy_int_parse(o, "limits", "max_blob_bytes", 0,
	    INT64_MAX, &n, cause)) == -1)
		return (-1);
	if ((p->p_blob_set = rc))
		pl->pl_max_blob_bytes = (uint64_t)n;
	n = 0;
	if ((rc = policy_int_parse(o, "limits", "max_tmp_bytes", 0,
	    INT64_MAX, &n, cause)) == -1)
		return (-1);
	if ((p->p_tmp_set = rc))
		pl->pl_max_tmp_bytes = (uint64_t)n;
	n = 0;
	if (policy_int_parse(o, "limits", "max_concurrent_builds", 1, 64, &n,
	    cause) == -1)
		return (-1);
	pl->pl_max_concurrent_builds = (int)n;
	n = 0;
	if (policy_int_parse(o, "limits", "build_timeout_s", 1, 86400, &n,
	    cause) == -1)
		return (-1);
	pl->pl_build_timeout = (int)n;
	if ((rc = policy_int_parse(o, "limits", "max_connections", 0, 1000000,
	    &n, cause)) == -1)
		return (-1);
	if ((p->p_conns_set = rc))
		pl->pl_max_connections = (int)n;
	if ((rc = policy_int_parse(o, "limits", "max_connections_per_client",
	    0, 1000000, &n, cause)) == -1)
		return (-1);
	if ((p->p_conns_client_set = rc))
		pl->pl_max_connections_per_client = (int)n;
	return (0);
}

/* Parses a whole policy document; NULL with *cause on any error. */
static struct policy *
policy_doc_parse(const char *text, size_t len, char **cause)
{
	static const char *const keys[] = { "clients", "upstreams", "nix",
	    "limits", "status", NULL };
	struct policy	*p;
	json_error_t	 jerr;
	json_t		*root;

	if ((root = json_loadb(text, len, JSON_REJECT_DUPLICATES,
	    &jerr)) == NULL) {
		xasprintf(cause, "line %d column %d: %s", jerr.line,
		    jerr.column, jerr.text);
		return (NULL);
	}
	p = xcalloc(1, sizeof *p);
	if (!json_is_object(root)) {
		xasprintf(cause, "the policy is not a JSON object");
		goto fail;
	}
	if (policy_obj_check(root, "", keys, cause) == -1 ||
	    policy_clients_parse(p, json_object_get(root, "clients"),
	    cause) == -1 ||
	    policy_upstreams_parse(p, json_object_get(root, "upstreams"),
	    cause) == -1 ||
	    policy_nix_parse(p, json_object_get(root, "nix"), cause) == -1 ||
	    policy_limits_parse(p, json_object_get(root, "limits"),
	    cause) == -1 ||
	    policy_status_parse(p, json_object_get(root, "status"),
	    cause) == -1)
		goto fail;
	json_decref(root);
	return (p);
fail:
	json_decref(root);
	policy_free(p);
	return (NULL);
}

/* Parses a policy document and throws it away; see policy.h. */
int
policy_parse(const char *text, size_t len, char **cause)
{
	struct policy	*p;

	if ((p = policy_doc_parse(text, len, cause)) == NULL)
		return (-1);
	policy_free(p);
	return (0);
}

/* Reads and parses a policy file; NULL with *cause (without the file). */
static struct policy *
policy_file_parse(const char *file, char **cause)
{
	struct policy	*p = NULL;
	FILE		*f;
	char		*text;
	size_t		 len;

	if ((f = fopen(file, "r")) == NULL) {
		xasprintf(cause, "%s", strerror(errno));
		return (NULL);
	}
	text = xmalloc(POLICY_MAX_FILE + 1);
	len = fread(text, 1, POLICY_MAX_FILE + 1, f);
	if (ferror(f))
		xasprintf(cause, "read error");
	else if (len > POLICY_MAX_FILE)
		xasprintf(cause, "larger than %d bytes", POLICY_MAX_FILE);
	else
		p = policy_doc_parse(text, len, cause);
	fclose(f);
	free(text);
	return (p);
}

/* Takes a reference to the policy in force (NULL: allow everything). */
static struct policy *
policy_hold(void)
{
	struct policy	*p;

	pthread_mutex_lock(&policy_mtx);
	if ((p = policy_cur) != NULL)
		p->p_refs++;
	pthread_mutex_unlock(&policy_mtx);
	return (p);
}

/* Drops a reference; the last one frees the policy. */
static void
policy_release(struct policy *p)
{
	int	 refs;

	if (p == NULL)
		return;
	pthread_mutex_lock(&policy_mtx);
	refs = --p->p_refs;
	pthread_mutex_unlock(&policy_mtx);
	if (refs == 0)
		policy_free(p);
}

/* Puts a policy in force and drops the reference to the one it replaces. */
static void
policy_swap(struct policy *p)
{
	struct policy	*old;

	if (p != NULL)
		p->p_refs = 1;	/* policy_cur's own reference */
	pthread_mutex_lock(&policy_mtx);
	old = policy_cur;
	policy_cur = p;
	pthread_mutex_unlock(&policy_mtx);
	policy_release(old);
}

/* Loads the policy file at start; see policy.h. */
int
policy_load(const char *file, char **cause)
{
	struct policy	*p = NULL;
	char		*why = NULL;

	if (file != NULL && (p = policy_file_parse(file, &why)) == NULL) {
		xasprintf(cause, "policy %s: %s", file, why);
		free(why);
		return (-1);
	}
	policy_swap(p);
	if (file != NULL)
		log_info("policy loaded from %s", file);
	return (0);
}

/* SIGHUP: parses the file again and swaps only when it is valid. */
void
policy_reload(void)
{
	struct policy	*p;
	const char	*file = nm_conf != NULL ? nm_conf->cf_policy : NULL;
	char		*cause = NULL;

	if (file == NULL) {
		log_info("no --policy file; nothing to reload");
		return;
	}
	if ((p = policy_file_parse(file, &cause)) == NULL) {
		log_warnx("policy %s not reloaded: %s; keeping the old one",
		    file, cause);
		free(cause);
		return;
	}
	policy_swap(p);
	log_info("policy reloaded from %s", file);
}

/* Whether an address (16 bytes for v6, 4 for v4) is in a block. */
static int
policy_cidr_match(const struct policy_cidr *pc, int af, const uint8_t *a)
{
	int	 full = pc->pc_bits / 8, rest = pc->pc_bits % 8;
	uint8_t	 mask;

	if (pc->pc_af != af)
		return (0);
	if (memcmp(pc->pc_addr, a, (size_t)full) != 0)
		return (0);
	if (rest == 0)
		return (1);
	mask = (uint8_t)(0xff << (8 - rest));
	return ((a[full] & mask) == pc->pc_addr[full]);
}

/*
 * The first block of a list that holds an address, or NULL.  An IPv4-mapped
 * IPv6 address (::ffff:a.b.c.d) matches IPv4 blocks as a.b.c.d, and IPv6
 * blocks as itself.
 */
static const struct policy_cidr *
policy_cidrs_find(const struct policy_cidrs *pcs, int af, const uint8_t *a)
{
	static const uint8_t	 mapped[12] = {
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
	};
	size_t			 i;
	int			 ismapped;

	ismapped = af == AF_INET6 && memcmp(a, mapped, sizeof mapped) == 0;
	for (i = 0; i < pcs->pcs_n; i++) {
		if (policy_cidr_match(&pcs->pcs_v[i], af, a) ||
		    (ismapped && policy_cidr_match(&pcs->pcs_v[i], AF_INET,
		    a + 12)))
			return (&pcs->pcs_v[i]);
	}
	return (NULL);
}

/* The address bytes and family of a socket address, or -1. */
static int
policy_sa_addr(const struct sockaddr *sa, int *af, uint8_t a[16], char *text,
    size_t tlen)
{
	const struct sockaddr_in	*sin;
	const struct sockaddr_in6	*sin6;

	if (sa == NULL)
		return (-1);
	if (sa->sa_family == AF_INET) {
		sin = (const struct sockaddr_in *)(const void *)sa;
		memcpy(a, &sin->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		sin6 = (const struct sockaddr_in6 *)(const void *)sa;
		memcpy(a, &sin6->sin6_addr, 16);
	} else
		return (-1);
	*af = sa->sa_family;
	if (inet_ntop(*af, a, text, (socklen_t)tlen) == NULL)
		snprintf(text, tlen, "?");
	return (0);
}

/* Whether a client address may connect; see policy.h. */
int
policy_client_allowed(const struct sockaddr *sa, char **why)
{
	struct policy			*p;
	const struct policy_cidr	*pc;
	char				 text[INET6_ADDRSTRLEN];
	uint8_t				 a[16];
	int				 af, ok = 1;

	p = policy_hold();
	if (p == NULL || (!p->p_callow.pcs_set && !p->p_cdeny.pcs_set))
		goto out;
	if (policy_sa_addr(sa, &af, a, text, sizeof text) == -1) {
		ok = !p->p_callow.pcs_set;
		if (!ok)
			xasprintf(why, "a client that is not an IP address is "
			    "not in clients.allow");
		goto out;
	}
	if ((pc = policy_cidrs_find(&p->p_cdeny, af, a)) != NULL) {
		xasprintf(why, "client %s is denied by clients.deny \"%s\"",
		    text, pc->pc_text);
		ok = 0;
	} else if (p->p_callow.pcs_set &&
	    policy_cidrs_find(&p->p_callow, af, a) == NULL) {
		xasprintf(why, "client %s is not in clients.allow", text);
		ok = 0;
	}
out:
	policy_release(p);
	return (ok);
}

/* An address of X-Forwarded-For as a socket address; -1 if it is none. */
static int
policy_xff_addr(const char *s, size_t n, struct sockaddr_storage *ss)
{
	struct sockaddr_in	*sin = (struct sockaddr_in *)(void *)ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)(void *)ss;
	char			 text[INET6_ADDRSTRLEN + 2];
	const char		*colon;
	size_t			 i;

	while (n > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	/* "[v6]" and "[v6]:port"; "v4:port" (a port is no part of it). */
	if (n >= 2 && s[0] == '[') {
		for (i = 1; i < n && s[i] != ']'; i++)
			;
		/* The token ends at n on a space, a ',' or the end. */
		if (i == n || (i + 1 < n && (s[i + 1] != ':' || i + 2 == n ||
		    strspn(s + i + 2, "0123456789") != n - i - 2)))
			return (-1);
		s++;
		n = i - 1;
	} else if ((colon = memchr(s, ':', n)) != NULL &&
	    memchr(colon + 1, ':', n - (size_t)(colon - s) - 1) == NULL) {
		i = n - (size_t)(colon - s) - 1;	/* the port's length */
		if (i == 0 || strspn(colon + 1, "0123456789") != i)
			return (-1);
		n = (size_t)(colon - s);
	}
	if (n == 0 || n >= sizeof text)
		return (-1);
	memcpy(text, s, n);
	text[n] = '\0';
	memset(ss, 0, sizeof *ss);
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1)
		ss->ss_family = AF_INET;
	else if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1)
		ss->ss_family = AF_INET6;
	else
		return (-1);
	return (0);
}

/* Whether an address is in clients.proxies (p held). */
static int
policy_is_proxy(const struct policy *p, const struct sockaddr *sa)
{
	char	 text[INET6_ADDRSTRLEN];
	uint8_t	 a[16];
	int	 af;

	return (p != NULL && p->p_cproxies.pcs_set &&
	    policy_sa_addr(sa, &af, a, text, sizeof text) == 0 &&
	    policy_cidrs_find(&p->p_cproxies, af, a) != NULL);
}

/* Who a balancer's request is for; see policy.h. */
int
policy_client_forwarded(const struct sockaddr *peer, const char *xff,
    struct sockaddr_storage *client)
{
	struct policy	*p;
	const char	*end, *comma;
	int		 rc = 0;

	p = policy_hold();
	if (!policy_is_proxy(p, peer))
		goto out;
	rc = 1;
	if (xff == NULL || xff[strspn(xff, " \t")] == '\0') {
		/* The balancer's own request (a health check). */
		memset(client, 0, sizeof *client);
		memcpy(client, peer, peer->sa_family == AF_INET6 ?
		    sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
		goto out;
	}
	/* From the right: the first address that is not a balancer's. */
	for (end = xff + strlen(xff); ; end = comma) {
		for (comma = end; comma > xff && comma[-1] != ','; comma--)
			;
		if (policy_xff_addr(comma, (size_t)(end - comma),
		    client) == -1) {
			memset(client, 0, sizeof *client);
			break;
		}
		if (comma == xff || !policy_is_proxy(p,
		    (struct sockaddr *)client))
			break;
		comma--;	/* on the ',' */
	}
out:
	policy_release(p);
	return (rc);
}

/*
 * Whether a client may read /metrics and the status page (/ and
 * /status.json): one in status.allow, or without
 * that list one on a loopback address.
 */
int
policy_status_allowed(const struct sockaddr *sa, char **why)
{
	struct policy	*p;
	const char	*cls;
	char		 text[INET6_ADDRSTRLEN];
	uint8_t		 a[16];
	int		 af, ok;

	p = policy_hold();
	if (p == NULL || !p->p_sallow.pcs_set) {
		ok = sa != NULL && (cls = policy_addr_special(sa)) != NULL &&
		    strcmp(cls, "loopback") == 0;
		if (!ok)
			xasprintf(why, "/metrics and the status page are "
			    "served to loopback clients only (see status.allow "
			    "in the policy)");
	} else if (sa == NULL || policy_sa_addr(sa, &af, a, text,
	    sizeof text) == -1) {
		ok = 0;
		xasprintf(why, "a client that is not an IP address is not in "
		    "status.allow");
	} else if (!(ok = policy_cidrs_find(&p->p_sallow, af, a) != NULL))
		xasprintf(why, "client %s is not in status.allow", text);
	policy_release(p);
	return (ok);
}

/* The first glob of a list that matches, or NULL. */
static const char *
policy_globs_find(const struct policy_globs *pg, const char *s, int flags)
{
	size_t	 i;

	for (i = 0; i < pg->pg_n; i++)
		if (fnmatch(pg->pg_v[i], s, flags) == 0)
			return (pg->pg_v[i]);
	return (NULL);
}

/*
 * Checks one name against an allow and a deny list named prefix.allow and
 * prefix.deny; 1, or 0 with *why.
 */
static int
policy_globs_check(const struct policy_globs *allow,
    const struct policy_globs *deny, const char *prefix, const char *what,
    const char *name, int flags, char **why)
{
	const char	*g;

	if ((g = policy_globs_find(deny, name, flags)) != NULL) {
		xasprintf(why, "%s%s is denied by %s.deny \"%s\"", what, name,
		    prefix, g);
		return (0);
	}
	if (allow->pg_set && policy_globs_find(allow, name, flags) == NULL) {
		xasprintf(why, "%s%s is not in %s.allow", what, name, prefix);
		return (0);
	}
	return (1);
}

/* Whether a repository of an upstream may be pulled; see policy.h. */
int
policy_upstream_allowed(const char *ns, const char *repo, char **why)
{
	struct policy			*p;
	const struct policy_upstream	*pu = NULL;
	char				*prefix, *what;
	size_t				 i;
	int				 ok = 1;

	p = policy_hold();
	for (i = 0; p != NULL && i < p->p_nups; i++) {
		if (strcmp(p->p_ups[i].pu_ns, ns) == 0) {
			pu = &p->p_ups[i];
			break;
		}
		if (strcmp(p->p_ups[i].pu_ns, "*") == 0)
			pu = &p->p_ups[i];
	}
	if (pu != NULL) {
		xasprintf(&prefix, "upstreams.%s", pu->pu_ns);
		xasprintf(&what, "%s/", ns);
		ok = policy_globs_check(&pu->pu_allow, &pu->pu_deny, prefix,
		    what, repo, 0, why);
		free(what);
		free(prefix);
	}
	policy_release(p);
	return (ok);
}

/* Whether every package of a Nix image may be built; see policy.h. */
int
policy_nix_allowed(char *const *pkgs, size_t n, char **why)
{
	struct policy		*p;
	size_t			 i;
	int			 ok = 1;

	p = policy_hold();
	for (i = 0; p != NULL && ok && i < n; i++)
		ok = policy_globs_check(&p->p_nallow, &p->p_ndeny, "nix",
		    "package ", pkgs[i], FNM_CASEFOLD, why);
	policy_release(p);
	return (ok);
}

/* The limits in force, with the defaults for what the policy leaves out. */
void
policy_limits_get(struct policy_limits *pl)
{
	struct policy		*p;

	p = policy_hold();
	if (p != NULL)
		*pl = p->p_limits;
	else
		memset(pl, 0, sizeof *pl);
	if (p == NULL || !p->p_blob_set)
		pl->pl_max_blob_bytes = POLICY_DEF_BLOB;
	if (p == NULL || !p->p_tmp_set)
		pl->pl_max_tmp_bytes = POLICY_DEF_TMP;
	if (p == NULL || !p->p_conns_set)
		pl->pl_max_connections = POLICY_DEF_CONNS;
	if (p == NULL || !p->p_conns_client_set)
		pl->pl_max_connections_per_client = POLICY_DEF_CONNS_CLIENT;
	policy_release(p);
	if (pl->pl_max_concurrent_builds <= 0)
		pl->pl_max_concurrent_builds = nm_conf != NULL &&
		    nm_conf->cf_max_builds > 0 ? nm_conf->cf_max_builds :
		    POLICY_DEF_BUILDS;
	if (pl->pl_build_timeout <= 0)
		pl->pl_build_timeout = nm_conf != NULL &&
		    nm_conf->cf_build_timeout > 0 ? nm_conf->cf_build_timeout :
		    POLICY_DEF_TIMEOUT;
}
