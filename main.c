/*
 * main.c: nixmirror's command line and start-up.
 */
#include <sys/file.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>
#include <openssl/ssl.h>

#include "nixmirror.h"
#include "nix/nix.h"
#include "policy/policy.h"
#include "proxy/proxy.h"
#include "store/store.h"

struct nm_config	*nm_conf;

static struct event_base	*main_base;
static struct store		*main_store;

#define MAIN_GC_INTERVAL	10	/* seconds between quota checks */
#define MAIN_TRIM_SLACK	(8 << 20)	/* free heap top kept, bytes */
#define MAIN_TOP_PAD	(1 << 20)	/* heap grown by at least, bytes */
#define MAIN_MMAP_MIN	(1 << 20)	/* smaller blocks come from the heap */

static void	main_s3(void);

/* SIGTERM and SIGINT: stop accepting, stop builds, leave the loop. */
static void
main_signal_cb(evutil_socket_t sig, short events, void *arg)
{
	(void)events;
	(void)arg;
	log_info("signal %d: shutting down", (int)sig);
	proxy_server_stop();
	nix_build_shutdown();
	event_base_loopexit(main_base, NULL);
}

/* Every MAIN_GC_INTERVAL seconds: a background gc when over quota. */
static void
main_gc_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	(void)arg;
	store_gc_maybe(main_store, (uint64_t)nm_conf->cf_max_store_bytes);
}

/*
 * Locks DIR/nixmirror.lock: shared by every serve, exclusive for gc, pin
 * and unpin, whose store_open would otherwise clean DIR/tmp under a
 * running daemon's downloads.  The fd, or -1 with *cause.
 */
static int
main_lock(const char *dir, int exclusive, char **cause)
{
	char	*path;
	int	 fd;

	xasprintf(&path, "%s/nixmirror.lock", dir);
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) == -1) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		free(path);
		return (-1);
	}
	free(path);
	if (flock(fd, exclusive ? LOCK_EX | LOCK_NB : LOCK_SH | LOCK_NB) == 0)
		return (fd);
	if (errno == EWOULDBLOCK && !exclusive) {
		log_info("waiting for a nixmirror gc on %s to finish", dir);
		if (flock(fd, LOCK_SH) == 0)
			return (fd);
	}
	if (errno == EWOULDBLOCK)
		xasprintf(cause, "%s is in use by a running nixmirror serve; "
		    "stop it first (serve evicts by itself with "
		    "--max-store-bytes)", dir);
	else
		xasprintf(cause, "%s/nixmirror.lock: %s", dir, strerror(errno));
	close(fd);
	return (-1);
}

/* Reads the configuration of "serve" or exits with a message. */
static void
main_config(int argc, char **argv)
{
	char	*cause = NULL, *shown;

	nm_conf = xcalloc(1, sizeof *nm_conf);
	policy_config_defaults(nm_conf);
	if (policy_config_args(nm_conf, argc, argv, &cause) == -1 ||
	    (nm_conf->cf_config != NULL &&
	    policy_config_file(nm_conf, nm_conf->cf_config, &cause) == -1) ||
	    policy_config_check(nm_conf, &cause) == -1) {
		/* The cause may quote a URL with a token in it. */
		shown = nm_redact(cause, 0);
		fprintf(stderr, "nixmirror: %s (nixmirror serve --help lists "
		    "the flags)\n", shown != NULL ? shown : "bad configuration");
		free(shown);
		free(cause);
		exit(2);
	}
}

/* SIGHUP: reads the policy file again (kept when the new one is bad). */
static void
main_sighup_cb(evutil_socket_t sig, short events, void *arg)
{
	(void)sig;
	(void)events;
	(void)arg;
	policy_reload();
}

/* What serve, and prefetch with a store of its own, run on. */
static struct event	*main_events[4];
static int		 main_lockfd = -1;
static json_t		*main_pop;

/*
 * Starts everything a server needs: the policy, the store (locked:
 * shared by serves, exclusive for a tool), the pool, Nix builds, the
 * upstream client and the listener.  Exits with a message on failure.
 */
static void
main_start(int exclusive)
{
	struct timeval	 tv = { MAIN_GC_INTERVAL, 0 };
	char		*cause = NULL;

	log_init(nm_conf->cf_debug);
	log_json(nm_conf->cf_log_format != NULL &&
	    strcmp(nm_conf->cf_log_format, "json") == 0);
	signal(SIGPIPE, SIG_IGN);
	/*
	 * Streams free and allocate megabytes of buffers all the time; a
	 * heap top given back to the kernel at every free is faulted in
	 * again at the next allocation (a fifth of a cold download's CPU).
	 * Setting these stops glibc's own tuning, so the 256 KiB read
	 * buffers would each be an mmap and a munmap: they are kept below
	 * the threshold for that.
	 */
	mallopt(M_TRIM_THRESHOLD, MAIN_TRIM_SLACK);
	mallopt(M_TOP_PAD, MAIN_TOP_PAD);
	mallopt(M_MMAP_THRESHOLD, MAIN_MMAP_MIN);
	if (evthread_use_pthreads() == -1)
		fatalx("evthread_use_pthreads failed");
	if (policy_load(nm_conf->cf_policy, &cause) == -1)
		fatalx("%s", cause);
	if ((main_pop = nix_popularity_load(nm_conf->cf_popularity,
	    &cause)) == NULL)
		fatalx("popularity: %s", cause);
	if (store_mkdirs(nm_conf->cf_data) == -1)
		fatal("%s", nm_conf->cf_data);
	if ((main_lockfd = main_lock(nm_conf->cf_data, exclusive,
	    &cause)) == -1)
		fatalx("%s", cause);
	if ((main_store = store_open(nm_conf->cf_data, &cause)) == NULL)
		fatalx("store: %s", cause);
	if ((main_base = event_base_new()) == NULL)
		fatalx("event_base_new failed");
	metrics_init();
	status_init();
	log_on_warn(status_error);
	if (work_init(main_base, 0, &cause) == -1)
		fatalx("%s", cause);
	main_s3();
	if (proxy_peers_init(&cause) == -1)
		fatalx("%s", cause);
	nix_build_init(main_base, main_store, main_pop);
	if (nm_conf->cf_peers != NULL)
		nix_build_set_owner(&proxy_peer_owner);
	if (proxy_upstream_init(main_base, &cause) == -1)
		fatalx("%s", cause);
	if (proxy_server_start(main_base, main_store, nm_conf->cf_listen,
	    &cause) == -1)
		fatalx("%s", cause);
	main_events[0] = evsignal_new(main_base, SIGTERM, main_signal_cb, NULL);
	main_events[1] = evsignal_new(main_base, SIGINT, main_signal_cb, NULL);
	main_events[2] = evsignal_new(main_base, SIGHUP, main_sighup_cb, NULL);
	evsignal_add(main_events[0], NULL);
	evsignal_add(main_events[1], NULL);
	evsignal_add(main_events[2], NULL);
	if (nm_conf->cf_max_store_bytes > 0) {
		main_events[3] = event_new(main_base, -1, EV_PERSIST,
		    main_gc_cb, NULL);
		if (main_events[3] == NULL ||
		    event_add(main_events[3], &tv) == -1)
			fatalx("cannot start the store quota timer");
	}
}

/* A setting from the config, else from the environment, else NULL. */
static const char *
main_setting(const char *conf, const char *env)
{
	const char	*v;

	if (conf != NULL)
		return (conf);
	return ((v = getenv(env)) != NULL && *v != '\0' ? v : NULL);
}

/*
 * Attaches the bucket replicas share, when one is configured.  A bucket
 * that does not answer now is no reason not to serve: what is stored
 * locally is served, and the uploads wait for it.
 */
static void
main_s3(void)
{
	struct s3_settings	 ss;
	struct s3		*s3;
	char			*cause = NULL;

	if (nm_conf->cf_s3_endpoint == NULL && nm_conf->cf_s3_bucket == NULL)
		return;
	memset(&ss, 0, sizeof ss);
	ss.ss_endpoint = nm_conf->cf_s3_endpoint;
	ss.ss_bucket = nm_conf->cf_s3_bucket;
	ss.ss_region = main_setting(nm_conf->cf_s3_region, "AWS_REGION");
	ss.ss_prefix = nm_conf->cf_s3_prefix;
	ss.ss_access = main_setting(nm_conf->cf_s3_access_key,
	    "AWS_ACCESS_KEY_ID");
	ss.ss_secret = main_setting(nm_conf->cf_s3_secret_key,
	    "AWS_SECRET_ACCESS_KEY");
	ss.ss_token = main_setting(nm_conf->cf_s3_session_token,
	    "AWS_SESSION_TOKEN");
	ss.ss_cafile = main_setting(nm_conf->cf_s3_ca, "AWS_CA_BUNDLE");
	ss.ss_rate = nm_conf->cf_s3_upload_rate;
	if ((s3 = s3_new(&ss, &cause)) == NULL)
		fatalx("%s", cause);
	if (s3_check(s3, &cause) == -1) {
		log_warnx("s3: bucket %s at %s does not answer now: %s",
		    nm_conf->cf_s3_bucket, nm_conf->cf_s3_endpoint, cause);
		free(cause);
	} else
		log_info("s3: sharing bucket %s at %s%s%s",
		    nm_conf->cf_s3_bucket, nm_conf->cf_s3_endpoint,
		    nm_conf->cf_s3_prefix != NULL ? ", prefix " : "",
		    nm_conf->cf_s3_prefix != NULL ? nm_conf->cf_s3_prefix : "");
	store_remote_attach(main_store, s3);
}

/* Stops what main_start started, in the order that is safe. */
static void
main_stop(void)
{
	size_t	 i;

	for (i = 0; i < sizeof main_events / sizeof main_events[0]; i++)
		if (main_events[i] != NULL)
			event_free(main_events[i]);
	proxy_server_stop();
	nix_build_shutdown();
	/*
	 * A gc stops between batches; every job ends, and its callback
	 * runs, before the base goes.
	 */
	store_gc_wait();
	store_remote_stop(main_store);
	work_drain();
	proxy_upstream_free();
	event_base_free(main_base);
	store_close(main_store);
	close(main_lockfd);
	json_decref(main_pop);
}

/* Runs the server until a signal stops it. */
static int
main_serve(void)
{
	const char	*src, *kind;

	main_start(0);
	src = policy_config_source(nm_conf, &kind);
	log_info("nixmirror %s serving Nix images from %s %s%s, data in %s",
	    PACKAGE_VERSION, kind, src,
	    nm_conf->cf_offline ? " (offline: stored images only, no Nix "
	    "builds)" : nm_conf->cf_source == NM_SOURCE_CHANNEL ?
	    " (the channel and its binary cache need the network)" : "",
	    nm_conf->cf_data);
	for (size_t i = 0; i < nm_conf->cf_nupstreams; i++)
		log_info("upstream %s at %s%s", nm_conf->cf_upstreams[i].up_ns,
		    nm_conf->cf_upstreams[i].up_url, nm_conf->cf_offline ?
		    " (offline: not contacted)" : "");
	event_base_dispatch(main_base);
	main_stop();
	log_info("stopped");
	return (0);
}

/* Reads the configuration of gc, pin or unpin; 0, or -1 with *cause. */
static int
main_tool_config(int argc, char **argv, char **cause)
{
	nm_conf = xcalloc(1, sizeof *nm_conf);
	policy_config_defaults(nm_conf);
	if (policy_config_args(nm_conf, argc, argv, cause) == -1 ||
	    (nm_conf->cf_config != NULL &&
	    policy_config_file(nm_conf, nm_conf->cf_config, cause) == -1) ||
	    policy_config_check(nm_conf, cause) == -1)
		return (-1);
	return (0);
}

/* Opens the store of a stopped daemon for gc, pin or unpin. */
static struct store *
main_tool_store(int *lockfd, char **cause)
{
	struct stat	 sb;
	struct store	*st;

	if (stat(nm_conf->cf_data, &sb) == -1 || !S_ISDIR(sb.st_mode)) {
		xasprintf(cause, "%s: no data directory", nm_conf->cf_data);
		return (NULL);
	}
	if ((*lockfd = main_lock(nm_conf->cf_data, 1, cause)) == -1)
		return (NULL);
	if ((st = store_open(nm_conf->cf_data, cause)) == NULL)
		close(*lockfd);
	return (st);
}

/* "nixmirror gc": one collection to --max-store-bytes (0: orphans only). */
static int
main_gc(int argc, char **argv)
{
	struct store_gc_result	 res;
	struct store		*st;
	uint64_t		 max;
	char			*cause = NULL;
	int			 lockfd, rv = 1;

	log_init(0);
	if (main_tool_config(argc, argv, &cause) == -1 ||
	    (st = main_tool_store(&lockfd, &cause)) == NULL) {
		fprintf(stderr, "nixmirror gc: %s\n", cause);
		return (1);
	}
	max = nm_conf->cf_max_store_bytes > 0 ?
	    (uint64_t)nm_conf->cf_max_store_bytes : UINT64_MAX;
	if (store_gc(st, max, &res, &cause) == -1)
		fprintf(stderr, "nixmirror gc: %s\n", cause);
	else {
		printf("freed %llu bytes in %llu blobs; store now %llu bytes\n",
		    (unsigned long long)res.sg_freed,
		    (unsigned long long)res.sg_blobs,
		    (unsigned long long)res.sg_after);
		if (res.sg_orphans > 0 || res.sg_lost > 0)
			printf("(%llu orphan files removed, %llu rows without "
			    "a file dropped)\n",
			    (unsigned long long)res.sg_orphans,
			    (unsigned long long)res.sg_lost);
		if (res.sg_after > max)
			printf("still over the quota of %llu bytes: %llu blobs "
			    "are pinned, in use or referenced\n",
			    (unsigned long long)max,
			    (unsigned long long)res.sg_kept);
		rv = 0;
	}
	store_close(st);
	close(lockfd);
	return (rv);
}

/* "nixmirror pin|unpin DIGEST [flags]": gc keeps a pinned manifest. */
static int
main_pin(int pin, int argc, char **argv)
{
	struct store	*st;
	char		*cause = NULL;
	int		 lockfd, rv;

	log_init(0);
	if (argc < 1 || !policy_digest_valid(argv[0])) {
		fprintf(stderr, "usage: nixmirror %s sha256:DIGEST [--data DIR] "
		    "[--config FILE]\n", pin ? "pin" : "unpin");
		return (2);
	}
	if (main_tool_config(argc - 1, argv + 1, &cause) == -1 ||
	    (st = main_tool_store(&lockfd, &cause)) == NULL) {
		fprintf(stderr, "nixmirror: %s\n", cause);
		return (1);
	}
	rv = pin ? store_pin_put(st, argv[0]) : store_pin_del(st, argv[0]);
	if (rv == -1)
		fprintf(stderr, "nixmirror: %s %s\n", argv[0], pin ?
		    "is not a stored manifest" : "is not pinned");
	else
		printf("%s %s\n", pin ? "pinned" : "unpinned", argv[0]);
	store_close(st);
	close(lockfd);
	return (rv == -1 ? 1 : 0);
}

/* The usage of each subcommand; --help prints it on stdout, exit 0. */
static const struct main_cmd {
	const char	*mc_name;
	const char	*mc_usage;
	int		 mc_flags;	/* takes the configuration flags */
} main_cmds[] = {
	{ "serve", "nixmirror serve [--config FILE] [flags]\n"
	    "  Serves Nix images and the pull-through cache on --listen.\n", 1 },
	{ "prefetch", "nixmirror prefetch [--data DIR | --server URL "
	    "[--server-ca FILE]]\n"
	    "    [--platform OS/ARCH[/VARIANT] | --platform all] "
	    "[--no-progress] [flags]\n    (IMAGE... | -f LIST)\n"
	    "  Fetches or builds each IMAGE (docker.io/library/busybox:1.36,\n"
	    "  ghcr.io/org/app@sha256:..., nix/shell/htop:latest) into the "
	    "store,\n  through a running mirror (--server http://HOST:PORT, or "
	    "https:// with\n  its CA in --server-ca if not a system one) or "
	    "one started\n  here on the data directory.  Exits 1 naming each "
	    "image that failed.\n", 1 },
	{ "export", "nixmirror export [--data DIR] [--fetch] -o BUNDLE.tar "
	    "[flags] (IMAGE... | -f LIST)\n"
	    "  Writes the stored images as an OCI image layout tar (skopeo's\n"
	    "  oci-archive: and ctr images import read it); --fetch prefetches "
	    "them first.\n", 1 },
	{ "import", "nixmirror import [--data DIR] [flags] BUNDLE.tar\n"
	    "  Checks every blob of an OCI image layout tar, then stores its "
	    "images\n  (all or nothing; again is a no-op) for serve --offline.\n",
	    1 },
	{ "gc", "nixmirror gc [--data DIR] [--max-store-bytes N] "
	    "[--config FILE]\n"
	    "  Evicts least-recently-used blobs down to --max-store-bytes (the "
	    "daemon\n  stopped; serve evicts by itself).\n", 1 },
	{ "pin", "nixmirror pin sha256:DIGEST [--data DIR] [--config FILE]\n"
	    "  Keeps a stored manifest and what it references through gc.\n",
	    1 },
	{ "unpin", "nixmirror unpin sha256:DIGEST [--data DIR] "
	    "[--config FILE]\n  Lets gc evict a pinned manifest again.\n", 1 },
	{ "version", "nixmirror version\n  Prints the version.\n", 0 },
};
#define MAIN_NCMDS	(sizeof main_cmds / sizeof main_cmds[0])

/* The usage of one subcommand, or of all (cmd NULL). */
static void
main_usage(FILE *fp, const char *cmd)
{
	size_t	 i;
	int	 flags = 0;

	fprintf(fp, "usage:");
	for (i = 0; i < MAIN_NCMDS; i++) {
		if (cmd != NULL && strcmp(cmd, main_cmds[i].mc_name) != 0)
			continue;
		fprintf(fp, " %s", main_cmds[i].mc_usage);
		flags |= main_cmds[i].mc_flags;
	}
	if (flags)
		policy_config_usage(fp);
}

/* Whether the arguments ask for help. */
static int
main_wants_help(int argc, char **argv)
{
	int	 i;

	for (i = 0; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return (1);
	return (0);
}

/* A tool's arguments: its own flags and operands, then the rest. */
struct main_args {
	char		**ma_ops;	/* operands: images, a bundle */
	size_t		  ma_nops;
	char		**ma_conf;	/* configuration flags */
	int		  ma_nconf;
	const char	 *ma_list;	/* -f LIST */
	const char	 *ma_out;	/* -o FILE */
	const char	 *ma_server;	/* --server URL */
	const char	 *ma_server_ca;	/* --server-ca FILE */
	const char	 *ma_platform;	/* --platform P */
	int		  ma_fetch;	/* --fetch */
	int		  ma_noprogress; /* --no-progress */
};

/* Splits argv into a tool's flags and operands; 0, or -1 with *cause. */
static int
main_args_split(int argc, char **argv, struct main_args *ma, char **cause)
{
	const char	**val;
	int		  i;

	memset(ma, 0, sizeof *ma);
	ma->ma_ops = xcalloc((size_t)argc + 1, sizeof *ma->ma_ops);
	ma->ma_conf = xcalloc((size_t)argc + 1, sizeof *ma->ma_conf);
	for (i = 0; i < argc; i++) {
		val = NULL;
		if (strcmp(argv[i], "-f") == 0)
			val = &ma->ma_list;
		else if (strcmp(argv[i], "-o") == 0)
			val = &ma->ma_out;
		else if (strcmp(argv[i], "--server") == 0)
			val = &ma->ma_server;
		else if (strcmp(argv[i], "--server-ca") == 0)
			val = &ma->ma_server_ca;
		else if (strcmp(argv[i], "--platform") == 0)
			val = &ma->ma_platform;
		else if (strcmp(argv[i], "--fetch") == 0) {
			ma->ma_fetch = 1;
			continue;
		} else if (strcmp(argv[i], "--no-progress") == 0) {
			ma->ma_noprogress = 1;
			continue;
		} else if (argv[i][0] != '-') {
			ma->ma_ops[ma->ma_nops++] = argv[i];
			continue;
		} else {
			ma->ma_conf[ma->ma_nconf++] = argv[i];
			if (policy_config_flag_takes_value(argv[i]) &&
			    i + 1 < argc)
				ma->ma_conf[ma->ma_nconf++] = argv[++i];
			continue;
		}
		if (i + 1 == argc) {
			xasprintf(cause, "%s needs a value", argv[i]);
			return (-1);
		}
		*val = argv[++i];
	}
	return (0);
}

static void
main_args_free(struct main_args *ma)
{
	free(ma->ma_ops);
	free(ma->ma_conf);
}

/*
 * The image references of the operands and of -f LIST (one a line; '#'
 * starts a comment); NULL with *cause naming the first bad one.
 */
static struct policy_ref *
main_refs(const struct main_args *ma, size_t *n, char **cause)
{
	struct policy_ref	*refs = NULL;
	FILE			*fp = NULL;
	char			*line = NULL, *p, *e, *sub = NULL;
	size_t			 cap = 0, i, lineno = 0;
	ssize_t			 len;

	*n = 0;
	for (i = 0; ; i++) {
		if (i < ma->ma_nops)
			p = ma->ma_ops[i];
		else {
			if (ma->ma_list == NULL)
				break;
			if (fp == NULL && (fp = strcmp(ma->ma_list, "-") == 0 ?
			    stdin : fopen(ma->ma_list, "r")) == NULL) {
				xasprintf(cause, "%s: %s", ma->ma_list,
				    strerror(errno));
				goto fail;
			}
			if ((len = getline(&line, &cap, fp)) == -1)
				break;
			lineno++;
			if ((e = strchr(line, '#')) != NULL)
				*e = '\0';
			for (p = line; *p == ' ' || *p == '\t'; p++)
				;
			for (e = p + strlen(p); e > p && (e[-1] == ' ' ||
			    e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'); e--)
				;
			*e = '\0';
			if (*p == '\0')
				continue;
		}
		refs = xreallocarray(refs, *n + 1, sizeof *refs);
		if (policy_ref_parse(p, &refs[*n], &sub) == -1) {
			if (i >= ma->ma_nops)
				xasprintf(cause, "%s:%zu: %s", ma->ma_list,
				    lineno, sub);
			else
				*cause = sub, sub = NULL;
			free(sub);
			goto fail;
		}
		(*n)++;
	}
	if (fp != NULL && fp != stdin)
		fclose(fp);
	free(line);
	if (*n == 0) {
		xasprintf(cause, "no image given");
		free(refs);
		return (NULL);
	}
	return (refs);
fail:
	if (fp != NULL && fp != stdin)
		fclose(fp);
	free(line);
	for (i = 0; i < *n; i++)
		policy_ref_clear(&refs[i]);
	free(refs);
	*n = 0;
	return (NULL);
}

static void
main_refs_free(struct policy_ref *refs, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		policy_ref_clear(&refs[i]);
	free(refs);
}

/* Checks --platform: "all", or os/arch with an optional variant. */
static int
main_platform_valid(const char *p)
{
	const char	*s;

	if (p == NULL || strcmp(p, "all") == 0)
		return (1);
	if ((s = strchr(p, '/')) == NULL || s == p || s[1] == '\0' ||
	    s[1] == '/')
		return (0);
	return (strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789/") ==
	    strlen(p));
}

/*
 * Prefetches the references: through the mirror at --server, or through
 * one started on the data directory, listening on a loopback port only
 * for this.  The number of images that failed.
 */
static int
main_prefetch_refs(const struct main_args *ma, const struct policy_ref *refs,
    size_t n)
{
	char		 host[256];
	const char	*u, *hp;
	char		*end, *cause = NULL;
	long		 port;
	int		 failed, progress, tls;
	SSL_CTX		*ctx = NULL;

	progress = !ma->ma_noprogress && isatty(STDERR_FILENO);
	if (ma->ma_server != NULL) {
		u = ma->ma_server;
		tls = strncmp(u, "https://", 8) == 0;
		hp = u + (tls ? 8 : 7);
		if ((!tls && strncmp(u, "http://", 7) != 0) ||
		    (end = strrchr(hp, ':')) == NULL ||
		    (size_t)(end - hp) >= sizeof host || end == hp ||
		    (port = strtol(end + 1, &end, 10)) <= 0 || port > 65535 ||
		    (*end != '\0' && strcmp(end, "/") != 0)) {
			fprintf(stderr, "nixmirror prefetch: --server \"%s\" is "
			    "not http://HOST:PORT or https://HOST:PORT\n", u);
			return (-1);
		}
		snprintf(host, sizeof host, "%.*s", (int)(strrchr(hp, ':') - hp),
		    hp);
		if (tls && (ctx = proxy_tls_client(ma->ma_server_ca,
		    &cause)) == NULL) {
			fprintf(stderr, "nixmirror prefetch: --server-ca: %s\n",
			    cause);
			free(cause);
			return (-1);
		}
		if ((main_base = event_base_new()) == NULL)
			fatalx("event_base_new failed");
		failed = proxy_prefetch(main_base, host, (int)port, ctx, refs,
		    n, ma->ma_platform, progress);
		event_base_free(main_base);
		if (ctx != NULL)
			SSL_CTX_free(ctx);
		return (failed);
	}
	free(nm_conf->cf_listen);
	nm_conf->cf_listen = xstrdup("127.0.0.1:0");
	free(nm_conf->cf_tls_cert);
	free(nm_conf->cf_tls_key);
	nm_conf->cf_tls_cert = nm_conf->cf_tls_key = NULL;
	log_quiet(!nm_conf->cf_debug);
	main_start(1);
	failed = proxy_prefetch(main_base, "127.0.0.1", proxy_server_port(),
	    NULL, refs, n, ma->ma_platform, progress);
	main_stop();
	return (failed);
}

/* Reads a tool's configuration, or exits 2 with the message. */
static void
main_tool_setup(const char *cmd, struct main_args *ma, int argc,
    char **argv)
{
	char	*cause = NULL;

	if (main_args_split(argc, argv, ma, &cause) == -1 ||
	    main_tool_config(ma->ma_nconf, ma->ma_conf, &cause) == -1) {
		fprintf(stderr, "nixmirror %s: %s (nixmirror %s --help)\n", cmd,
		    cause, cmd);
		exit(2);
	}
}

/* "nixmirror prefetch". */
static int
main_prefetch(int argc, char **argv)
{
	struct main_args	 ma;
	struct policy_ref	*refs;
	size_t			 n;
	char			*cause = NULL;
	int			 failed;

	main_tool_setup("prefetch", &ma, argc, argv);
	if (ma.ma_out != NULL || ma.ma_fetch) {
		fprintf(stderr, "nixmirror prefetch: -o and --fetch are "
		    "export's\n");
		return (2);
	}
	if (!main_platform_valid(ma.ma_platform)) {
		fprintf(stderr, "nixmirror prefetch: --platform \"%s\" is not "
		    "OS/ARCH[/VARIANT] or all\n", ma.ma_platform);
		return (2);
	}
	if ((refs = main_refs(&ma, &n, &cause)) == NULL) {
		fprintf(stderr, "nixmirror prefetch: %s\n", cause);
		return (2);
	}
	failed = main_prefetch_refs(&ma, refs, n);
	main_refs_free(refs, n);
	main_args_free(&ma);
	return (failed == 0 ? 0 : 1);
}

/* "nixmirror export". */
static int
main_export(int argc, char **argv)
{
	struct main_args	 ma;
	struct policy_ref	*refs;
	struct store		*st;
	uint64_t		 bytes = 0;
	size_t			 n;
	char			*cause = NULL;
	int			 lockfd, rv = 1;

	main_tool_setup("export", &ma, argc, argv);
	if (ma.ma_out == NULL) {
		fprintf(stderr, "nixmirror export: -o BUNDLE.tar is needed\n");
		return (2);
	}
	if ((refs = main_refs(&ma, &n, &cause)) == NULL) {
		fprintf(stderr, "nixmirror export: %s\n", cause);
		return (2);
	}
	if (ma.ma_fetch && main_prefetch_refs(&ma, refs, n) != 0) {
		fprintf(stderr, "nixmirror export: not every image could be "
		    "fetched; nothing written\n");
		goto out;
	}
	log_init(0);
	if ((st = main_tool_store(&lockfd, &cause)) == NULL) {
		fprintf(stderr, "nixmirror export: %s\n", cause);
		goto out;
	}
	if (store_export(st, refs, n, ma.ma_out, &bytes, &cause) == -1)
		fprintf(stderr, "nixmirror export: %s\n", cause);
	else {
		printf("wrote %s: %zu images, %llu bytes\n", ma.ma_out, n,
		    (unsigned long long)bytes);
		rv = 0;
	}
	store_close(st);
	close(lockfd);
out:
	main_refs_free(refs, n);
	main_args_free(&ma);
	return (rv);
}

/* "nixmirror import". */
static int
main_import(int argc, char **argv)
{
	struct main_args		 ma;
	struct store_import_result	 res;
	struct store			*st;
	char				*cause = NULL;
	size_t				 i;
	int				 lockfd, rv = 1;

	main_tool_setup("import", &ma, argc, argv);
	if (ma.ma_nops != 1 || ma.ma_list != NULL || ma.ma_out != NULL) {
		fprintf(stderr, "nixmirror import: one BUNDLE.tar is needed "
		    "(nixmirror import --help)\n");
		return (2);
	}
	log_init(0);
	if (store_mkdirs(nm_conf->cf_data) == -1 ||
	    (st = main_tool_store(&lockfd, &cause)) == NULL) {
		fprintf(stderr, "nixmirror import: %s\n", cause != NULL ?
		    cause : strerror(errno));
		main_args_free(&ma);
		return (1);
	}
	if (store_import(st, ma.ma_ops[0], &res, &cause) == -1)
		fprintf(stderr, "nixmirror import: %s: %s\n", ma.ma_ops[0],
		    cause);
	else {
		for (i = 0; i < res.ir_images; i++)
			printf("imported %s\n", res.ir_refs[i]);
		printf("%zu images, %zu new blobs (%llu bytes), %zu "
		    "referrers\n", res.ir_images, res.ir_blobs,
		    (unsigned long long)res.ir_bytes, res.ir_referrers);
		store_import_result_clear(&res);
		rv = 0;
	}
	store_close(st);
	close(lockfd);
	main_args_free(&ma);
	return (rv);
}

int
main(int argc, char **argv)
{
	const char	*cmd = argc >= 2 ? argv[1] : NULL;
	size_t		 i;

	if (cmd == NULL || strcmp(cmd, "help") == 0 ||
	    strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		main_usage(cmd != NULL ? stdout : stderr, argc >= 3 ? argv[2] :
		    NULL);
		return (cmd != NULL ? 0 : 2);
	}
	for (i = 0; i < MAIN_NCMDS; i++)
		if (strcmp(cmd, main_cmds[i].mc_name) == 0)
			break;
	if (i == MAIN_NCMDS) {
		fprintf(stderr, "nixmirror: unknown command \"%s\" (nixmirror "
		    "--help lists them)\n", cmd);
		return (2);
	}
	if (main_wants_help(argc - 2, argv + 2)) {
		main_usage(stdout, cmd);
		return (0);
	}
	if (strcmp(cmd, "serve") == 0) {
		main_config(argc - 2, argv + 2);
		return (main_serve());
	}
	if (strcmp(cmd, "prefetch") == 0)
		return (main_prefetch(argc - 2, argv + 2));
	if (strcmp(cmd, "export") == 0)
		return (main_export(argc - 2, argv + 2));
	if (strcmp(cmd, "import") == 0)
		return (main_import(argc - 2, argv + 2));
	if (strcmp(cmd, "gc") == 0)
		return (main_gc(argc - 2, argv + 2));
	if (strcmp(cmd, "pin") == 0 || strcmp(cmd, "unpin") == 0)
		return (main_pin(cmd[0] == 'p', argc - 2, argv + 2));
	printf("nixmirror %s\n", PACKAGE_VERSION);
	return (0);
}
