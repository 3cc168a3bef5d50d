/*
 * log.c: one line per event on stderr, with a UTC time stamp.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nixmirror.h"

static int		log_debug_on;
static pthread_mutex_t	log_mtx = PTHREAD_MUTEX_INITIALIZER;

static void	log_vwrite(const char *, const char *, const char *, va_list)
		    NM_PRINTF(3, 0);

/* Sets whether debug lines are written. */
void
log_init(int debug)
{
	log_debug_on = debug;
}

/* Writes one line: time, level, message and an optional errno text. */
static void
log_vwrite(const char *level, const char *err, const char *fmt, va_list ap)
{
	char		 ts[32];
	struct tm	 tm;
	time_t		 now;

	now = time(NULL);
	gmtime_r(&now, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);

	pthread_mutex_lock(&log_mtx);
	fprintf(stderr, "%s %s ", ts, level);
	vfprintf(stderr, fmt, ap);
	if (err != NULL)
		fprintf(stderr, ": %s", err);
	fputc('\n', stderr);
	fflush(stderr);
	pthread_mutex_unlock(&log_mtx);
}

void
log_warn(const char *fmt, ...)
{
	va_list	 ap;
	int	 saved = errno;

	va_start(ap, fmt);
	log_vwrite("warn", strerror(saved), fmt, ap);
	va_end(ap);
	errno = saved;
}

void
log_warnx(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite("warn", NULL, fmt, ap);
	va_end(ap);
}

void
log_info(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite("info", NULL, fmt, ap);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list	 ap;

	if (!log_debug_on)
		return;
	va_start(ap, fmt);
	log_vwrite("debug", NULL, fmt, ap);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list	 ap;
	int	 saved = errno;

	va_start(ap, fmt);
	log_vwrite("fatal", strerror(saved), fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite("fatal", NULL, fmt, ap);
	va_end(ap);
	exit(1);
}
