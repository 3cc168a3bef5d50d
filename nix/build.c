/*
 * nix/build.c: the build queue.  A request for an image is answered from
 * the store when the image is known; otherwise one build per distinct
 * request runs as a long job of the worker pool (Nix children, layering,
 * tarballs, hashing) and hands its result back to the event loop.  A
 * build whose clients all left still finishes and is stored.  How many
 * builds run at once and their timeout come from the policy's limits,
 * read on the loop when a build starts; when BUILD_QUEUE_FACTOR times
 * that many builds already wait, new ones are refused with NIX_EBUSY.
 */
#include <sys/queue.h>
#include <sys/time.h>

#include <pthread.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "nixmirror.h"
#include "nix/nix.h"
#include "policy/policy.h"
#include "store/store.h"

#define BUILD_MT_OCI_CONFIG	"application/vnd.oci.image.config.v1+json"
#define BUILD_MT_OCI_LAYER	"application/vnd.oci.image.layer.v1.tar+gzip"
#define BUILD_MT_OCI_MANIFEST	"application/vnd.oci.image.manifest.v1+json"
#define BUILD_MT_DOCKER_MANIFEST \
	"application/vnd.docker.distribution.manifest.v2+json"
#define BUILD_QUEUE_FACTOR	4	/* queued builds per running one */

enum build_state {
	BUILD_QUEUED,
	BUILD_RUNNING,	/* a job of the worker pool */
	BUILD_DONE,
};

/*
 * A client waiting for an image: on a build's list, or (nw_build NULL)
 * holding a result found in the store, delivered by nw_ev from the loop.
 */
struct nix_waiter {
	struct nix_build	*nw_build;
	nix_build_cb		 nw_cb;
	void			*nw_arg;
	struct event		*nw_ev;
	struct nix_build_result	 nw_result;
	TAILQ_ENTRY(nix_waiter)	 nw_entry;
};

struct nix_build {
	char			*nb_key;	/* tag|system|packages */
	char			*nb_tag;
	struct nix_request	 nb_req;
	enum build_state	 nb_state;
	int			 nb_timeout;	/* seconds per Nix step */
	struct nix_build_result	 nb_result;
	int			 nb_sid;	/* its status page entry */
	struct event		*nb_done;	/* a result without a job */
	TAILQ_HEAD(, nix_waiter) nb_waiters;
	TAILQ_ENTRY(nix_build)	 nb_entry;
};

static struct event_base	*build_base;
static struct store		*build_store;
static json_t			*build_pop;
static time_t			 build_boot;
static int			 build_running;
static int			 build_running_peer;	/* for other replicas */
static int			 build_stopping;	/* read by jobs too */
static const struct nix_owner	*build_owner;
static TAILQ_HEAD(, nix_build)	 build_list = TAILQ_HEAD_INITIALIZER(build_list);

/*
 * Image keys a build job works on.  Two tags at one commit (or a tag and
 * a replica's request by commit) are two builds in the queue but one
 * image: the second job waits for the first and takes its outcome.
 */
struct build_claim {
	char			*bc_key;
	int			 bc_refs;	/* the holder and its waiters */
	int			 bc_done;
	int			 bc_status;	/* the holder's NIX_OK or NIX_E* */
	char			*bc_cause;
	TAILQ_ENTRY(build_claim) bc_entry;
};
static TAILQ_HEAD(, build_claim) build_claims =
    TAILQ_HEAD_INITIALIZER(build_claims);
static pthread_mutex_t		 build_claim_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t		 build_claim_cond = PTHREAD_COND_INITIALIZER;

/*
 * The count of running builds a build is held to: another replica's
 * request has slots of its own, as many, since its asking job holds one
 * of that replica's; so replicas asking each other never wait for each
 * other's slots.
 */
static int *
build_slots(const struct nix_build *nb)
{
	return (nb->nb_req.nr_peer ? &build_running_peer : &build_running);
}

/* Whether the queue stops; jobs ask it from their threads. */
static int
build_stopped(void)
{
	return (__atomic_load_n(&build_stopping, __ATOMIC_RELAXED));
}

static void	 build_done_cb(evutil_socket_t, short, void *);
static void	 build_found_cb(evutil_socket_t, short, void *);
static void	 build_job(void *);
static void	 build_job_done(void *);
static void	 build_start_queued(void);
static void	 build_status_start(struct nix_build *);

/* Sets up the queue. */
void
nix_build_init(struct event_base *base, struct store *st, json_t *pop)
{
	build_base = base;
	build_store = st;
	build_pop = pop;
	build_boot = time(NULL);
}

/* The text that names the package source at a revision, for image keys. */
static char *
build_source_key(const char *commit)
{
	char	*s;

	switch (nm_conf->cf_source) {
	case NM_SOURCE_PATH:
		xasprintf(&s, "path:%s", nm_conf->cf_pkgs_path);
		break;
	case NM_SOURCE_REPO:
		xasprintf(&s, "git:%s@%s", nm_conf->cf_pkgs_repo, commit);
		break;
	default:
		xasprintf(&s, "channel:%s", nm_conf->cf_channel);
		break;
	}
	return (s);
}

/* Whether a source's revision is fixed by its key (a git commit). */
static int
build_source_pinned(void)
{
	const char	*c = nm_conf->cf_channel;

	if (nm_conf->cf_source == NM_SOURCE_REPO)
		return (1);
	return (nm_conf->cf_source == NM_SOURCE_CHANNEL &&
	    strlen(c) == 40 && strspn(c, "0123456789abcdef") == 40);
}

/* The image key: source revision, then system and sorted packages. */
static char *
build_image_key(const struct nix_request *req, const char *commit)
{
	char	*src, *rk, *key;

	src = build_source_key(commit);
	rk = nix_request_key(req);
	xasprintf(&key, "%s|%s", src, rk);
	free(src);
	free(rk);
	return (key);
}

/*
 * An image another replica built, from the shared bucket: only for a
 * pinned source, whose key names the same packages everywhere.  0; 1
 * when not there (or no bucket is shared); -1 when the bucket failed.
 */
static int
build_remote_image(const char *key)
{
	char	*cause = NULL;
	int	 rc;

	if (!store_remote_on(build_store) || !build_source_pinned())
		return (1);
	if ((rc = store_remote_image(build_store, key, &cause)) == -1) {
		log_warnx("image %s: the shared bucket: %s", key, cause);
		free(cause);
		return (-1);
	}
	if (rc == 0)
		log_info("image %s: built by another replica", key);
	return (rc == 0 ? 0 : 1);
}

/* Sets who asks the owner replica of an image key; see nix.h. */
void
nix_build_set_owner(const struct nix_owner *no)
{
	build_owner = no;
}

/*
 * An image whose key another replica owns: that replica builds it (once
 * for every replica asking at once, as for its own clients), and this
 * one takes it from the bucket once it is there.  0 when it is; 1 when
 * the owner's answer is the build's (an unknown package: res is set);
 * -1 when this replica builds it itself: it owns the key, a replica
 * asked, the owner failed, or its image did not reach the bucket.
 */
static int
build_owner_image(struct nix_build *nb, const char *key, const char *commit,
    struct nix_build_result *res)
{
	struct timespec	 now, until, ts;
	long		 wait_ms = 250;
	char		*name, *what, *path, *cause = NULL;
	int		 rc;

	if (build_owner == NULL || nb->nb_req.nr_peer ||
	    !store_remote_on(build_store) || !build_source_pinned() ||
	    !build_owner->no_other(key))
		return (-1);
	/*
	 * By its commit: the owner builds the same key even if a tag moved.
	 * (A pinned --channel has no commit here, and no tags.)
	 */
	name = nix_request_name(&nb->nb_req);
	xasprintf(&path, "/v2/%s/%s/manifests/%s", nm_conf->cf_nix_prefix,
	    name, commit[0] != '\0' ? commit : "latest");
	xasprintf(&what, "%s/%s%s%s", nm_conf->cf_nix_prefix, name,
	    commit[0] != '\0' ? " at " : "", commit);
	free(name);
	status_build_phase(nb->nb_sid, "built by the replica that owns it");
	/* A build is a few steps of up to nb_timeout each there. */
	rc = build_owner->no_ask(what, key, path, 4 * nb->nb_timeout,
	    &build_stopping, &cause);
	free(path);
	if (rc == 2) {
		/* Its answer stands: this replica would find the same. */
		res->br_status = NIX_ENOTFOUND;
		res->br_cause = cause;
		free(what);
		return (1);
	}
	if (rc != 0) {
		if (rc == -1 && !build_stopped())
			log_warnx("image %s: its owner replica: %s; building "
			    "it here", what, cause);
		free(cause);
		free(what);
		return (-1);
	}
	/* Its objects go up after its layers: wait for the image's. */
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += nb->nb_timeout;
	while ((rc = build_remote_image(key)) != 0) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (rc == -1 || build_stopped() || now.tv_sec > until.tv_sec ||
		    (now.tv_sec == until.tv_sec &&
		    now.tv_nsec >= until.tv_nsec)) {
			if (rc != -1 && !build_stopped())
				log_warnx("image %s: built by its owner "
				    "replica, but not in the shared bucket "
				    "after %d s; building it here", what,
				    nb->nb_timeout);
			free(what);
			return (-1);
		}
		ts.tv_sec = wait_ms / 1000;
		ts.tv_nsec = (wait_ms % 1000) * 1000000;
		nanosleep(&ts, NULL);
		if (wait_ms < 2000)
			wait_ms *= 2;
	}
	free(what);
	return (0);
}

/*
 * Looks an image up in the store.  Unpinned sources (a path, a channel
 * name) may change under us, so their images count only when built by
 * this process; pinned ones count forever.
 */
static int
build_lookup(const char *key, struct nix_build_result *res)
{
	struct store_image	 si;
	uint64_t		 size;

	if (store_image_get(build_store, key, &si) == -1)
		return (-1);
	if (!build_source_pinned() && si.si_created < build_boot)
		return (-1);
	/* A manifest removed behind our back means building again. */
	if (store_blob_stat(build_store, si.si_docker, &size, NULL) == -1 ||
	    store_blob_stat(build_store, si.si_oci, &size, NULL) == -1)
		return (-1);
	memset(res, 0, sizeof *res);
	res->br_status = NIX_OK;
	memcpy(res->br_docker, si.si_docker, NM_DIGEST_SIZE);
	memcpy(res->br_oci, si.si_oci, NM_DIGEST_SIZE);
	return (0);
}

/* The commit a tag stands for, if known recently enough: 0, or -1. */
static int
build_known_commit(const char *tag, char commit[41])
{
	if (nm_conf->cf_source != NM_SOURCE_REPO)
		return (-1);
	if (strlen(tag) == 40 && strspn(tag, "0123456789abcdef") == 40) {
		memcpy(commit, tag, 41);
		return (0);
	}
	/* A TTL of 0 reuses nothing, not even a resolution of this second. */
	if (nm_conf->cf_tag_ttl <= 0)
		return (-1);
	return (store_tag_get(build_store, nm_conf->cf_pkgs_repo, tag,
	    nm_conf->cf_tag_ttl, commit));
}

/* Copies a request. */
static void
build_request_copy(struct nix_request *dst, const struct nix_request *src)
{
	size_t	 i;

	dst->nr_npkgs = src->nr_npkgs;
	dst->nr_pkgs = xcalloc(src->nr_npkgs, sizeof *dst->nr_pkgs);
	for (i = 0; i < src->nr_npkgs; i++)
		dst->nr_pkgs[i] = xstrdup(src->nr_pkgs[i]);
	dst->nr_shell = src->nr_shell;
	dst->nr_system = src->nr_system;
	dst->nr_peer = src->nr_peer;
}

/*
 * Hands a result found in the store to cb from a later loop iteration, so
 * that the caller always gets its handle before the callback runs.
 */
static struct nix_waiter *
build_found(const struct nix_build_result *res, nix_build_cb cb, void *arg)
{
	struct nix_waiter	*nw;

	nw = xcalloc(1, sizeof *nw);
	nw->nw_cb = cb;
	nw->nw_arg = arg;
	nw->nw_result = *res;
	if ((nw->nw_ev = event_new(build_base, -1, 0, build_found_cb,
	    nw)) == NULL)
		fatalx("%s: event_new", __func__);
	event_active(nw->nw_ev, EV_READ, 0);
	return (nw);
}

/* Delivers a result found in the store and frees its waiter. */
static void
build_found_cb(evutil_socket_t fd, short events, void *arg)
{
	struct nix_waiter	*nw = arg;

	(void)fd;
	(void)events;
	nw->nw_cb(&nw->nw_result, nw->nw_arg);
	event_free(nw->nw_ev);
	free(nw->nw_result.br_cause);
	free(nw);
}

/* Fails a queued build at shutdown; its waiters hear from the loop. */
static void
build_refuse(struct nix_build *nb)
{
	nb->nb_result.br_status = NIX_EFAIL;
	free(nb->nb_result.br_cause);
	nb->nb_result.br_cause = xstrdup("the server is shutting down");
	event_active(nb->nb_done, EV_READ, 0);
}

/* Whether the queue is full: a new build would wait behind too many. */
static int
build_queue_full(int *waiting)
{
	struct policy_limits	 pl;
	struct nix_build	*nb;
	int			 n = 0;

	policy_limits_get(&pl);
	TAILQ_FOREACH(nb, &build_list, nb_entry)
		if (nb->nb_state == BUILD_QUEUED)
			n++;
	*waiting = n;
	return (n >= BUILD_QUEUE_FACTOR * pl.pl_max_concurrent_builds);
}

/* Refuses a build because the queue is full: cb hears from the loop. */
static struct nix_waiter *
build_busy(int waiting, nix_build_cb cb, void *arg)
{
	struct nix_build_result	 res;

	memset(&res, 0, sizeof res);
	res.br_status = NIX_EBUSY;
	xasprintf(&res.br_cause, "%d image builds are already waiting; try "
	    "again later", waiting);
	log_warnx("build queue full: %d waiting", waiting);
	return (build_found(&res, cb, arg));
}

/* Finds or starts the build for a request; see nix.h. */
struct nix_waiter *
nix_build_get(const struct nix_request *req, const char *tag,
    nix_build_cb cb, void *arg)
{
	struct nix_build_result	 res;
	struct nix_build	*nb;
	struct nix_waiter	*nw;
	char			 commit[41], *key, *rk;
	int			 waiting;

	if (build_known_commit(tag, commit) == 0 ||
	    nm_conf->cf_source != NM_SOURCE_REPO) {
		key = build_image_key(req, commit);
		if (build_lookup(key, &res) == 0) {
			free(key);
			return (build_found(&res, cb, arg));
		}
		free(key);
	}

	/* Only a git source gives the tag a meaning. */
	if (nm_conf->cf_source != NM_SOURCE_REPO)
		tag = "";
	rk = nix_request_key(req);
	xasprintf(&key, "%s|%s", tag, rk);
	free(rk);
	TAILQ_FOREACH(nb, &build_list, nb_entry) {
		if (nb->nb_state != BUILD_DONE && strcmp(nb->nb_key, key) == 0)
			break;
	}
	if (nb == NULL && !build_stopping && build_queue_full(&waiting)) {
		free(key);
		return (build_busy(waiting, cb, arg));
	}
	if (nb == NULL) {
		nb = xcalloc(1, sizeof *nb);
		nb->nb_key = key;
		nb->nb_tag = xstrdup(tag);
		build_request_copy(&nb->nb_req, req);
		nb->nb_state = BUILD_QUEUED;
		TAILQ_INIT(&nb->nb_waiters);
		if ((nb->nb_done = event_new(build_base, -1, 0, build_done_cb,
		    nb)) == NULL)
			fatalx("%s: event_new", __func__);
		TAILQ_INSERT_TAIL(&build_list, nb, nb_entry);
		build_status_start(nb);
		log_debug("%s: queued %s", __func__, key);
		if (build_stopping)
			build_refuse(nb);
		else
			build_start_queued();
	} else {
		/* A replica's request is never passed on. */
		if (req->nr_peer && nb->nb_state == BUILD_QUEUED)
			nb->nb_req.nr_peer = 1;
		free(key);
	}

	nw = xcalloc(1, sizeof *nw);
	nw->nw_build = nb;
	nw->nw_cb = cb;
	nw->nw_arg = arg;
	TAILQ_INSERT_TAIL(&nb->nb_waiters, nw, nw_entry);
	return (nw);
}

/* Forgets a waiter whose client went away; the build goes on. */
void
nix_build_cancel(struct nix_waiter *nw)
{
	if (nw == NULL)
		return;
	if (nw->nw_build == NULL) {
		/* A found result not yet delivered. */
		event_free(nw->nw_ev);
		free(nw->nw_result.br_cause);
		free(nw);
		return;
	}
	TAILQ_REMOVE(&nw->nw_build->nb_waiters, nw, nw_entry);
	free(nw);
}

/* Starts queued builds while there is room under the policy's limits. */
static void
build_start_queued(void)
{
	struct policy_limits	 pl;
	struct nix_build	*nb;

	policy_limits_get(&pl);
	TAILQ_FOREACH(nb, &build_list, nb_entry) {
		if (build_stopping)
			return;
		if (nb->nb_state != BUILD_QUEUED)
			continue;
		if (*build_slots(nb) >= pl.pl_max_concurrent_builds)
			continue;
		nb->nb_state = BUILD_RUNNING;
		nb->nb_timeout = pl.pl_build_timeout;
		(*build_slots(nb))++;
		if (work_submit_long(build_job, build_job_done, nb) == -1) {
			/* An error for this build's clients, not a fatal. */
			nb->nb_result.br_status = NIX_EFAIL;
			nb->nb_result.br_cause =
			    xstrdup("cannot start the build (no worker)");
			event_active(nb->nb_done, EV_READ, 0);
		}
	}
}

/* The pool ran the build: finish it on the loop. */
static void
build_job_done(void *arg)
{
	build_done_cb(-1, 0, arg);
}

/* Back in the loop: hands the result to every waiter and frees the build. */
static void
build_done_cb(evutil_socket_t fd, short events, void *arg)
{
	struct nix_build	*nb = arg;
	struct nix_waiter	*nw;

	(void)fd;
	(void)events;
	/* A build refused at shutdown never ran (nr_peer is fixed once run). */
	if (nb->nb_state != BUILD_QUEUED)
		(*build_slots(nb))--;
	/* One that ended before it built (refused, no worker) leaves too. */
	status_build_end(nb->nb_sid, nb->nb_result.br_status == NIX_OK,
	    nb->nb_result.br_cause);
	nb->nb_state = BUILD_DONE;
	TAILQ_REMOVE(&build_list, nb, nb_entry);
	while ((nw = TAILQ_FIRST(&nb->nb_waiters)) != NULL) {
		TAILQ_REMOVE(&nb->nb_waiters, nw, nw_entry);
		nw->nw_cb(&nb->nb_result, nw->nw_arg);
		free(nw);
	}
	event_free(nb->nb_done);
	free(nb->nb_key);
	free(nb->nb_tag);
	free(nb->nb_result.br_cause);
	nix_request_clear(&nb->nb_req);
	free(nb);
	build_start_queued();
}

/* A layer from the shared bucket into the store; 0, or -1 when not there. */
static int
build_remote_layer(const char *key)
{
	char	*cause = NULL;
	int	 rc;

	if (!store_remote_on(build_store))
		return (-1);
	if ((rc = store_remote_layer(build_store, key, &cause)) == -1) {
		log_warnx("layer %s: the shared bucket: %s", key, cause);
		free(cause);
	}
	return (rc == 0 ? 0 : -1);
}

/* The layer cache key of a group of store paths. */
static void
build_layer_key(char *const *paths, size_t n, int custom,
    char key[NM_DIGEST_SIZE])
{
	struct nm_sha256	*sh;
	size_t			 i;

	sh = nm_sha256_new();
	if (custom)
		nm_sha256_update(sh, "custom\n", 7);
	for (i = 0; i < n; i++) {
		nm_sha256_update(sh, paths[i], strlen(paths[i]));
		nm_sha256_update(sh, "\n", 1);
	}
	nm_sha256_final(sh, key);
}

/* Finds a layer in the cache or writes and stores it. */
static int
build_layer(char *const *paths, size_t n, int custom,
    struct nix_image_layer *il, int *fresh, char **cause)
{
	struct store_layer	 sl;
	struct store_writer	*w;
	struct nix_tarinfo	 ti;
	char			 key[NM_DIGEST_SIZE];
	uint64_t		 size;
	int			 rc;

	build_layer_key(paths, n, custom, key);
	/*
	 * A cached layer counts only while its blob is still there; one
	 * another replica built comes from the shared bucket.
	 */
	if ((store_layer_get(build_store, key, &sl) == 0 &&
	    store_blob_stat(build_store, sl.sl_digest, &size, NULL) == 0) ||
	    (build_remote_layer(key) == 0 &&
	    store_layer_get(build_store, key, &sl) == 0)) {
		/* In use again: keep the quota's collector off it. */
		store_blob_touch(build_store, sl.sl_digest);
		memcpy(il->il_digest, sl.sl_digest, NM_DIGEST_SIZE);
		memcpy(il->il_diffid, sl.sl_diffid, NM_DIGEST_SIZE);
		il->il_size = sl.sl_size;
		*fresh = 0;
		return (0);
	}
	if ((w = store_writer_new(build_store, cause)) == NULL)
		return (-1);
	if (custom)
		rc = nix_tar_custom(paths, n, store_writer_fd(w), &ti, cause);
	else
		rc = nix_tar_paths(paths, n, store_writer_fd(w), &ti, cause);
	if (rc == -1) {
		store_writer_abort(w);
		return (-1);
	}
	if (store_writer_commit(w, ti.ti_digest, BUILD_MT_OCI_LAYER,
	    il->il_digest, cause) == -1)
		return (-1);
	memcpy(il->il_diffid, ti.ti_diffid, NM_DIGEST_SIZE);
	il->il_size = ti.ti_size;
	memcpy(sl.sl_digest, il->il_digest, NM_DIGEST_SIZE);
	memcpy(sl.sl_diffid, il->il_diffid, NM_DIGEST_SIZE);
	sl.sl_size = il->il_size;
	if (store_layer_put(build_store, key, &sl) == -1) {
		xasprintf(cause, "cannot record layer %s", il->il_digest);
		return (-1);
	}
	*fresh = 1;
	return (0);
}

/* Writes (or finds) every layer of a closure: store paths, then custom. */
/* Frees the layers of an image and their annotations. */
static void
build_layers_free(struct nix_image_layer *il, size_t n)
{
	size_t	 i;

	if (il == NULL)
		return;
	for (i = 0; i < n; i++)
		free(il[i].il_paths);
	free(il);
}

/*
 * The labels of an image: where its package set comes from (a URL, never
 * with its userinfo; no server path), the revision, and the packages.
 */
static json_t *
build_labels(const struct nix_request *req, const char *revision)
{
	json_t		*labels = json_object();
	const char	*loc = NULL, *at, *sl;
	char		*src = NULL, *pkgs;
	size_t		 i;

	if (nm_conf->cf_source == NM_SOURCE_REPO &&
	    strstr(nm_conf->cf_pkgs_repo, "://") != NULL) {
		loc = nm_conf->cf_pkgs_repo;
		sl = strstr(loc, "://") + 3;
		/* The last '@' of the authority ends the userinfo. */
		for (at = NULL, i = 0; sl[i] != '\0' && sl[i] != '/'; i++)
			if (sl[i] == '@')
				at = sl + i;
		if (at != NULL)
			xasprintf(&src, "%.*s%s", (int)(sl - loc), loc, at + 1);
		else
			src = xstrdup(loc);
	} else if (nm_conf->cf_source == NM_SOURCE_CHANNEL) {
		if (build_source_pinned())
			src = xstrdup("https://github.com/NixOS/nixpkgs");
		else
			xasprintf(&src, "https://nixos.org/channels/%s",
			    nm_conf->cf_channel);
	}
	if (src != NULL)
		json_object_set_new(labels, "org.opencontainers.image.source",
		    json_string(src));
	if (revision != NULL)
		json_object_set_new(labels, "org.opencontainers.image.revision",
		    json_string(revision));
	pkgs = xstrvjoin(req->nr_pkgs, req->nr_npkgs, " ");
	json_object_set_new(labels, "dev.nixmirror.packages",
	    json_string(pkgs));
	json_object_set_new(labels, "dev.nixmirror.layering",
	    json_string(nm_conf->cf_layering == 1 ? "1" : "2"));
	free(pkgs);
	free(src);
	return (labels);
}

static struct nix_image_layer *
build_layers(int sid, const struct nix_closure *nc,
    const struct nix_layering *ly, size_t *nlayers, size_t *nfresh,
    char **cause)
{
	struct nix_image_layer	*il;
	const struct nix_layer	*l;
	char			**paths;
	size_t			 i, j;
	int			 fresh;

	il = xcalloc(ly->nl_nlayers + 1, sizeof *il);
	*nfresh = 0;
	for (i = 0; i < ly->nl_nlayers; i++) {
		status_build_phase(sid, "compressing layer %zu of %zu", i + 1,
		    ly->nl_nlayers + 1);
		l = &ly->nl_layers[i];
		paths = xcalloc(l->nl_npaths, sizeof *paths);
		for (j = 0; j < l->nl_npaths; j++)
			paths[j] = nc->nc_paths[l->nl_paths[j]].np_path;
		if (build_layer(paths, l->nl_npaths, 0, &il[i], &fresh,
		    cause) == -1) {
			free(paths);
			goto fail;
		}
		il[i].il_paths = xstrvjoin(paths, l->nl_npaths, " ");
		free(paths);
		*nfresh += fresh;
	}
	status_build_phase(sid, "compressing layer %zu of %zu", i + 1, i + 1);
	if (build_layer(nc->nc_rootpaths, nc->nc_nroots, 1, &il[i], &fresh,
	    cause) == -1)
		goto fail;
	*nfresh += fresh;
	*nlayers = ly->nl_nlayers + 1;
	return (il);
fail:
	build_layers_free(il, ly->nl_nlayers + 1);
	return (NULL);
}

/*
 * Stores the SBOM of an image and, for each manifest form, the artifact
 * manifest that makes it the form's referrer, and records the referrers
 * of each form's digest.
 */
static int
build_sbom(const struct nix_request *req, const struct nix_closure *nc,
    const struct nix_build_result *res, const uint64_t msize[2],
    const char *revision, char **cause)
{
	char		 sdigest[NM_DIGEST_SIZE], adigest[NM_DIGEST_SIZE];
	char		 edigest[NM_DIGEST_SIZE], *sbom, *art, *kind, *list;
	const char	*subject;
	json_t		*desc;
	size_t		 slen;
	int		 oci, rc;

	sbom = nix_sbom_spdx(nc, req, res->br_oci, revision);
	slen = strlen(sbom);
	rc = store_blob_put_mem(build_store, sbom, slen, NIX_MT_SPDX, sdigest,
	    cause);
	free(sbom);
	if (rc == -1 || store_blob_put_mem(build_store, "{}", 2, NIX_MT_EMPTY,
	    edigest, cause) == -1)
		return (-1);
	for (oci = 0; oci <= 1; oci++) {
		subject = oci ? res->br_oci : res->br_docker;
		art = nix_sbom_referrer(sdigest, slen, oci ?
		    BUILD_MT_OCI_MANIFEST : BUILD_MT_DOCKER_MANIFEST, subject,
		    msize[oci]);
		desc = json_pack("[{s:s, s:s, s:I, s:s}]", "mediaType",
		    BUILD_MT_OCI_MANIFEST, "digest", "", "size",
		    (json_int_t)strlen(art), "artifactType", NIX_MT_SPDX);
		rc = store_blob_put_mem(build_store, art, strlen(art),
		    BUILD_MT_OCI_MANIFEST, adigest, cause);
		free(art);
		if (rc == -1 || store_manifest_put(build_store, adigest,
		    BUILD_MT_OCI_MANIFEST) == -1) {
			json_decref(desc);
			if (*cause == NULL)
				xasprintf(cause, "cannot record the SBOM");
			return (-1);
		}
		json_object_set_new(json_array_get(desc, 0), "digest",
		    json_string(adigest));
		list = json_dumps(desc, JSON_COMPACT | JSON_SORT_KEYS);
		json_decref(desc);
		xasprintf(&kind, "%s%s", STORE_LIST_REFERRERS, subject);
		rc = store_list_put(build_store, STORE_NIX_NS, "", kind, list);
		free(kind);
		free(list);
		if (rc == -1) {
			xasprintf(cause, "cannot record the SBOM's referrer");
			return (-1);
		}
	}
	return (0);
}

/* Stores the config, both manifests and the SBOM of an image. */
static int
build_manifests(const struct nix_image_layer *il, size_t n,
    const struct nix_request *req, const struct nix_closure *nc,
    const char *revision, struct nix_build_result *res, char **cause)
{
	char		 cdigest[NM_DIGEST_SIZE], *config, *m;
	json_t		*labels;
	size_t		 clen;
	uint64_t	 msize[2];
	int		 oci, rc;

	labels = build_labels(req, revision);
	config = nix_image_config(il, n, req->nr_system, nc->nc_cacert,
	    nc->nc_cmd, req->nr_shell, labels);
	json_decref(labels);
	if (config == NULL) {
		xasprintf(cause, "no image config for system %s",
		    req->nr_system != NULL ? req->nr_system : "(none)");
		return (-1);
	}
	clen = strlen(config);
	rc = store_blob_put_mem(build_store, config, clen, BUILD_MT_OCI_CONFIG,
	    cdigest, cause);
	free(config);
	if (rc == -1)
		return (-1);
	for (oci = 0; oci <= 1; oci++) {
		m = nix_image_manifest(il, n, cdigest, clen, oci);
		msize[oci] = strlen(m);
		rc = store_blob_put_mem(build_store, m, strlen(m),
		    oci ? BUILD_MT_OCI_MANIFEST : BUILD_MT_DOCKER_MANIFEST,
		    oci ? res->br_oci : res->br_docker, cause);
		free(m);
		if (rc == -1 || store_manifest_put(build_store,
		    oci ? res->br_oci : res->br_docker, oci ?
		    BUILD_MT_OCI_MANIFEST : BUILD_MT_DOCKER_MANIFEST) == -1) {
			if (*cause == NULL)
				xasprintf(cause, "cannot record manifest");
			return (-1);
		}
	}
	return (build_sbom(req, nc, res, msize, revision, cause));
}

/* Resolves the tag of a build to a commit (git sources only). */
static int
build_resolve(struct nix_build *nb, char commit[41], char **cause)
{
	int	 rc;

	if (nm_conf->cf_source != NM_SOURCE_REPO)
		return (NIX_OK);
	if (build_known_commit(nb->nb_tag, commit) == 0) {
		status_revision(nb->nb_tag, commit);
		return (NIX_OK);
	}
	rc = nix_git_resolve(nm_conf->cf_pkgs_repo, nb->nb_tag,
	    nb->nb_timeout, commit, cause);
	if (rc != NIX_OK)
		return (rc);
	if (store_tag_put(build_store, nm_conf->cf_pkgs_repo, nb->nb_tag,
	    commit) == -1)
		log_warnx("%s: cannot record tag %s", __func__, nb->nb_tag);
	log_info("tag %s of %s is commit %s", nb->nb_tag, nm_conf->cf_pkgs_repo,
	    commit);
	status_revision(nb->nb_tag, commit);
	return (NIX_OK);
}

/* Nix's phases of a build, for the status page. */
static void
build_phase(void *arg, const char *phase)
{
	struct nix_build	*nb = arg;

	status_build_phase(nb->nb_sid, "%s", phase);
}

/* Evaluates, realises, layers and stores one image. */
static int
build_image(struct nix_build *nb, const char *key, const char *commit,
    char **cause, size_t *nl, size_t *nf, uint64_t *bytes)
{
	struct nix_build_result	*res = &nb->nb_result;
	struct nix_source	 src;
	struct nix_closure	 nc;
	struct nix_progress	 np;
	const char		*kind;
	struct nix_layering	 ly;
	struct nix_image_layer	*il;
	struct store_image	 si;
	size_t			 i;
	int			 rc;

	memset(&src, 0, sizeof src);
	src.ns_type = nm_conf->cf_source;
	src.ns_loc = policy_config_source(nm_conf, &kind);
	if (nm_conf->cf_source == NM_SOURCE_REPO)
		src.ns_rev = commit;

	memset(&nc, 0, sizeof nc);
	/* A long build shows its phases in the log as it goes. */
	log_info("building %s: evaluating and realising %zu packages", key,
	    nb->nb_req.nr_npkgs);
	np.np_fn = build_phase;
	np.np_arg = nb;
	rc = nix_closure_build(&src, &nb->nb_req, nb->nb_timeout, &np, &nc,
	    cause);
	if (rc != NIX_OK)
		return (rc);
	for (*bytes = 0, i = 0; i < nc.nc_npaths; i++)
		*bytes += nc.nc_paths[i].np_narsize;
	log_info("building %s: closure of %zu store paths (%llu bytes); layering",
	    key, nc.nc_npaths, (unsigned long long)*bytes);
	status_build_phase(nb->nb_sid, "layering %zu store paths (%llu bytes)",
	    nc.nc_npaths, (unsigned long long)*bytes);
	/* Version 1 stays for sites whose nodes hold its layers. */
	if (nm_conf->cf_layering == 1)
		nix_layer_group(&nc, build_pop, (size_t)nm_conf->cf_max_layers,
		    &ly);
	else
		nix_layer_group_stable(&nc, build_pop,
		    (size_t)nm_conf->cf_max_layers, &ly);
	log_info("building %s: writing %zu layers", key, ly.nl_nlayers + 1);
	il = build_layers(nb->nb_sid, &nc, &ly, nl, nf, cause);
	rc = NIX_EFAIL;
	if (il != NULL && build_manifests(il, *nl, &nb->nb_req, &nc,
	    build_source_pinned() ? (nm_conf->cf_source == NM_SOURCE_REPO ?
	    commit : nm_conf->cf_channel) : NULL, res, cause) == 0) {
		memcpy(si.si_docker, res->br_docker, NM_DIGEST_SIZE);
		memcpy(si.si_oci, res->br_oci, NM_DIGEST_SIZE);
		si.si_created = time(NULL);
		if (store_image_put(build_store, key, &si) == 0)
			rc = NIX_OK;
		else
			xasprintf(cause, "cannot record image");
		for (*bytes = 0, i = 0; i < *nl; i++)
			*bytes += il[i].il_size;
	}
	build_layers_free(il, *nl);
	nix_layering_clear(&ly);
	nix_closure_clear(&nc);
	return (rc);
}

/*
 * Shows a build on the status page, waiting for a build slot: its image
 * name as a client asks.
 */
static void
build_status_start(struct nix_build *nb)
{
	const struct nix_request *req = &nb->nb_req;
	char	*pkgs, *name, *image;

	pkgs = xstrvjoin(req->nr_pkgs, req->nr_npkgs, " ");
	name = nix_request_name(req);
	xasprintf(&image, "%s/%s%s%s", nm_conf->cf_nix_prefix, name,
	    nb->nb_tag[0] != '\0' ? ":" : "", nb->nb_tag);
	nb->nb_sid = status_build_start(image, pkgs);
	free(image);
	free(name);
	free(pkgs);
}

/*
 * Takes an image key for a job: 1 when it holds it now (*bcp, for
 * build_unclaim); 0 when another job held it and ended, with that job's
 * outcome in *status and *cause (NIX_OK: the image is in the store), or
 * the queue stopped meanwhile.
 */
static int
build_claim(const char *key, struct build_claim **bcp, int *status,
    char **cause)
{
	struct build_claim	*bc;

	*cause = NULL;
	pthread_mutex_lock(&build_claim_mtx);
	TAILQ_FOREACH(bc, &build_claims, bc_entry)
		if (strcmp(bc->bc_key, key) == 0)
			break;
	if (bc == NULL) {
		bc = xcalloc(1, sizeof *bc);
		bc->bc_key = xstrdup(key);
		bc->bc_refs = 1;
		TAILQ_INSERT_TAIL(&build_claims, bc, bc_entry);
		pthread_mutex_unlock(&build_claim_mtx);
		*bcp = bc;
		return (1);
	}
	bc->bc_refs++;
	while (!bc->bc_done && !build_stopped())
		pthread_cond_wait(&build_claim_cond, &build_claim_mtx);
	if (!bc->bc_done) {
		*status = NIX_EFAIL;
		*cause = xstrdup("the server is shutting down");
	} else {
		*status = bc->bc_status;
		if (bc->bc_cause != NULL)
			*cause = xstrdup(bc->bc_cause);
	}
	if (--bc->bc_refs == 0) {
		if (!bc->bc_done)
			TAILQ_REMOVE(&build_claims, bc, bc_entry);
		free(bc->bc_cause);
		free(bc->bc_key);
		free(bc);
	}
	pthread_mutex_unlock(&build_claim_mtx);
	return (0);
}

/* Gives an image key back with the outcome, waking its waiters. */
static void
build_unclaim(struct build_claim *bc, const struct nix_build_result *res)
{
	pthread_mutex_lock(&build_claim_mtx);
	TAILQ_REMOVE(&build_claims, bc, bc_entry);
	bc->bc_done = 1;
	bc->bc_status = res->br_status;
	if (res->br_cause != NULL)
		bc->bc_cause = xstrdup(res->br_cause);
	if (--bc->bc_refs == 0) {
		free(bc->bc_cause);
		free(bc->bc_key);
		free(bc);
	}
	pthread_cond_broadcast(&build_claim_cond);
	pthread_mutex_unlock(&build_claim_mtx);
}

/* The pool job: resolves, looks up or builds; the loop hears after. */
static void
build_job(void *arg)
{
	struct nix_build	*nb = arg;
	struct nix_build_result	*res = &nb->nb_result;
	struct build_claim	*bc;
	struct timeval		 t0, t1;
	char			 commit[41] = "", *key = NULL, *rk;
	size_t			 nl = 0, nf = 0;
	uint64_t		 bytes = 0;
	int			 rc;

	gettimeofday(&t0, NULL);
	status_build_running(nb->nb_sid, nm_conf->cf_source == NM_SOURCE_REPO ?
	    "resolving the tag" : "starting");
	res->br_status = build_resolve(nb, commit, &res->br_cause);
	if (res->br_status != NIX_OK) {
		metrics_build(res->br_status, -1);
		status_build_end(nb->nb_sid, 0, res->br_cause);
		goto done;
	}
	key = build_image_key(&nb->nb_req, commit);
	/*
	 * Built at this commit before, or by another replica: before, or
	 * now by the one that owns the key (asked unless the bucket failed).
	 * Its answer may be the build's, an unknown package say.
	 */
	if (build_lookup(key, res) == 0)
		goto found;
	if ((rc = build_remote_image(key)) == 1)
		rc = build_owner_image(nb, key, commit, res);
	if (rc == 0 && build_lookup(key, res) == 0)
		goto found;
	if (rc == 1) {
		metrics_build(res->br_status, -1);
		status_build_end(nb->nb_sid, 0, res->br_cause);
		goto done;
	}
	/* Another job may be building the same image: its outcome counts. */
	while (build_claim(key, &bc, &res->br_status, &res->br_cause) == 0) {
		if (res->br_status != NIX_OK) {
			metrics_build(res->br_status, -1);
			status_build_end(nb->nb_sid, 0, res->br_cause);
			goto done;
		}
		free(res->br_cause);
		res->br_cause = NULL;
		if (build_lookup(key, res) == 0)
			goto found;
	}
	if (build_lookup(key, res) == 0) {
		build_unclaim(bc, res);
		goto found;
	}
	metrics_build_running(1);
	res->br_status = build_image(nb, key, commit, &res->br_cause, &nl, &nf,
	    &bytes);
	build_unclaim(bc, res);
	gettimeofday(&t1, NULL);
	metrics_build_running(-1);
	status_build_end(nb->nb_sid, res->br_status == NIX_OK,
	    res->br_status == NIX_OK ? res->br_oci : res->br_cause);
	metrics_build(res->br_status, (double)(t1.tv_sec - t0.tv_sec) +
	    (double)(t1.tv_usec - t0.tv_usec) / 1e6);
	rk = nix_request_key(&nb->nb_req);
	if (res->br_status == NIX_OK)
		log_info("build %s%s%s: %.2fs, %zu packages, %zu layers (%zu new), "
		    "%llu bytes, manifest %s", rk, commit[0] ? " at " : "", commit,
		    (double)(t1.tv_sec - t0.tv_sec) +
		    (double)(t1.tv_usec - t0.tv_usec) / 1e6, nb->nb_req.nr_npkgs,
		    nl, nf, (unsigned long long)bytes, res->br_docker);
	else
		log_warnx("build %s%s%s failed: %.2fs: %s", rk,
		    commit[0] ? " at " : "", commit,
		    (double)(t1.tv_sec - t0.tv_sec) +
		    (double)(t1.tv_usec - t0.tv_usec) / 1e6,
		    res->br_cause != NULL ? res->br_cause : "unknown error");
	free(rk);
	goto done;
found:
	status_build_forget(nb->nb_sid);
done:
	if (res->br_status != NIX_OK && res->br_cause == NULL)
		res->br_cause = xstrdup("build failed");
	free(key);
}

/*
 * Stops the queue: kills Nix children and refuses queued builds.  The
 * running ones end soon after; work_drain waits for them and finishes
 * them before the event base goes.
 */
void
nix_build_shutdown(void)
{
	struct nix_build	*nb;

	__atomic_store_n(&build_stopping, 1, __ATOMIC_RELAXED);
	nix_run_killall();
	/* Jobs waiting for another's image stop waiting. */
	pthread_mutex_lock(&build_claim_mtx);
	pthread_cond_broadcast(&build_claim_cond);
	pthread_mutex_unlock(&build_claim_mtx);
	TAILQ_FOREACH(nb, &build_list, nb_entry)
		if (nb->nb_state == BUILD_QUEUED)
			build_refuse(nb);
}
