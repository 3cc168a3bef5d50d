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
		fprintf(stderr, "nixmirror: %s\n", shown != NULL ? shown :
		    "bad configuration");
		free(shown);
		free(cause);
		policy_config_usage();
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

/* Runs the server until a signal stops it. */
static int
main_serve(void)
{
	struct event	*sigterm, *sigint, *sighup, *gctimer = NULL;
	struct timeval	 tv = { MAIN_GC_INTERVAL, 0 };
	struct store	*st;
	json_t		*pop;
	char		*cause = NULL;
	int		 lockfd;

	log_init(nm_conf->cf_debug);
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
	if ((pop = nix_popularity_load(nm_conf->cf_popularity, &cause)) == NULL)
		fatalx("popularity: %s", cause);
	if ((st = store_open(nm_conf->cf_data, &cause)) == NULL)
		fatalx("store: %s", cause);
	if ((lockfd = main_lock(nm_conf->cf_data, 0, &cause)) == -1)
		fatalx("%s", cause);
	main_store = st;
	if ((main_base = event_base_new()) == NULL)
		fatalx("event_base_new failed");
	metrics_init();
	if (work_init(main_base, 0, &cause) == -1)
		fatalx("%s", cause);
	nix_build_init(main_base, st, pop);
	if (proxy_upstream_init(main_base, &cause) == -1)
		fatalx("%s", cause);
	if (proxy_server_start(main_base, st, nm_conf->cf_listen, &cause) == -1)
		fatalx("%s", cause);
	sigterm = evsignal_new(main_base, SIGTERM, main_signal_cb, NULL);
	sigint = evsignal_new(main_base, SIGINT, main_signal_cb, NULL);
	evsignal_add(sigterm, NULL);
	evsignal_add(sigint, NULL);
	sighup = evsignal_new(main_base, SIGHUP, main_sighup_cb, NULL);
	evsignal_add(sighup, NULL);
	if (nm_conf->cf_max_store_bytes > 0) {
		gctimer = event_new(main_base, -1, EV_PERSIST, main_gc_cb, NULL);
		if (gctimer == NULL || event_add(gctimer, &tv) == -1)
			fatalx("cannot start the store quota timer");
	}
	log_info("nixmirror %s serving Nix images from %s %s, data in %s",
	    PACKAGE_VERSION, nm_conf->cf_source == NM_SOURCE_PATH ? "path" :
	    nm_conf->cf_source == NM_SOURCE_REPO ? "git" : "channel",
	    nm_conf->cf_source == NM_SOURCE_PATH ? nm_conf->cf_pkgs_path :
	    nm_conf->cf_source == NM_SOURCE_REPO ? nm_conf->cf_pkgs_repo :
	    nm_conf->cf_channel, nm_conf->cf_data);
	event_base_dispatch(main_base);
	event_free(sigterm);
	event_free(sigint);
	event_free(sighup);
	if (gctimer != NULL)
		event_free(gctimer);
	/*
	 * A gc stops between batches; every job ends, and its callback
	 * runs, before the base goes.
	 */
	store_gc_wait();
	work_drain();
	proxy_upstream_free();
	event_base_free(main_base);
	store_close(st);
	close(lockfd);
	json_decref(pop);
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

int
main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "serve") == 0) {
		main_config(argc - 2, argv + 2);
		return (main_serve());
	}
	if (argc >= 2 && strcmp(argv[1], "gc") == 0)
		return (main_gc(argc - 2, argv + 2));
	if (argc >= 2 && (strcmp(argv[1], "pin") == 0 ||
	    strcmp(argv[1], "unpin") == 0))
		return (main_pin(argv[1][0] == 'p', argc - 2, argv + 2));
	if (argc >= 2 && strcmp(argv[1], "version") == 0) {
		printf("nixmirror %s\n", PACKAGE_VERSION);
		return (0);
	}
	if (argc >= 2 && strcmp(argv[1], "--help") != 0 &&
	    strcmp(argv[1], "help") != 0)
		fprintf(stderr, "nixmirror: unknown command \"%s\"\n", argv[1]);
	policy_config_usage();
	fprintf(stderr, "       nixmirror gc [--data DIR] [--max-store-bytes N] "
	    "[--config FILE]\n"
	    "       nixmirror pin|unpin sha256:DIGEST [--data DIR] "
	    "[--config FILE]\n");
	return (argc >= 2 && strcmp(argv[1], "--help") != 0 &&
	    strcmp(argv[1], "help") != 0 ? 2 : 0);
}
