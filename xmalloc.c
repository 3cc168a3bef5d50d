/*
 * xmalloc.c: allocation that cannot fail; running out of memory is fatal.
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nixmirror.h"

void *
xmalloc(size_t size)
{
	void	*p;

	if (size == 0)
		size = 1;
	if ((p = malloc(size)) == NULL)
		fatal("%s: %zu bytes", __func__, size);
	return (p);
}

void *
xcalloc(size_t nmemb, size_t size)
{
	void	*p;

	if (nmemb == 0 || size == 0)
		nmemb = size = 1;
	if ((p = calloc(nmemb, size)) == NULL)
		fatal("%s: %zu * %zu bytes", __func__, nmemb, size);
	return (p);
}

void *
xreallocarray(void *old, size_t nmemb, size_t size)
{
	void	*p;

	if (nmemb == 0 || size == 0)
		nmemb = size = 1;
	if (nmemb > SIZE_MAX / size)
		fatalx("%s: %zu * %zu overflows", __func__, nmemb, size);
	if ((p = realloc(old, nmemb * size)) == NULL)
		fatal("%s: %zu * %zu bytes", __func__, nmemb, size);
	return (p);
}

char *
xstrdup(const char *s)
{
	char	*p;

	if ((p = strdup(s)) == NULL)
		fatal("%s", __func__);
	return (p);
}

void
xstrvfree(char **v, size_t n)
{
	size_t	 i;

	if (v == NULL)
		return;
	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* The n strings joined by sep, in a new string. */
char *
xstrvjoin(char *const *v, size_t n, const char *sep)
{
	size_t	 i, len = 1, slen = strlen(sep);
	char	*out, *p;

	for (i = 0; i < n; i++)
		len += strlen(v[i]) + slen;
	p = out = xmalloc(len);
	for (i = 0; i < n; i++) {
		if (i > 0) {
			memcpy(p, sep, slen);
			p += slen;
		}
		memcpy(p, v[i], strlen(v[i]));
		p += strlen(v[i]);
	}
	*p = '\0';
	return (out);
}

int
xvasprintf(char **ret, const char *fmt, va_list ap)
{
	int	 n;

	if ((n = vasprintf(ret, fmt, ap)) == -1)
		fatal("%s", __func__);
	return (n);
}

int
xasprintf(char **ret, const char *fmt, ...)
{
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	n = xvasprintf(ret, fmt, ap);
	va_end(ap);
	return (n);
}

/*
 * A copy of user text that is safe in a log line and in JSON: bytes
 * outside printable ASCII (and the backslash) become \xHH.
 */
char *
xstrvis(const char *s)
{
	const unsigned char	*p;
	char			*out, *q;

	out = xmalloc(strlen(s) * 4 + 1);
	for (p = (const unsigned char *)s, q = out; *p != '\0'; p++) {
		if (*p >= 0x20 && *p < 0x7f && *p != '\\')
			*q++ = (char)*p;
		else
			q += sprintf(q, "\\x%02x", *p);
	}
	*q = '\0';
	return (out);
}

/*
 * Gives the heap's free pages back to the kernel.  main has glibc keep a
 * free heap top while streams allocate and free their buffers; once no
 * stream runs, that memory would stay resident for nothing.
 */
void
xheap_trim(void)
{
	malloc_trim(0);
}
