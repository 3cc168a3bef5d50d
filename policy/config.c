/*
 * policy/config.c: the configuration of "serve", from the command line and
 * a JSON file.  One table names every setting; a flag "--pkgs-path" is the
 * key "pkgs_path" of the file, and the command line wins over the file.
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "nixmirror.h"
#include "policy/policy.h"

enum config_type {
	CONFIG_STR,
	CONFIG_INT,
	CONFIG_BOOL,
	CONFIG_I64,
};

struct config_key {
	const char		*ck_name;
	enum config_type	 ck_type;
	size_t			 ck_off;
	int64_t			 ck_min;
	int64_t			 ck_max;
	const char		*ck_help;
};

#define CK_STR(n, f, h)	{ n, CONFIG_STR, offsetof(struct nm_config, f), 0, 0, h }
#define CK_INT(n, f, lo, hi, h) \
	{ n, CONFIG_INT, offsetof(struct nm_config, f), lo, hi, h }

static const struct config_key config_keys[] = {
	/* Serving (the groups are those of --help and the README). */
	CK_STR("listen", cf_listen, "ADDR:PORT to listen on (:5000)"),
	CK_STR("data", cf_data, "data directory (./var)"),
	CK_STR("tls_cert", cf_tls_cert, "serve https with this certificate"),
	CK_STR("tls_key", cf_tls_key, "the certificate's private key"),
	/* Nix images. */
	CK_STR("pkgs_path", cf_pkgs_path, "local Nix package set directory"),
	CK_STR("pkgs_repo", cf_pkgs_repo, "git repository of a package set"),
	CK_STR("channel", cf_channel, "nixpkgs channel or commit"),
	CK_STR("popularity", cf_popularity, "popularity JSON file"),
	CK_STR("nix_prefix", cf_nix_prefix, "first name component of Nix images"),
	CK_STR("nix_ns", cf_nix_ns, "an ns parameter that means Nix images"),
	CK_INT("build_timeout", cf_build_timeout, 1, 86400,
	    "seconds each Nix step may take (600)"),
	CK_INT("max_builds", cf_max_builds, 1, 64, "concurrent builds (2)"),
	CK_INT("max_layers", cf_max_layers, 1, 120,
	    "store-path layers per image (94)"),
	CK_INT("layering", cf_layering, 1, 2,
	    "layering version for new images: 2 stable, 1 dominators (2)"),
	CK_INT("tag_ttl", cf_tag_ttl, 0, 86400 * 365,
	    "seconds before a tag is checked again (300)"),
	/* The pull-through cache (and --upstream). */
	CK_STR("upstream_ca", cf_upstream_ca,
	    "extra CA certificates (PEM) for upstreams"),
	CK_INT("upstream_timeout", cf_upstream_timeout, 1, 3600,
	    "seconds to connect or wait for an upstream (30)"),
	CK_INT("upstream_min_rate", cf_upstream_min_rate, 0, 1 << 30,
	    "bytes a second an upstream body must keep up (1024)"),
	CK_INT("upstream_max_connections", cf_upstream_max_connections, 0,
	    4096, "requests in flight to one upstream; more wait (16)"),
	{ "offline", CONFIG_BOOL, offsetof(struct nm_config, cf_offline), 0, 1,
	    "never contact an upstream; serve what is stored" },
	/* Policy and store. */
	CK_STR("policy", cf_policy, "policy file (JSON; reloaded on SIGHUP)"),
	{ "max_store_bytes", CONFIG_I64, offsetof(struct nm_config,
	    cf_max_store_bytes), 0, INT64_MAX, "store quota in bytes (0: none)" },
	/* Replicas sharing an object store. */
	CK_STR("s3_endpoint", cf_s3_endpoint,
	    "S3 endpoint URL of the bucket replicas share"),
	CK_STR("s3_bucket", cf_s3_bucket, "the bucket's name"),
	CK_STR("s3_region", cf_s3_region, "its region (us-east-1)"),
	CK_STR("s3_prefix", cf_s3_prefix, "key prefix in the bucket (none)"),
	CK_STR("s3_access_key", cf_s3_access_key,
	    "access key (else AWS_ACCESS_KEY_ID)"),
	CK_STR("s3_secret_key", cf_s3_secret_key,
	    "secret key (else AWS_SECRET_ACCESS_KEY)"),
	CK_STR("s3_session_token", cf_s3_session_token,
	    "session token (else AWS_SESSION_TOKEN)"),
	CK_STR("s3_ca", cf_s3_ca, "extra CA certificates (PEM) for S3"),
	{ "s3_upload_rate", CONFIG_I64, offsetof(struct nm_config,
	    cf_s3_upload_rate), 0, INT64_MAX,
	    "bytes a second uploads may use (0: no limit)" },
	{ "s3_redirect", CONFIG_BOOL, offsetof(struct nm_config,
	    cf_s3_redirect), 0, 1,
	    "answer blob GETs with a 307 to a presigned bucket URL" },
	CK_STR("peers", cf_peers,
	    "URLs of all replicas, comma-separated (this one's too)"),
	CK_STR("peer_self", cf_peer_self,
	    "this replica's URL in peers (http://LISTEN)"),
	/* Logging. */
	CK_STR("log_format", cf_log_format,
	    "log lines as \"text\" or \"json\" (text)"),
	{ "debug", CONFIG_BOOL, offsetof(struct nm_config, cf_debug), 0, 1,
	    "log debug lines" },
};
/* The headings of --help, before the key that starts each group. */
static const struct {
	const char	*cg_first;
	const char	*cg_title;
} config_groups[] = {
	{ "listen", "serving" },
	{ "pkgs_path", "Nix images" },
	{ "upstream_ca", "the pull-through cache" },
	{ "policy", "policy and store" },
	{ "s3_endpoint", "replicas sharing an object store" },
	{ "log_format", "logging" },
};
#define CONFIG_NKEYS	(sizeof config_keys / sizeof config_keys[0])

/* Which keys the command line set, so that the file does not override them. */
static int	config_set[CONFIG_NKEYS];

static const struct config_key *config_find(const char *, size_t *);
static int	config_assign(struct nm_config *, const struct config_key *,
		    const char *, char **);
static int	config_file_key(struct nm_config *, const char *, const char *,
		    json_t *, char **);

/* A key that holds a secret: the config file only, never a flag. */
static int
config_secret(const struct config_key *ck)
{
	return (strcmp(ck->ck_name, "s3_access_key") == 0 ||
	    strcmp(ck->ck_name, "s3_secret_key") == 0 ||
	    strcmp(ck->ck_name, "s3_session_token") == 0);
}

/* Fills in the defaults. */
void
policy_config_defaults(struct nm_config *cf)
{
	memset(cf, 0, sizeof *cf);
	cf->cf_build_timeout = 600;
	cf->cf_max_builds = 2;
	cf->cf_max_layers = 94;
	cf->cf_layering = 2;
	cf->cf_tag_ttl = 300;
	cf->cf_upstream_timeout = 30;
	cf->cf_upstream_min_rate = 1024;
	cf->cf_upstream_max_connections = 16;
	memset(config_set, 0, sizeof config_set);
}

/* Finds a key by its file name ("pkgs_path") or flag name ("pkgs-path"). */
static const struct config_key *
config_find(const char *name, size_t *idx)
{
	char	 buf[64];
	size_t	 i;

	if (strlen(name) >= sizeof buf)
		return (NULL);
	for (i = 0; name[i] != '\0'; i++)
		buf[i] = name[i] == '-' ? '_' : name[i];
	buf[i] = '\0';
	for (i = 0; i < CONFIG_NKEYS; i++) {
		if (strcmp(config_keys[i].ck_name, buf) == 0) {
			*idx = i;
			return (&config_keys[i]);
		}
	}
	return (NULL);
}

/* Sets one key from its text form. */
static int
config_assign(struct nm_config *cf, const struct config_key *ck,
    const char *val, char **cause)
{
	char		**sp;
	int		 *ip;
	char		 *end;
	long long	  n;

	switch (ck->ck_type) {
	case CONFIG_STR:
		if (*val == '\0') {
			xasprintf(cause, "%s: empty value", ck->ck_name);
			return (-1);
		}
		sp = (char **)((char *)cf + ck->ck_off);
		free(*sp);
		*sp = xstrdup(val);
		return (0);
	case CONFIG_INT:
	case CONFIG_BOOL:
	case CONFIG_I64:
		errno = 0;
		n = strtoll(val, &end, 10);
		if (errno != 0 || end == val || *end != '\0' ||
		    n < ck->ck_min || n > ck->ck_max) {
			xasprintf(cause, "%s: \"%s\" is not a number from %lld "
			    "to %lld", ck->ck_name, val, (long long)ck->ck_min,
			    (long long)ck->ck_max);
			return (-1);
		}
		if (ck->ck_type == CONFIG_I64)
			*(int64_t *)((char *)cf + ck->ck_off) = (int64_t)n;
		else {
			ip = (int *)((char *)cf + ck->ck_off);
			*ip = (int)n;
		}
		return (0);
	}
	return (-1);
}

/* Finds the upstream of a namespace. */
const struct nm_upstream *
policy_upstream_find(const struct nm_config *cf, const char *ns)
{
	size_t	 i;

	for (i = 0; i < cf->cf_nupstreams; i++)
		if (strcmp(cf->cf_upstreams[i].up_ns, ns) == 0)
			return (&cf->cf_upstreams[i]);
	return (NULL);
}

/*
 * Adds an upstream unless its namespace is there already (the command
 * line comes first and wins).  The URL must be http or https with a host.
 */
static int
config_upstream_add(struct nm_config *cf, const char *ns, const char *url,
    const char *user, const char *pass, char **cause)
{
	struct nm_upstream	*up;
	const char		*host;

	if (!policy_ns_valid(ns)) {
		xasprintf(cause, "upstream: \"%s\" is not a registry host", ns);
		return (-1);
	}
	if (strncmp(url, "https://", 8) == 0)
		host = url + 8;
	else if (strncmp(url, "http://", 7) == 0)
		host = url + 7;
	else
		host = NULL;
	if (host != NULL && strchr(host, '@') != NULL) {
		xasprintf(cause, "upstream %s: credentials do not go in the "
		    "URL; give a username and password in the config file", ns);
		return (-1);
	}
	if (host == NULL || *host == '\0' || *host == '/' ||
	    strpbrk(url, " \t\r\n?#") != NULL) {
		xasprintf(cause, "upstream %s: \"%s\" is not an http or https "
		    "URL", ns, url);
		return (-1);
	}
	if ((user == NULL) != (pass == NULL)) {
		xasprintf(cause, "upstream %s: username and password go "
		    "together", ns);
		return (-1);
	}
	if (policy_upstream_find(cf, ns) != NULL)
		return (0);
	cf->cf_upstreams = xreallocarray(cf->cf_upstreams,
	    cf->cf_nupstreams + 1, sizeof *cf->cf_upstreams);
	up = &cf->cf_upstreams[cf->cf_nupstreams++];
	memset(up, 0, sizeof *up);
	up->up_ns = xstrdup(ns);
	up->up_url = xstrdup(url);
	while (up->up_url[strlen(up->up_url) - 1] == '/')
		up->up_url[strlen(up->up_url) - 1] = '\0';
	up->up_user = user != NULL ? xstrdup(user) : NULL;
	up->up_pass = pass != NULL ? xstrdup(pass) : NULL;
	return (0);
}

/*
 * Reads an upstream's "redirect_hosts": host names or globs that its
 * redirects and token realms may lead to whatever their address.
 */
static int
config_redirect_hosts(struct nm_config *cf, const char *ns, json_t *arr,
    char **cause)
{
	struct nm_upstream	*up;
	json_t			*h;
	size_t			 i;

	if (arr == NULL)
		return (0);
	if (!json_is_array(arr)) {
		xasprintf(cause, "upstreams.%s.redirect_hosts: expected an "
		    "array of host names", ns);
		return (-1);
	}
	for (up = NULL, i = 0; i < cf->cf_nupstreams; i++)
		if (strcmp(cf->cf_upstreams[i].up_ns, ns) == 0)
			up = &cf->cf_upstreams[i];
	if (up == NULL)
		return (0);
	json_array_foreach(arr, i, h) {
		if (!json_is_string(h) || json_string_length(h) == 0 ||
		    json_string_length(h) > 253 ||
		    strpbrk(json_string_value(h), "/@: \t\r\n") != NULL) {
			xasprintf(cause, "upstreams.%s.redirect_hosts[%zu]: "
			    "expected a host name or glob", ns, i);
			return (-1);
		}
		up->up_redirect_hosts = xreallocarray(up->up_redirect_hosts,
		    up->up_nredirect_hosts + 1, sizeof *up->up_redirect_hosts);
		up->up_redirect_hosts[up->up_nredirect_hosts++] =
		    xstrdup(json_string_value(h));
	}
	return (0);
}

/* Parses "NS=URL" of --upstream. */
static int
config_upstream_arg(struct nm_config *cf, const char *arg, char **cause)
{
	char	*ns, *eq;
	int	 rc;

	ns = xstrdup(arg);
	if ((eq = strchr(ns, '=')) == NULL) {
		xasprintf(cause, "--upstream \"%s\": expected NS=URL", arg);
		free(ns);
		return (-1);
	}
	*eq = '\0';
	rc = config_upstream_add(cf, ns, eq + 1, NULL, NULL, cause);
	free(ns);
	return (rc);
}

/*
 * Reads "upstreams": {"ns": "URL"} or {"ns": {"url": .., "username": ..,
 * "password": ..}}.
 */
static int
config_upstreams_json(struct nm_config *cf, json_t *obj, char **cause)
{
	const char	*ns, *url, *user, *pass, *k;
	json_t		*v, *f;

	if (!json_is_object(obj)) {
		xasprintf(cause, "key \"upstreams\" must be an object");
		return (-1);
	}
	json_object_foreach(obj, ns, v) {
		url = user = pass = NULL;
		if (json_is_string(v))
			url = json_string_value(v);
		else if (json_is_object(v)) {
			json_object_foreach(v, k, f) {
				if (strcmp(k, "redirect_hosts") == 0)
					continue;
				if (!json_is_string(f) || (strcmp(k, "url") != 0 &&
				    strcmp(k, "username") != 0 &&
				    strcmp(k, "password") != 0)) {
					xasprintf(cause, "upstreams.%s: unknown or "
					    "bad key \"%s\"", ns, k);
					return (-1);
				}
			}
			url = json_string_value(json_object_get(v, "url"));
			user = json_string_value(json_object_get(v, "username"));
			pass = json_string_value(json_object_get(v, "password"));
		}
		if (url == NULL) {
			xasprintf(cause, "upstreams.%s: needs a URL", ns);
			return (-1);
		}
		if (config_upstream_add(cf, ns, url, user, pass, cause) == -1 ||
		    config_redirect_hosts(cf, ns, json_is_object(v) ?
		    json_object_get(v, "redirect_hosts") : NULL, cause) == -1)
			return (-1);
	}
	return (0);
}

/* The package source's kind ("path", "git", "channel") and location. */
const char *
policy_config_source(const struct nm_config *cf, const char **kind)
{
	switch (cf->cf_source) {
	case NM_SOURCE_PATH:
		*kind = "path";
		return (cf->cf_pkgs_path);
	case NM_SOURCE_REPO:
		*kind = "git";
		return (cf->cf_pkgs_repo);
	default:
		*kind = "channel";
		return (cf->cf_channel);
	}
}

/* Prints the flags every subcommand that opens the store takes. */
void
policy_config_usage(FILE *fp)
{
	size_t	 i, g;
	char	 flag[64];

	fprintf(fp, "flags (each also a key of the --config JSON file, with "
	    "'_' for '-'):\n  %-26s VALUE  JSON file of settings; flags "
	    "win\n", "--config");
	for (i = 0; i < CONFIG_NKEYS; i++) {
		for (g = 0; g < sizeof config_groups / sizeof config_groups[0];
		    g++)
			if (strcmp(config_groups[g].cg_first,
			    config_keys[i].ck_name) == 0)
				fprintf(fp, " %s:\n", config_groups[g].cg_title);
		/* --upstream is no key of its own: "upstreams" in the file. */
		if (strcmp(config_keys[i].ck_name, "upstream_ca") == 0)
			fprintf(fp, "  %-26s NS=URL  pull-through upstream of a "
			    "namespace (repeatable)\n", "--upstream");
		snprintf(flag, sizeof flag, "--%s", config_keys[i].ck_name);
		for (char *p = flag + 2; *p != '\0'; p++)
			if (*p == '_')
				*p = '-';
		/* Secrets are keys of the file only. */
		if (config_secret(&config_keys[i]))
			snprintf(flag, sizeof flag, "%s (file)",
			    config_keys[i].ck_name);
		fprintf(fp, "  %-26s %s%s\n", flag,
		    config_keys[i].ck_type == CONFIG_BOOL ? "" : "VALUE  ",
		    config_keys[i].ck_help);
	}
	fprintf(fp, "environment:\n  %-26s Nix uses no binary cache or "
	    "network (offline package sets)\n", "NIXMIRROR_OFFLINE=1");
}

/*
 * Whether a command-line argument is a flag whose value is the next
 * argument (so that a subcommand can tell it from its own operands).
 */
int
policy_config_flag_takes_value(const char *arg)
{
	const struct config_key	*ck;
	size_t			 idx;

	if (strncmp(arg, "--", 2) != 0 || strchr(arg, '=') != NULL)
		return (0);
	if (strcmp(arg, "--config") == 0 || strcmp(arg, "--upstream") == 0)
		return (1);
	return ((ck = config_find(arg + 2, &idx)) != NULL &&
	    ck->ck_type != CONFIG_BOOL);
}

/* Parses "--flag VALUE", "--flag=VALUE" and bare boolean flags. */
int
policy_config_args(struct nm_config *cf, int argc, char **argv, char **cause)
{
	const struct config_key	*ck;
	char			 name[64];
	const char		*arg, *val, *eq;
	size_t			 idx;
	int			 i;

	for (i = 0; i < argc; i++) {
		arg = argv[i];
		if (strncmp(arg, "--", 2) != 0) {
			xasprintf(cause, "unexpected argument \"%s\"", arg);
			return (-1);
		}
		arg += 2;
		eq = strchr(arg, '=');
		snprintf(name, sizeof name, "%.*s",
		    (int)(eq != NULL ? (size_t)(eq - arg) : strlen(arg)), arg);
		if (strcmp(name, "config") == 0 || strcmp(name, "upstream") == 0) {
			ck = NULL;
		} else if ((ck = config_find(name, &idx)) == NULL) {
			xasprintf(cause, "unknown flag --%s", name);
			return (-1);
		} else if (config_secret(ck)) {
			xasprintf(cause, "--%s: give it in the config file or the "
			    "environment, where ps does not show it", name);
			return (-1);
		}
		if (eq != NULL)
			val = eq + 1;
		else if (ck != NULL && ck->ck_type == CONFIG_BOOL)
			val = "1";
		else if (i + 1 < argc)
			val = argv[++i];
		else {
			xasprintf(cause, "--%s needs a value", name);
			return (-1);
		}
		if (ck == NULL && strcmp(name, "upstream") == 0) {
			if (config_upstream_arg(cf, val, cause) == -1)
				return (-1);
			continue;
		}
		if (ck == NULL) {
			free(cf->cf_config);
			cf->cf_config = xstrdup(val);
			continue;
		}
		if (config_assign(cf, ck, val, cause) == -1)
			return (-1);
		config_set[idx] = 1;
	}
	return (0);
}

/* Reads a JSON object of settings; unknown keys and bad values are errors. */
int
policy_config_file(struct nm_config *cf, const char *file, char **cause)
{
	json_error_t		 jerr;
	json_t			*root, *v, *sv;
	const char		*key, *skey;
	char			*why, name[64];
	int			 rc = -1;

	if ((root = json_load_file(file, 0, &jerr)) == NULL) {
		xasprintf(cause, "%s:%d: %s", file, jerr.line, jerr.text);
		return (-1);
	}
	if (!json_is_object(root)) {
		xasprintf(cause, "%s: not a JSON object", file);
		goto out;
	}
	json_object_foreach(root, key, v) {
		if (strcmp(key, "upstreams") == 0) {
			if (config_upstreams_json(cf, v, &why) == -1) {
				xasprintf(cause, "%s: %s", file, why);
				free(why);
				goto out;
			}
			continue;
		}
		/* "s3": {"endpoint": ..} is s3_endpoint and the rest. */
		if (strcmp(key, "s3") == 0 && json_is_object(v)) {
			json_object_foreach(v, skey, sv) {
				snprintf(name, sizeof name, "s3_%s", skey);
				if (config_file_key(cf, file, name, sv,
				    cause) == -1)
					goto out;
			}
			continue;
		}
		if (config_file_key(cf, file, key, v, cause) == -1)
			goto out;
	}
	rc = 0;
out:
	json_decref(root);
	return (rc);
}

/* Sets one key of the file, unless the command line set it. */
static int
config_file_key(struct nm_config *cf, const char *file, const char *key,
    json_t *v, char **cause)
{
	const struct config_key	*ck;
	char			*text, *why;
	size_t			 idx;

	if ((ck = config_find(key, &idx)) == NULL) {
		xasprintf(cause, "%s: unknown key \"%s\"", file, key);
		return (-1);
	}
	if (config_set[idx])
		return (0);
	if (ck->ck_type == CONFIG_STR && json_is_string(v))
		text = xstrdup(json_string_value(v));
	else if ((ck->ck_type == CONFIG_INT ||
	    ck->ck_type == CONFIG_I64) && json_is_integer(v))
		xasprintf(&text, "%lld", (long long)json_integer_value(v));
	else if (ck->ck_type == CONFIG_BOOL && json_is_boolean(v))
		text = xstrdup(json_is_true(v) ? "1" : "0");
	else {
		xasprintf(cause, "%s: key \"%s\" has the wrong type", file,
		    key);
		return (-1);
	}
	if (config_assign(cf, ck, text, &why) == -1) {
		xasprintf(cause, "%s: %s", file, why);
		free(why);
		free(text);
		return (-1);
	}
	free(text);
	return (0);
}

/* Checks the whole configuration and settles the package source. */
int
policy_config_check(struct nm_config *cf, char **cause)
{
	char	 real[PATH_MAX];
	int	 n = 0;

	if (cf->cf_listen == NULL)
		cf->cf_listen = xstrdup(":5000");
	if (cf->cf_data == NULL)
		cf->cf_data = xstrdup("./var");
	if (cf->cf_nix_prefix == NULL)
		cf->cf_nix_prefix = xstrdup("nix");
	if (config_upstream_add(cf, "docker.io", "https://registry-1.docker.io",
	    NULL, NULL, cause) == -1)
		return (-1);
	if (cf->cf_log_format != NULL && strcmp(cf->cf_log_format, "text") !=
	    0 && strcmp(cf->cf_log_format, "json") != 0) {
		xasprintf(cause, "log_format: \"%s\" is neither text nor json",
		    cf->cf_log_format);
		return (-1);
	}
	if ((cf->cf_tls_cert == NULL) != (cf->cf_tls_key == NULL)) {
		xasprintf(cause, "tls_cert and tls_key go together");
		return (-1);
	}
	if (cf->cf_nix_ns != NULL && (!policy_ns_valid(cf->cf_nix_ns) ||
	    policy_upstream_find(cf, cf->cf_nix_ns) != NULL)) {
		xasprintf(cause, "nix_ns: \"%s\" is not a host name, or is "
		    "also an upstream", cf->cf_nix_ns);
		return (-1);
	}
	if (!policy_name_valid(cf->cf_nix_prefix) ||
	    strchr(cf->cf_nix_prefix, '/') != NULL) {
		xasprintf(cause, "nix_prefix: \"%s\" is not one name component",
		    cf->cf_nix_prefix);
		return (-1);
	}
	n = (cf->cf_pkgs_path != NULL) + (cf->cf_pkgs_repo != NULL) +
	    (cf->cf_channel != NULL);
	if (n > 1) {
		xasprintf(cause, "pkgs_path, pkgs_repo and channel exclude "
		    "each other");
		return (-1);
	}
	if (cf->cf_pkgs_path != NULL) {
		if (realpath(cf->cf_pkgs_path, real) == NULL) {
			xasprintf(cause, "pkgs_path: %s: %s", cf->cf_pkgs_path,
			    strerror(errno));
			return (-1);
		}
		free(cf->cf_pkgs_path);
		cf->cf_pkgs_path = xstrdup(real);
		cf->cf_source = NM_SOURCE_PATH;
	} else if (cf->cf_pkgs_repo != NULL) {
		if (cf->cf_pkgs_repo[0] == '-') {
			xasprintf(cause, "pkgs_repo: \"%s\" is not a git URL",
			    cf->cf_pkgs_repo);
			return (-1);
		}
		cf->cf_source = NM_SOURCE_REPO;
	} else {
		if (cf->cf_channel == NULL)
			cf->cf_channel = xstrdup("nixos-unstable");
		if (strspn(cf->cf_channel, "abcdefghijklmnopqrstuvwxyz"
		    "0123456789.-_") != strlen(cf->cf_channel)) {
			xasprintf(cause, "channel: \"%s\" is not a channel name "
			    "or commit", cf->cf_channel);
			return (-1);
		}
		cf->cf_source = NM_SOURCE_CHANNEL;
	}
	return (0);
}
