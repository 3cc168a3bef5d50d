/*
 * metrics.c: the counters behind /metrics, in the Prometheus text format.
 *
 * Requests and upstream traffic are counted on the event loop; builds run
 * in pool threads and are counted under a mutex.  Each family is a small
 * table with a slot per label set, searched linearly: the label sets are
 * few (routes by status, configured upstreams, build results).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nixmirror.h"

#define MT_MAX_REQ	256	/* route and status pairs */
#define MT_MAX_UP	64	/* upstreams */

struct mt_req {
	char		 mr_route[16];
	int		 mr_status;
	uint64_t	 mr_count;
	uint64_t	 mr_bytes;
};

struct mt_up {
	char		 mu_ns[256];
	uint64_t	 mu_ok;
	uint64_t	 mu_failed;
	uint64_t	 mu_bytes;
	int64_t		 mu_ratelimit;	/* last ratelimit-remaining, or -1 */
};

/* Cache outcomes by type (blob, manifest) and namespace. */
struct mt_cache {
	char		 mc_type[16];
	char		 mc_ns[256];
	uint64_t	 mc_n[3];	/* hit, miss, coalesced */
};
#define MT_MAX_CACHE	128

/* The upper bounds of the build duration histogram, in seconds. */
static const double mt_buckets[] = { 1, 5, 15, 60, 300, 900, 3600 };
#define MT_NBUCKETS	(sizeof mt_buckets / sizeof mt_buckets[0])
static const char *const mt_results[] = {
	"ok", "not_found", "failed", "timed_out", "busy",
};
#define MT_NRESULTS	(sizeof mt_results / sizeof mt_results[0])

static struct mt_req	 mt_req[MT_MAX_REQ];
static size_t		 mt_nreq;
static struct mt_up	 mt_up[MT_MAX_UP];
static size_t		 mt_nup;
static struct mt_cache	 mt_cache[MT_MAX_CACHE];
static size_t		 mt_ncache;
static uint64_t		 mt_evicted_blobs, mt_evicted_bytes;	/* mt_mtx */
static uint64_t		 mt_conns_total;
static int64_t		 mt_conns_open;
/* Connections the guard refused, by status (400..505). */
static const int	 mt_refusals[] = { 400, 403, 405, 408, 414, 429, 431,
			    505 };
#define MT_NREFUSALS	(sizeof mt_refusals / sizeof mt_refusals[0])
static uint64_t		 mt_refused[MT_NREFUSALS];
static time_t		 mt_start;

static pthread_mutex_t	 mt_mtx = PTHREAD_MUTEX_INITIALIZER;
static uint64_t		 mt_builds[MT_NRESULTS];
static uint64_t		 mt_bucket[MT_NBUCKETS + 1];	/* +Inf last */
static double		 mt_build_sum;
static int		 mt_running;

/* Starts the uptime clock. */
void
metrics_init(void)
{
	mt_start = time(NULL);
}

/* One answered request: its route ("manifest", ...), status and bytes. */
void
metrics_request(const char *route, int status, uint64_t bytes)
{
	struct mt_req	*r;
	size_t		 i;

	for (i = 0; i < mt_nreq; i++) {
		r = &mt_req[i];
		if (r->mr_status == status && strcmp(r->mr_route, route) == 0)
			break;
	}
	if (i == mt_nreq) {
		if (mt_nreq == MT_MAX_REQ)
			return;
		r = &mt_req[mt_nreq++];
		snprintf(r->mr_route, sizeof r->mr_route, "%s", route);
		r->mr_status = status;
	}
	mt_req[i].mr_count++;
	mt_req[i].mr_bytes += bytes;
}

static struct mt_up *
metrics_up(const char *ns)
{
	size_t	 i;

	for (i = 0; i < mt_nup; i++)
		if (strcmp(mt_up[i].mu_ns, ns) == 0)
			return (&mt_up[i]);
	if (mt_nup == MT_MAX_UP)
		return (NULL);
	snprintf(mt_up[mt_nup].mu_ns, sizeof mt_up[mt_nup].mu_ns, "%s", ns);
	mt_up[mt_nup].mu_ratelimit = -1;
	return (&mt_up[mt_nup++]);
}

/* The ratelimit-remaining an upstream last sent. */
void
metrics_upstream_ratelimit(const char *ns, int64_t remaining)
{
	struct mt_up	*u;

	if ((u = metrics_up(ns)) != NULL)
		u->mu_ratelimit = remaining;
}

/* The ratelimit-remaining an upstream last sent, or -1. */
int64_t
metrics_ratelimit(const char *ns)
{
	size_t	 i;

	for (i = 0; i < mt_nup; i++)
		if (strcmp(mt_up[i].mu_ns, ns) == 0)
			return (mt_up[i].mu_ratelimit);
	return (-1);
}

/* The cache outcomes of every type and namespace, summed. */
void
metrics_hits(struct metrics_hits *mh)
{
	size_t	 i;

	memset(mh, 0, sizeof *mh);
	for (i = 0; i < mt_ncache; i++) {
		mh->mh_hits += mt_cache[i].mc_n[METRICS_HIT];
		mh->mh_misses += mt_cache[i].mc_n[METRICS_MISS];
		mh->mh_coalesced += mt_cache[i].mc_n[METRICS_COALESCED];
	}
}

/* A cache outcome (METRICS_HIT, _MISS, _COALESCED) of a type and ns. */
void
metrics_cache(const char *type, const char *ns, int outcome)
{
	struct mt_cache	*c;
	size_t		 i;

	if (outcome < 0 || outcome > 2)
		return;
	for (i = 0; i < mt_ncache; i++) {
		c = &mt_cache[i];
		if (strcmp(c->mc_type, type) == 0 && strcmp(c->mc_ns, ns) == 0)
			break;
	}
	if (i == mt_ncache) {
		if (mt_ncache == MT_MAX_CACHE)
			return;
		c = &mt_cache[mt_ncache++];
		snprintf(c->mc_type, sizeof c->mc_type, "%s", type);
		snprintf(c->mc_ns, sizeof c->mc_ns, "%s", ns);
	}
	mt_cache[i].mc_n[outcome]++;
}

/* A client connection opened (1) or closed (-1). */
void
metrics_connection(int delta)
{
	mt_conns_open += delta;
	if (delta > 0)
		mt_conns_total++;
}

/* A connection the guard refused with a status. */
void
metrics_refused(int status)
{
	size_t	 i;

	for (i = 0; i < MT_NREFUSALS; i++)
		if (mt_refusals[i] == status)
			mt_refused[i]++;
}

/* Blobs the store's quota evicted; any thread. */
void
metrics_evicted(uint64_t blobs, uint64_t bytes)
{
	pthread_mutex_lock(&mt_mtx);
	mt_evicted_blobs += blobs;
	mt_evicted_bytes += bytes;
	pthread_mutex_unlock(&mt_mtx);
}

/* One finished upstream request of a namespace: failed or not. */
void
metrics_upstream(const char *ns, int failed)
{
	struct mt_up	*u;

	if ((u = metrics_up(ns)) == NULL)
		return;
	if (failed)
		u->mu_failed++;
	else
		u->mu_ok++;
}

/* Body bytes an upstream of a namespace sent. */
void
metrics_upstream_bytes(const char *ns, uint64_t bytes)
{
	struct mt_up	*u;

	if ((u = metrics_up(ns)) != NULL)
		u->mu_bytes += bytes;
}

/* A build starts (delta 1) or ends (-1); any thread. */
void
metrics_build_running(int delta)
{
	pthread_mutex_lock(&mt_mtx);
	mt_running += delta;
	pthread_mutex_unlock(&mt_mtx);
}

/*
 * A build ended with a NIX_* result (0 ok .. 4 busy) after seconds; a
 * negative time (it ended before Nix ran) is not in the histogram.
 */
void
metrics_build(int result, double seconds)
{
	size_t	 i;

	pthread_mutex_lock(&mt_mtx);
	if (result >= 0 && (size_t)result < MT_NRESULTS)
		mt_builds[result]++;
	if (seconds >= 0) {
		for (i = 0; i < MT_NBUCKETS && seconds > mt_buckets[i]; i++)
			;
		mt_bucket[i]++;
		mt_build_sum += seconds;
	}
	pthread_mutex_unlock(&mt_mtx);
}

/* A growing text. */
struct mt_text {
	char	*mt_buf;
	size_t	 mt_len;
	size_t	 mt_size;
};

static void
mt_printf(struct mt_text *t, const char *fmt, ...) NM_PRINTF(2, 3);

static void
mt_printf(struct mt_text *t, const char *fmt, ...)
{
	va_list	 ap;
	char	*s;
	int	 n;

	va_start(ap, fmt);
	n = xvasprintf(&s, fmt, ap);
	va_end(ap);
	if (t->mt_len + (size_t)n + 1 > t->mt_size) {
		t->mt_size = (t->mt_len + (size_t)n + 1) * 2;
		t->mt_buf = xreallocarray(t->mt_buf, t->mt_size, 1);
	}
	memcpy(t->mt_buf + t->mt_len, s, (size_t)n + 1);
	t->mt_len += (size_t)n;
	free(s);
}

/* A label value with \, " and newlines escaped. */
static char *
mt_label(const char *v)
{
	char	*out, *p;

	p = out = xmalloc(strlen(v) * 2 + 1);
	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"')
			*p++ = '\\';
		if (*v == '\n') {
			*p++ = '\\';
			*p++ = 'n';
			continue;
		}
		*p++ = *v;
	}
	*p = '\0';
	return (out);
}

/* One family of cache outcomes. */
static void
mt_cache_family(struct mt_text *t, const char *name, const char *help,
    int outcome)
{
	char	*l;
	size_t	 i;

	mt_printf(t, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
	for (i = 0; i < mt_ncache; i++) {
		l = mt_label(mt_cache[i].mc_ns);
		mt_printf(t, "%s{type=\"%s\",ns=\"%s\"} %llu\n", name,
		    mt_cache[i].mc_type, l,
		    (unsigned long long)mt_cache[i].mc_n[outcome]);
		free(l);
	}
}

/* The whole exposition (caller frees), with the store's gauges. */
char *
metrics_text(const struct metrics_store *ms)
{
	struct mt_text	 t = { NULL, 0, 0 };
	uint64_t	 cum = 0, total = 0;
	char		*l;
	size_t		 i;

	mt_printf(&t, "# HELP nixmirror_build_info The running version.\n"
	    "# TYPE nixmirror_build_info gauge\n"
	    "nixmirror_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
	mt_printf(&t, "# HELP nixmirror_uptime_seconds Seconds since the "
	    "server started.\n# TYPE nixmirror_uptime_seconds gauge\n"
	    "nixmirror_uptime_seconds %lld\n",
	    (long long)(time(NULL) - mt_start));

	mt_printf(&t, "# HELP nixmirror_connections_open Client connections "
	    "open now.\n# TYPE nixmirror_connections_open gauge\n"
	    "nixmirror_connections_open %lld\n", (long long)mt_conns_open);
	mt_printf(&t, "# HELP nixmirror_connections_total Client connections "
	    "accepted.\n# TYPE nixmirror_connections_total counter\n"
	    "nixmirror_connections_total %llu\n",
	    (unsigned long long)mt_conns_total);
	mt_printf(&t, "# HELP nixmirror_connections_refused_total Connections "
	    "the guard refused and closed, by status.\n# TYPE "
	    "nixmirror_connections_refused_total counter\n");
	for (i = 0; i < MT_NREFUSALS; i++)
		mt_printf(&t, "nixmirror_connections_refused_total{status="
		    "\"%d\"} %llu\n", mt_refusals[i],
		    (unsigned long long)mt_refused[i]);
	mt_printf(&t, "# HELP nixmirror_http_requests_total Requests answered, "
	    "by route and status.\n# TYPE nixmirror_http_requests_total "
	    "counter\n");
	for (i = 0; i < mt_nreq; i++)
		mt_printf(&t, "nixmirror_http_requests_total{route=\"%s\","
		    "status=\"%d\"} %llu\n", mt_req[i].mr_route,
		    mt_req[i].mr_status,
		    (unsigned long long)mt_req[i].mr_count);
	mt_printf(&t, "# HELP nixmirror_http_response_bytes_total Body bytes "
	    "sent, by route and status.\n# TYPE "
	    "nixmirror_http_response_bytes_total counter\n");
	for (i = 0; i < mt_nreq; i++)
		mt_printf(&t, "nixmirror_http_response_bytes_total{route=\"%s\","
		    "status=\"%d\"} %llu\n", mt_req[i].mr_route,
		    mt_req[i].mr_status,
		    (unsigned long long)mt_req[i].mr_bytes);

	mt_printf(&t, "# HELP nixmirror_upstream_requests_total Upstream "
	    "requests finished, by upstream and result.\n# TYPE "
	    "nixmirror_upstream_requests_total counter\n");
	for (i = 0; i < mt_nup; i++) {
		l = mt_label(mt_up[i].mu_ns);
		mt_printf(&t, "nixmirror_upstream_requests_total{upstream="
		    "\"%s\",result=\"ok\"} %llu\n", l,
		    (unsigned long long)mt_up[i].mu_ok);
		mt_printf(&t, "nixmirror_upstream_requests_total{upstream="
		    "\"%s\",result=\"failed\"} %llu\n", l,
		    (unsigned long long)mt_up[i].mu_failed);
		free(l);
	}
	mt_printf(&t, "# HELP nixmirror_upstream_bytes_total Body bytes "
	    "received from upstreams.\n# TYPE nixmirror_upstream_bytes_total "
	    "counter\n");
	for (i = 0; i < mt_nup; i++) {
		l = mt_label(mt_up[i].mu_ns);
		mt_printf(&t, "nixmirror_upstream_bytes_total{upstream=\"%s\"} "
		    "%llu\n", l, (unsigned long long)mt_up[i].mu_bytes);
		free(l);
	}

	mt_printf(&t, "# HELP nixmirror_upstream_ratelimit_remaining The "
	    "ratelimit-remaining an upstream last sent.\n# TYPE "
	    "nixmirror_upstream_ratelimit_remaining gauge\n");
	for (i = 0; i < mt_nup; i++) {
		if (mt_up[i].mu_ratelimit < 0)
			continue;
		l = mt_label(mt_up[i].mu_ns);
		mt_printf(&t, "nixmirror_upstream_ratelimit_remaining{upstream="
		    "\"%s\"} %lld\n", l, (long long)mt_up[i].mu_ratelimit);
		free(l);
	}
	mt_cache_family(&t, "nixmirror_cache_hits_total", "Blobs and "
	    "manifests served from the store, by type and namespace.", 0);
	mt_cache_family(&t, "nixmirror_cache_misses_total", "Blobs and "
	    "manifests fetched from an upstream for a client.", 1);
	mt_cache_family(&t, "nixmirror_coalesced_waiters_total", "Clients "
	    "that joined a download already in flight.", 2);

	pthread_mutex_lock(&mt_mtx);
	mt_printf(&t, "# HELP nixmirror_store_evicted_blobs_total Blobs the "
	    "store quota evicted.\n# TYPE nixmirror_store_evicted_blobs_total "
	    "counter\nnixmirror_store_evicted_blobs_total %llu\n",
	    (unsigned long long)mt_evicted_blobs);
	mt_printf(&t, "# HELP nixmirror_store_evicted_bytes_total Bytes the "
	    "store quota evicted.\n# TYPE nixmirror_store_evicted_bytes_total "
	    "counter\nnixmirror_store_evicted_bytes_total %llu\n",
	    (unsigned long long)mt_evicted_bytes);
	mt_printf(&t, "# HELP nixmirror_builds_total Nix image builds, by "
	    "result.\n# TYPE nixmirror_builds_total counter\n");
	for (i = 0; i < MT_NRESULTS; i++)
		mt_printf(&t, "nixmirror_builds_total{result=\"%s\"} %llu\n",
		    mt_results[i], (unsigned long long)mt_builds[i]);
	mt_printf(&t, "# HELP nixmirror_builds_in_progress Nix image builds "
	    "running now.\n# TYPE nixmirror_builds_in_progress gauge\n"
	    "nixmirror_builds_in_progress %d\n", mt_running);
	mt_printf(&t, "# HELP nixmirror_build_duration_seconds How long Nix "
	    "image builds took.\n# TYPE nixmirror_build_duration_seconds "
	    "histogram\n");
	for (i = 0; i <= MT_NBUCKETS; i++) {
		cum += mt_bucket[i];
		if (i < MT_NBUCKETS)
			mt_printf(&t, "nixmirror_build_duration_seconds_bucket"
			    "{le=\"%g\"} %llu\n", mt_buckets[i],
			    (unsigned long long)cum);
		else
			mt_printf(&t, "nixmirror_build_duration_seconds_bucket"
			    "{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
	}
	total = cum;
	mt_printf(&t, "nixmirror_build_duration_seconds_sum %.3f\n"
	    "nixmirror_build_duration_seconds_count %llu\n", mt_build_sum,
	    (unsigned long long)total);
	pthread_mutex_unlock(&mt_mtx);

	mt_printf(&t, "# HELP nixmirror_store_bytes Bytes of the blobs in the "
	    "store.\n# TYPE nixmirror_store_bytes gauge\n"
	    "nixmirror_store_bytes %llu\n", (unsigned long long)ms->ms_bytes);
	mt_printf(&t, "# HELP nixmirror_store_blobs Blobs in the store.\n"
	    "# TYPE nixmirror_store_blobs gauge\nnixmirror_store_blobs %llu\n",
	    (unsigned long long)ms->ms_blobs);
	mt_printf(&t, "# HELP nixmirror_store_quota_bytes The store quota "
	    "(0: none).\n# TYPE nixmirror_store_quota_bytes gauge\n"
	    "nixmirror_store_quota_bytes %lld\n", (long long)ms->ms_quota);
	if (ms->ms_s3_pending >= 0)
		mt_printf(&t, "# HELP nixmirror_s3_pending Blobs and records "
		    "not yet in the shared bucket.\n# TYPE nixmirror_s3_pending "
		    "gauge\nnixmirror_s3_pending %lld\n",
		    (long long)ms->ms_s3_pending);
	return (t.mt_buf);
}
