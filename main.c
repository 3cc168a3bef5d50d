/*
 * main.c: nixmirror's command line and start-up.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

/* Reads the configuration of "serve" or exits with a message. */
static void
main_config(int argc, char **argv)
{
	char	*cause = NULL;

	nm_conf = xcalloc(1, sizeof *nm_conf);
	policy_config_defaults(nm_conf);
	if (policy_config_args(nm_conf, argc, argv, &cause) == -1 ||
	    (nm_conf->cf_config != NULL &&
	    policy_config_file(nm_conf, nm_conf->cf_config, &cause) == -1) ||
	    policy_config_check(nm_conf, &cause) == -1) {
		fprintf(stderr, "nixmirror: %s\n", cause);
		policy_config_usage();
		exit(2);
	}
}

/* Runs the server until a signal stops it. */
static int
main_serve(void)
{
	struct event	*sigterm, *sigint;
	struct store	*st;
	json_t		*pop;
	char		*cause = NULL;

	log_init(nm_conf->cf_debug);
	signal(SIGPIPE, SIG_IGN);
	if (evthread_use_pthreads() == -1)
		fatalx("evthread_use_pthreads failed");
	if ((pop = nix_popularity_load(nm_conf->cf_popularity, &cause)) == NULL)
		fatalx("popularity: %s", cause);
	if ((st = store_open(nm_conf->cf_data, &cause)) == NULL)
		fatalx("store: %s", cause);
	if ((main_base = event_base_new()) == NULL)
		fatalx("event_base_new failed");
	nix_build_init(main_base, st, pop);
	if (proxy_upstream_init(main_base, &cause) == -1)
		fatalx("%s", cause);
	if (proxy_server_start(main_base, st, nm_conf->cf_listen, &cause) == -1)
		fatalx("%s", cause);
	sigterm = evsignal_new(main_base, SIGTERM, main_signal_cb, NULL);
	sigint = evsignal_new(main_base, SIGINT, main_signal_cb, NULL);
	evsignal_add(sigterm, NULL);
	evsignal_add(sigint, NULL);
	log_info("nixmirror %s serving Nix images from %s %s, data in %s",
	    PACKAGE_VERSION, nm_conf->cf_source == NM_SOURCE_PATH ? "path" :
	    nm_conf->cf_source == NM_SOURCE_REPO ? "git" : "channel",
	    nm_conf->cf_source == NM_SOURCE_PATH ? nm_conf->cf_pkgs_path :
	    nm_conf->cf_source == NM_SOURCE_REPO ? nm_conf->cf_pkgs_repo :
	    nm_conf->cf_channel, nm_conf->cf_data);
	event_base_dispatch(main_base);
	event_free(sigterm);
	event_free(sigint);
	proxy_upstream_free();
	event_base_free(main_base);
	store_close(st);
	json_decref(pop);
	log_info("stopped");
	return (0);
}

int
main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "serve") == 0) {
		main_config(argc - 2, argv + 2);
		return (main_serve());
	}
	if (argc >= 2 && strcmp(argv[1], "version") == 0) {
		printf("nixmirror %s\n", PACKAGE_VERSION);
		return (0);
	}
	if (argc >= 2 && strcmp(argv[1], "--help") != 0 &&
	    strcmp(argv[1], "help") != 0)
		fprintf(stderr, "nixmirror: unknown command \"%s\"\n", argv[1]);
	policy_config_usage();
	return (argc >= 2 && strcmp(argv[1], "--help") != 0 &&
	    strcmp(argv[1], "help") != 0 ? 2 : 0);
}
