/*
 * status.c: what the status page shows: the upstreams' last success and
 * error, the builds in progress with their phase, the last builds and the
 * last errors.  Builds run in pool threads and errors are logged from any
 * thread, so everything here is under one mutex.  The page itself is made
 * on the loop, as JSON (/status.json) or as HTML from that same JSON (/).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "nixmirror.h"
#include "policy/policy.h"

#define ST_NRECENT	50	/* finished builds and errors kept */
#define ST_MAX_UP	64

struct st_running {
	int		 sr_id;
	char		*sr_image;
	char		*sr_pkgs;
	char		*sr_phase;
	struct timespec	 sr_start;	/* queued, then started */
	int		 sr_started;	/* out of the queue */
	struct st_running *sr_next;
};

struct st_done {
	time_t		 sd_end;
	char		*sd_image;
	int		 sd_ok;
	double		 sd_seconds;
	char		*sd_what;	/* the manifest digest, or the error */
};

struct st_error {
	time_t		 se_time;
	char		*se_msg;
};

struct st_up {
	char		 su_ns[256];
	time_t		 su_ok;		/* last success, 0: none */
	time_t		 su_err;	/* last error, 0: none */
	char		*su_msg;
};

static pthread_mutex_t	 st_mtx = PTHREAD_MUTEX_INITIALIZER;
static time_t		 st_start;
static int		 st_nextid = 1;
static struct st_running *st_running;
static struct st_done	 st_done[ST_NRECENT];
static size_t		 st_ndone;	/* all ever; the ring holds the last */
static struct st_error	 st_err[ST_NRECENT];
static size_t		 st_nerr;
static struct st_up	 st_up[ST_MAX_UP];
static size_t		 st_nup;
static char		 st_rev[41], st_revtag[129];

/* Starts the uptime clock. */
void
status_init(void)
{
	st_start = time(NULL);
}

static struct st_up *
status_up(const char *ns)
{
	size_t	 i;

	for (i = 0; i < st_nup; i++)
		if (strcmp(st_up[i].su_ns, ns) == 0)
			return (&st_up[i]);
	if (st_nup == ST_MAX_UP)
		return (NULL);
	snprintf(st_up[st_nup].su_ns, sizeof st_up[st_nup].su_ns, "%s", ns);
	return (&st_up[st_nup++]);
}

/* A finished upstream request: err is NULL when it succeeded. */
void
status_upstream(const char *ns, const char *err)
{
	struct st_up	*u;

	pthread_mutex_lock(&st_mtx);
	if ((u = status_up(ns)) != NULL) {
		if (err == NULL)
			u->su_ok = time(NULL);
		else {
			u->su_err = time(NULL);
			free(u->su_msg);
			/* As in the log: no URL's userinfo. */
			u->su_msg = nm_redact(err, 0);
		}
	}
	pthread_mutex_unlock(&st_mtx);
}

/* The commit a git tag of the package set last resolved to. */
void
status_revision(const char *tag, const char *commit)
{
	pthread_mutex_lock(&st_mtx);
	snprintf(st_revtag, sizeof st_revtag, "%s", tag);
	snprintf(st_rev, sizeof st_rev, "%s", commit);
	pthread_mutex_unlock(&st_mtx);
}

/* A build is queued: its image name and packages; returns its id. */
int
status_build_start(const char *image, const char *pkgs)
{
	struct st_running	*r;
	int			 id;

	r = xcalloc(1, sizeof *r);
	r->sr_image = xstrdup(image);
	r->sr_pkgs = xstrdup(pkgs);
	r->sr_phase = xstrdup("waiting for a build slot");
	clock_gettime(CLOCK_MONOTONIC, &r->sr_start);
	pthread_mutex_lock(&st_mtx);
	id = r->sr_id = st_nextid++;
	r->sr_next = st_running;
	st_running = r;
	pthread_mutex_unlock(&st_mtx);
	return (id);
}

/* The phase a running build is in ("evaluating ...", "compressing ..."). */
void
status_build_phase(int id, const char *fmt, ...)
{
	struct st_running	*r;
	va_list			 ap;
	char			*phase;

	va_start(ap, fmt);
	xvasprintf(&phase, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&st_mtx);
	for (r = st_running; r != NULL; r = r->sr_next)
		if (r->sr_id == id)
			break;
	if (r != NULL) {
		free(r->sr_phase);
		r->sr_phase = phase;
		phase = NULL;
	}
	pthread_mutex_unlock(&st_mtx);
	free(phase);
}

/* A waiting build starts to run: its clock restarts, in a first phase. */
void
status_build_running(int id, const char *phase)
{
	struct st_running	*r;

	pthread_mutex_lock(&st_mtx);
	for (r = st_running; r != NULL; r = r->sr_next)
		if (r->sr_id == id)
			break;
	if (r != NULL) {
		clock_gettime(CLOCK_MONOTONIC, &r->sr_start);
		r->sr_started = 1;
		free(r->sr_phase);
		r->sr_phase = xstrdup(phase);
	}
	pthread_mutex_unlock(&st_mtx);
}

/* Takes a build off the page without a record (nothing was built). */
void
status_build_forget(int id)
{
	struct st_running	*r, **rp;

	pthread_mutex_lock(&st_mtx);
	for (rp = &st_running; (r = *rp) != NULL; rp = &r->sr_next)
		if (r->sr_id == id)
			break;
	if (r != NULL) {
		*rp = r->sr_next;
		free(r->sr_image);
		free(r->sr_pkgs);
		free(r->sr_phase);
		free(r);
	}
	pthread_mutex_unlock(&st_mtx);
}

/*
 * A build ended: ok with its manifest digest, or not with its error.  An
 * id already ended or forgotten is ignored.
 */
void
status_build_end(int id, int ok, const char *what)
{
	struct st_running	*r, **rp;
	struct st_done		*d;
	struct timespec		 now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&st_mtx);
	for (rp = &st_running; (r = *rp) != NULL; rp = &r->sr_next)
		if (r->sr_id == id)
			break;
	if (r != NULL) {
		*rp = r->sr_next;
		d = &st_done[st_ndone++ % ST_NRECENT];
		free(d->sd_image);
		free(d->sd_what);
		d->sd_end = time(NULL);
		d->sd_image = r->sr_image;
		d->sd_ok = ok;
		d->sd_seconds = (double)(now.tv_sec - r->sr_start.tv_sec) +
		    (double)(now.tv_nsec - r->sr_start.tv_nsec) / 1e9;
		d->sd_what = xstrdup(what != NULL ? what : "");
		free(r->sr_pkgs);
		free(r->sr_phase);
		free(r);
	}
	pthread_mutex_unlock(&st_mtx);
}

/* A warning line of the log (log.c calls this; it must not log). */
void
status_error(const char *msg)
{
	struct st_error	*e;

	pthread_mutex_lock(&st_mtx);
	e = &st_err[st_nerr++ % ST_NRECENT];
	free(e->se_msg);
	e->se_time = time(NULL);
	e->se_msg = xstrdup(msg);
	pthread_mutex_unlock(&st_mtx);
}

static json_t *
status_time(time_t t)
{
	char		 ts[32];
	struct tm	 tm;

	if (t == 0)
		return (json_null());
	gmtime_r(&t, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return (json_string(ts));
}

/* A string made safe for JSON: bytes outside printable ASCII escaped. */
static json_t *
status_str(const char *s)
{
	char	*v = xstrvis(s != NULL ? s : "");
	json_t	*j = json_string(v);

	free(v);
	return (j);
}

static json_t *
status_source(void)
{
	const struct nm_config	*cf = nm_conf;
	const char		*loc, *kind;
	json_t			*o;

	loc = policy_config_source(cf, &kind);
	o = json_object();
	json_object_set_new(o, "type", json_string(kind));
	json_object_set_new(o, "location", status_str(loc));
	if (cf->cf_source == NM_SOURCE_CHANNEL)
		json_object_set_new(o, "revision", status_str(cf->cf_channel));
	else if (st_rev[0] != '\0') {
		json_object_set_new(o, "revision", json_string(st_rev));
		json_object_set_new(o, "revision_of", status_str(st_revtag));
	} else
		json_object_set_new(o, "revision", json_null());
	json_object_set_new(o, "needs_network", json_boolean(!cf->cf_offline &&
	    cf->cf_source == NM_SOURCE_CHANNEL));
	return (o);
}

static json_t *
status_upstreams(void)
{
	struct st_up	*u;
	json_t		*a, *o;
	int64_t		 rl;
	size_t		 i;

	a = json_array();
	for (i = 0; i < nm_conf->cf_nupstreams; i++) {
		const struct nm_upstream *up = &nm_conf->cf_upstreams[i];

		o = json_object();
		json_object_set_new(o, "namespace", status_str(up->up_ns));
		json_object_set_new(o, "url", status_str(up->up_url));
		u = status_up(up->up_ns);
		json_object_set_new(o, "last_success",
		    status_time(u != NULL ? u->su_ok : 0));
		if (u != NULL && u->su_err != 0)
			json_object_set_new(o, "last_error", json_pack("{s:o, s:o}",
			    "time", status_time(u->su_err), "message",
			    status_str(u->su_msg)));
		else
			json_object_set_new(o, "last_error", json_null());
		rl = metrics_ratelimit(up->up_ns);
		json_object_set_new(o, "ratelimit_remaining", rl >= 0 ?
		    json_integer(rl) : json_null());
		json_array_append_new(a, o);
	}
	return (a);
}

static json_t *
status_builds(void)
{
	struct st_running	*r;
	struct st_done		*d;
	struct timespec		 now;
	json_t			*o, *run, *done;
	size_t			 i, n;

	clock_gettime(CLOCK_MONOTONIC, &now);
	run = json_array();
	for (r = st_running; r != NULL; r = r->sr_next)
		json_array_append_new(run, json_pack("{s:o, s:o, s:s, s:o, s:f}",
		    "image", status_str(r->sr_image),
		    "packages", status_str(r->sr_pkgs),
		    "state", r->sr_started ? "running" : "waiting",
		    "phase", status_str(r->sr_phase),
		    "elapsed_seconds", (double)(now.tv_sec - r->sr_start.tv_sec) +
		    (double)(now.tv_nsec - r->sr_start.tv_nsec) / 1e9));
	/* Newest first. */
	done = json_array();
	n = st_ndone < ST_NRECENT ? st_ndone : ST_NRECENT;
	for (i = 0; i < n; i++) {
		d = &st_done[(st_ndone - 1 - i) % ST_NRECENT];
		o = json_pack("{s:o, s:o, s:s, s:f}", "finished",
		    status_time(d->sd_end), "image", status_str(d->sd_image),
		    "result", d->sd_ok ? "ok" : "failed", "seconds",
		    d->sd_seconds);
		json_object_set_new(o, d->sd_ok ? "manifest" : "error",
		    status_str(d->sd_what));
		json_array_append_new(done, o);
	}
	return (json_pack("{s:o, s:o}", "in_progress", run, "recent", done));
}

static json_t *
status_errors(void)
{
	struct st_error	*e;
	json_t		*a;
	size_t		 i, n;

	a = json_array();
	n = st_nerr < ST_NRECENT ? st_nerr : ST_NRECENT;
	for (i = 0; i < n; i++) {
		e = &st_err[(st_nerr - 1 - i) % ST_NRECENT];
		json_array_append_new(a, json_pack("{s:o, s:o}", "time",
		    status_time(e->se_time), "message", status_str(e->se_msg)));
	}
	return (a);
}

/* Everything the page shows, as one JSON object (on the loop). */
json_t *
status_json(const struct metrics_store *ms)
{
	struct metrics_hits	 mh;
	json_t			*o, *store, *cache;
	uint64_t		 looked;

	metrics_hits(&mh);
	store = json_pack("{s:I, s:I}", "bytes", (json_int_t)ms->ms_bytes,
	    "blobs", (json_int_t)ms->ms_blobs);
	if (ms->ms_quota > 0) {
		json_object_set_new(store, "quota_bytes",
		    json_integer(ms->ms_quota));
		json_object_set_new(store, "used_ratio", json_real(
		    (double)ms->ms_bytes / (double)ms->ms_quota));
	} else {
		json_object_set_new(store, "quota_bytes", json_null());
		json_object_set_new(store, "used_ratio", json_null());
	}
	json_object_set_new(store, "s3_pending", ms->ms_s3_pending >= 0 ?
	    json_integer(ms->ms_s3_pending) : json_null());
	looked = mh.mh_hits + mh.mh_misses + mh.mh_coalesced;
	cache = json_pack("{s:I, s:I, s:I, s:o}", "hits",
	    (json_int_t)mh.mh_hits, "misses", (json_int_t)mh.mh_misses,
	    "coalesced", (json_int_t)mh.mh_coalesced, "hit_ratio", looked > 0 ?
	    json_real((double)mh.mh_hits / (double)looked) : json_null());

	pthread_mutex_lock(&st_mtx);
	o = json_pack("{s:s, s:o, s:I, s:o, s:b, s:o, s:o, s:o, s:o, s:o}",
	    "version", PACKAGE_VERSION,
	    "started", status_time(st_start),
	    "uptime_seconds", (json_int_t)(time(NULL) - st_start),
	    "source", status_source(),
	    "offline", nm_conf->cf_offline,
	    "upstreams", status_upstreams(),
	    "builds", status_builds(),
	    "errors", status_errors(),
	    "store", store,
	    "cache", cache);
	pthread_mutex_unlock(&st_mtx);
	return (o);
}

/* Writes a JSON string (or "" for anything else) with HTML escaped. */
static void
status_esc(FILE *f, const json_t *j)
{
	const char	*s = json_is_string(j) ? json_string_value(j) : "";

	for (; *s != '\0'; s++) {
		switch (*s) {
		case '<':
			fputs("&lt;", f);
			break;
		case '>':
			fputs("&gt;", f);
			break;
		case '&':
			fputs("&amp;", f);
			break;
		case '"':
			fputs("&quot;", f);
			break;
		case '\'':
			fputs("&#39;", f);
			break;
		default:
			fputc(*s, f);
		}
	}
}

/* Bytes as a person reads them: "12.3 MiB". */
static void
status_bytes(FILE *f, double n)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	size_t	 u = 0;

	while (n >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
		n /= 1024;
		u++;
	}
	fprintf(f, u == 0 ? "%.0f %s" : "%.1f %s", n, units[u]);
}

/* Seconds as a person reads them: "42 s", "3 min 5 s", "2 h 10 min". */
static void
status_secs(FILE *f, double s)
{
	long	 n = (long)(s + 0.5);

	if (s < 1)
		fprintf(f, "%.2f s", s);
	else if (s < 10)
		fprintf(f, "%.1f s", s);
	else if (n < 60)
		fprintf(f, "%ld s", n);
	else if (n < 3600)
		fprintf(f, "%ld min %ld s", n / 60, n % 60);
	else if (n < 86400)
		fprintf(f, "%ld h %ld min", n / 3600, n % 3600 / 60);
	else
		fprintf(f, "%ld d %ld h", n / 86400, n % 86400 / 3600);
}

static const char status_css[] =
    "body{font-family:sans-serif;margin:2em;max-width:72em;color:#222}"
    "table{border-collapse:collapse;width:100%;margin-bottom:1.5em}"
    "th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #ddd;"
    "vertical-align:top}"
    "th{background:#f3f3f3}td.num{text-align:right}"
    "td.time{white-space:nowrap}"
    ".ok{color:#17632a}.failed{color:#a11}"
    "code{font-size:.9em;word-break:break-all}"
    "dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}"
    "dt{font-weight:bold}dd{margin:0}";

static void
status_html_head(FILE *f, const json_t *o)
{
	const json_t	*src = json_object_get(o, "source");
	const json_t	*store = json_object_get(o, "store");
	const json_t	*cache = json_object_get(o, "cache");
	const json_t	*q = json_object_get(store, "quota_bytes");
	const json_t	*hr = json_object_get(cache, "hit_ratio");

	fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
	    "<meta http-equiv=\"refresh\" content=\"10\">"
	    "<title>nixmirror status</title><style>", f);
	fputs(status_css, f);
	fputs("</style></head><body>\n<h1>nixmirror status</h1>\n<dl>\n", f);
	fputs("<dt>Version</dt><dd id=\"version\">", f);
	status_esc(f, json_object_get(o, "version"));
	fputs("</dd>\n<dt>Up since</dt><dd id=\"uptime\">", f);
	status_esc(f, json_object_get(o, "started"));
	fputs(" (", f);
	status_secs(f, (double)json_integer_value(json_object_get(o,
	    "uptime_seconds")));
	fputs(")</dd>\n<dt>Package source</dt><dd id=\"source\">", f);
	status_esc(f, json_object_get(src, "type"));
	fputs(" <code>", f);
	status_esc(f, json_object_get(src, "location"));
	fputs("</code>", f);
	if (json_is_string(json_object_get(src, "revision"))) {
		fputs(", revision <code>", f);
		status_esc(f, json_object_get(src, "revision"));
		fputs("</code>", f);
		if (json_object_get(src, "revision_of") != NULL) {
			fputs(" (tag ", f);
			status_esc(f, json_object_get(src, "revision_of"));
			fputs(")", f);
		}
	}
	if (json_is_true(json_object_get(o, "offline")))
		fputs("; offline: stored images only", f);
	fputs("</dd>\n<dt>Store</dt><dd id=\"store\">", f);
	status_bytes(f, (double)json_integer_value(json_object_get(store,
	    "bytes")));
	fprintf(f, " in %lld blobs", (long long)json_integer_value(
	    json_object_get(store, "blobs")));
	if (json_is_integer(q)) {
		fputs(" of ", f);
		status_bytes(f, (double)json_integer_value(q));
		fprintf(f, " (%.0f%%) <meter min=\"0\" max=\"1\" value=\"%.3f\">"
		    "</meter>", 100 * json_real_value(json_object_get(store,
		    "used_ratio")), json_real_value(json_object_get(store,
		    "used_ratio")));
	} else
		fputs(", no quota", f);
	if (json_is_integer(json_object_get(store, "s3_pending")))
		fprintf(f, "; %lld waiting to go up to the shared bucket",
		    (long long)json_integer_value(json_object_get(store,
		    "s3_pending")));
	fputs("</dd>\n<dt>Hit ratio</dt><dd id=\"hits\">", f);
	if (json_is_real(hr))
		fprintf(f, "%.0f%%", 100 * json_real_value(hr));
	else
		fputs("no requests yet", f);
	fprintf(f, " (%lld hits, %lld misses, %lld joined a fetch)</dd>\n</dl>\n",
	    (long long)json_integer_value(json_object_get(cache, "hits")),
	    (long long)json_integer_value(json_object_get(cache, "misses")),
	    (long long)json_integer_value(json_object_get(cache, "coalesced")));
}

static void
status_html_upstreams(FILE *f, const json_t *ups)
{
	const json_t	*u, *e, *rl;
	size_t		 i;

	fputs("<h2>Upstreams</h2>\n<table id=\"upstreams\"><tr><th>Namespace"
	    "</th><th>URL</th><th>Last success</th><th>Last error</th>"
	    "<th>Rate limit left</th></tr>\n", f);
	json_array_foreach(ups, i, u) {
		fputs("<tr><td>", f);
		status_esc(f, json_object_get(u, "namespace"));
		fputs("</td><td><code>", f);
		status_esc(f, json_object_get(u, "url"));
		fputs("</code></td><td>", f);
		if (json_is_string(json_object_get(u, "last_success")))
			status_esc(f, json_object_get(u, "last_success"));
		else
			fputs("never", f);
		fputs("</td><td>", f);
		if ((e = json_object_get(u, "last_error")) != NULL &&
		    json_is_object(e)) {
			status_esc(f, json_object_get(e, "time"));
			fputs(": ", f);
			status_esc(f, json_object_get(e, "message"));
		} else
			fputs("none", f);
		fputs("</td><td class=\"num\">", f);
		rl = json_object_get(u, "ratelimit_remaining");
		if (json_is_integer(rl))
			fprintf(f, "%lld", (long long)json_integer_value(rl));
		else
			fputs("not sent", f);
		fputs("</td></tr>\n", f);
	}
	fputs("</table>\n", f);
}

static void
status_html_builds(FILE *f, const json_t *builds)
{
	const json_t	*b, *run = json_object_get(builds, "in_progress");
	const json_t	*done = json_object_get(builds, "recent");
	size_t		 i;

	fputs("<h2>Builds in progress</h2>\n", f);
	if (json_array_size(run) == 0)
		fputs("<p id=\"running\">None.</p>\n", f);
	else
		fputs("<table id=\"running\"><tr><th>Image</th><th>Packages"
		    "</th><th>Phase</th><th>For</th></tr>\n", f);
	json_array_foreach(run, i, b) {
		fputs("<tr><td>", f);
		status_esc(f, json_object_get(b, "image"));
		fputs("</td><td>", f);
		status_esc(f, json_object_get(b, "packages"));
		fputs("</td><td>", f);
		status_esc(f, json_object_get(b, "phase"));
		fputs("</td><td class=\"num\">", f);
		status_secs(f, json_real_value(json_object_get(b,
		    "elapsed_seconds")));
		fputs("</td></tr>\n", f);
	}
	if (json_array_size(run) > 0)
		fputs("</table>\n", f);

	fputs("<h2>Last builds</h2>\n", f);
	if (json_array_size(done) == 0) {
		fputs("<p id=\"builds\">None yet.</p>\n", f);
		return;
	}
	fputs("<table id=\"builds\"><tr><th>Finished</th><th>Image</th>"
	    "<th>Result</th><th>Took</th><th>Manifest or error</th></tr>\n", f);
	json_array_foreach(done, i, b) {
		int ok = strcmp(json_string_value(json_object_get(b, "result")),
		    "ok") == 0;

		fputs("<tr><td class=\"time\">", f);
		status_esc(f, json_object_get(b, "finished"));
		fputs("</td><td>", f);
		status_esc(f, json_object_get(b, "image"));
		fprintf(f, "</td><td class=\"%s\">%s</td><td class=\"num\">",
		    ok ? "ok" : "failed", ok ? "ok" : "failed");
		status_secs(f, json_real_value(json_object_get(b, "seconds")));
		fputs(ok ? "</td><td><code>" : "</td><td>", f);
		status_esc(f, json_object_get(b, ok ? "manifest" : "error"));
		fputs(ok ? "</code></td></tr>\n" : "</td></tr>\n", f);
	}
	fputs("</table>\n", f);
}

static void
status_html_errors(FILE *f, const json_t *errs)
{
	const json_t	*e;
	size_t		 i;

	fputs("<h2>Last errors</h2>\n", f);
	if (json_array_size(errs) == 0) {
		fputs("<p id=\"errors\">None.</p>\n", f);
		return;
	}
	fputs("<table id=\"errors\"><tr><th>Time</th><th>Error</th></tr>\n", f);
	json_array_foreach(errs, i, e) {
		fputs("<tr><td class=\"time\">", f);
		status_esc(f, json_object_get(e, "time"));
		fputs("</td><td>", f);
		status_esc(f, json_object_get(e, "message"));
		fputs("</td></tr>\n", f);
	}
	fputs("</table>\n", f);
}

/* The status page: HTML with no script, made from status_json's object. */
char *
status_html(const json_t *o)
{
	FILE	*f;
	char	*buf = NULL;
	size_t	 len = 0;

	if ((f = open_memstream(&buf, &len)) == NULL)
		fatal("open_memstream");
	status_html_head(f, o);
	status_html_upstreams(f, json_object_get(o, "upstreams"));
	status_html_builds(f, json_object_get(o, "builds"));
	status_html_errors(f, json_object_get(o, "errors"));
	fputs("<p><a href=\"/status.json\">JSON</a> &middot; "
	    "<a href=\"/metrics\">metrics</a> &middot; refreshes every 10 s</p>"
	    "\n</body></html>\n", f);
	if (fclose(f) != 0)
		fatal("open_memstream");
	return (buf);
}
