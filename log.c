/*
 * log.c: one line per event on stderr, with a UTC time stamp.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "nixmirror.h"

static int		log_debug_on;
static int		log_quiet_on;	/* info lines left out */
static int		log_json_on;	/* one JSON object a line */
static pthread_mutex_t	log_mtx = PTHREAD_MUTEX_INITIALIZER;
static void		(*log_warn_hook)(const char *);

static void	log_vwrite(const char *, const char *, int, const char *, va_list)
		    NM_PRINTF(4, 0);

/* Whether c may end a URL's authority or a path quoted in a message. */
static int
redact_stop(char c)
{
	return (c == '\0' || c == '/' || c == '?' || c == '#' || c == ' ' ||
	    c == '\t' || c == '\n' || c == '"' || c == '\'' || c == '`' ||
	    c == '>' || c == ')' || c == ',' || c == ';');
}

/* Whether an absolute path may start right after c. */
static int
redact_path_start(char c)
{
	return (c == ' ' || c == '\t' || c == '"' || c == '\'' || c == '`' ||
	    c == '(' || c == '=' || c == '<' || c == '[');
}

/*
 * A copy of s with the userinfo of every URL shown as three stars (the
 * URL https://u:tok@host/x shows as https:// then ***@host/x) and, with paths
 * set, every absolute file path as "<path>", for text that leaves the
 * process.  NULL when out of memory (the logger cannot call fatal).
 */
char *
nm_redact(const char *s, int paths)
{
	const char	*p, *q, *at;
	char		*out, *o;
	size_t		 len = strlen(s);

	/* "/a" (2 bytes) becomes "<path>" (6): at most three times as long. */
	if ((out = malloc(3 * len + 8)) == NULL)
		return (NULL);
	for (o = out, p = s; *p != '\0';) {
		if (p[0] == ':' && p[1] == '/' && p[2] == '/') {
			memcpy(o, p, 3);
			o += 3;
			p += 3;
			for (at = NULL, q = p; !redact_stop(*q); q++)
				if (*q == '@')
					at = q;
			if (at != NULL) {
				memcpy(o, "***", 3);
				o += 3;
				p = at;
			}
			memcpy(o, p, (size_t)(q - p));
			o += q - p;
			p = q;
			continue;
		}
		if (paths && p[0] == '/' && (p == s || redact_path_start(p[-1])) &&
		    p[1] != '\0' && !redact_stop(p[1])) {
			for (q = p; *q != '\0' && *q != ' ' && *q != '\t' &&
			    *q != '\n' && *q != '"' && *q != '\'' && *q != '`' &&
			    *q != ')' && *q != ',' && *q != ';' && *q != '>' &&
			    *q != ']'; q++)
				;
			memcpy(o, "<path>", 6);
			o += 6;
			p = q;
			continue;
		}
		*o++ = *p++;
	}
	*o = '\0';
	return (out);
}

/* Sets whether debug lines are written. */
void
log_init(int debug)
{
	log_debug_on = debug;
}

/* Only warnings and worse (a tool whose own output matters more). */
void
log_quiet(int quiet)
{
	log_quiet_on = quiet;
}

/* Lines as JSON objects {"time", "level", "msg", "error"}, or as text. */
/* Also hands every warning line to fn (which must not log). */
void
log_on_warn(void (*fn)(const char *))
{
	log_warn_hook = fn;
}

void
log_json(int json)
{
	log_json_on = json;
}

/* Writes one line: time, level, message and an optional errno text. */
static void
log_vwrite(const char *level, const char *err, int hook, const char *fmt,
    va_list ap)
{
	char		 ts[32], *raw, *line, *text = NULL;
	struct tm	 tm;
	time_t		 now;
	json_t		*obj;

	now = time(NULL);
	gmtime_r(&now, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);

	/* Every line goes out with the userinfo of its URLs hidden. */
	if (vasprintf(&raw, fmt, ap) == -1)
		raw = NULL;
	line = raw != NULL ? nm_redact(raw, 0) : NULL;
	free(raw);
	if (log_json_on) {
		obj = json_pack("{s:s, s:s, s:s}", "time", ts, "level", level,
		    "msg", line != NULL ? line : "(no memory for the message)");
		if (obj != NULL && err != NULL)
			json_object_set_new(obj, "error", json_string(err));
		text = obj != NULL ? json_dumps(obj, JSON_COMPACT |
		    JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII) : NULL;
		json_decref(obj);
	}
	/* Warnings go to the hook too (the status page's "last errors"). */
	if (line != NULL && log_warn_hook != NULL && hook &&
	    strcmp(level, "warn") == 0) {
		if (err != NULL) {
			char *e;

			xasprintf(&e, "%s: %s", line, err);
			log_warn_hook(e);
			free(e);
		} else
			log_warn_hook(line);
	}
	pthread_mutex_lock(&log_mtx);
	if (text != NULL)
		fputs(text, stderr);
	else {
		fprintf(stderr, "%s %s %s", ts, level, line != NULL ? line :
		    "(no memory for the message)");
		if (err != NULL)
			fprintf(stderr, ": %s", err);
	}
	fputc('\n', stderr);
	fflush(stderr);
	pthread_mutex_unlock(&log_mtx);
	free(line);
	free(text);
}

void
log_warn(const char *fmt, ...)
{
	va_list	 ap;
	int	 saved = errno;

	va_start(ap, fmt);
	log_vwrite("warn", strerror(saved), 1, fmt, ap);
	va_end(ap);
	errno = saved;
}

void
log_warnx(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite("warn", NULL, 1, fmt, ap);
	va_end(ap);
}

/* A warning line that details another (a child's stderr): not hooked. */
void
log_warn_detail(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite("warn", NULL, 0, fmt, ap);
	va_end(ap);
}

void
log_info(const char *fmt, ...)
{
	va_list	 ap;

	if (log_quiet_on)
		return;
	va_start(ap, fmt);
	log_vwrite("info", NULL, 0, fmt, ap);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list	 ap;

	if (!log_debug_on)
		return;
	va_start(ap, fmt);
	log_vwrite("debug", NULL, 0, fmt, ap);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list	 ap;
	int	 saved = errno;

	va_start(ap, fmt);
	log_vwrite("fatal", strerror(saved), 0, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite("fatal", NULL, 0, fmt, ap);
	va_end(ap);
	exit(1);
}
