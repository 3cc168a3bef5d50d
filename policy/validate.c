/*
 * policy/validate.c: what the registry accepts as repository names, tags,
 * digests and byte ranges.  Hand-written scanners over ASCII only: any byte
 * outside the grammar, including non-ASCII, is rejected.
 */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "policy.h"

#define POLICY_NAME_MAX	255
#define POLICY_TAG_MAX	128

static int	policy_is_lower_alnum(int);
static int	policy_is_alnum(int);
static int	policy_is_hex(int);
static size_t	policy_name_component(const char *);
static const char *policy_range_ows(const char *);
static const char *policy_range_number(const char *, uint64_t *);
static int	policy_range_resolve(int, uint64_t, uint64_t, uint64_t,
		    uint64_t *, uint64_t *);

/* Whether c is in [a-z0-9]. */
static int
policy_is_lower_alnum(int c)
{
	return ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'));
}

/* Whether c is in [a-zA-Z0-9], without the locale. */
static int
policy_is_alnum(int c)
{
	return (policy_is_lower_alnum(c) || (c >= 'A' && c <= 'Z'));
}

/* Whether c is a lowercase hex digit. */
static int
policy_is_hex(int c)
{
	return ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
}

/*
 * Scans one path component [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* at s; returns
 * its length, or 0 when s does not start with a valid component that ends
 * at '/' or the end of the string.
 */
static size_t
policy_name_component(const char *s)
{
	const char	*p = s;

	for (;;) {
		if (!policy_is_lower_alnum((unsigned char)*p))
			return (0);
		while (policy_is_lower_alnum((unsigned char)*p))
			p++;
		if (*p == '\0' || *p == '/')
			return (p - s);
		if (*p == '.')
			p++;
		else if (*p == '_')
			p += p[1] == '_' ? 2 : 1;
		else if (*p == '-') {
			while (*p == '-')
				p++;
		} else
			return (0);
	}
}

/* Checks a repository name against the OCI distribution grammar. */
int
policy_name_valid(const char *name)
{
	const char	*p = name;
	size_t		 len, n;

	if (name == NULL)
		return (0);
	len = strnlen(name, POLICY_NAME_MAX + 1);
	if (len == 0 || len > POLICY_NAME_MAX)
		return (0);
	for (;;) {
		if ((n = policy_name_component(p)) == 0)
			return (0);
		p += n;
		if (*p == '\0')
			return (1);
		p++;	/* the '/' */
	}
}

/* Checks a tag: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}. */
int
policy_tag_valid(const char *tag)
{
	size_t	i;

	if (tag == NULL)
		return (0);
	if (!policy_is_alnum((unsigned char)tag[0]) && tag[0] != '_')
		return (0);
	for (i = 1; tag[i] != '\0'; i++) {
		if (i >= POLICY_TAG_MAX)
			return (0);
		if (!policy_is_alnum((unsigned char)tag[i]) &&
		    strchr("._-", tag[i]) == NULL)
			return (0);
	}
	return (1);
}

/* Checks for exactly "sha256:" and 64 lowercase hex digits. */
int
policy_digest_valid(const char *digest)
{
	size_t	i;

	if (digest == NULL || strncmp(digest, "sha256:", 7) != 0)
		return (0);
	for (i = 0; i < 64; i++) {
		if (!policy_is_hex((unsigned char)digest[7 + i]))
			return (0);
	}
	return (digest[7 + 64] == '\0');
}

/*
 * Whether s has the shape of the OCI digest grammar,
 * [a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+, valid or not.
 */
int
policy_digest_like(const char *s)
{
	const char	*p = s;

	if (s == NULL)
		return (0);
	for (;;) {
		if (!policy_is_lower_alnum((unsigned char)*p))
			return (0);
		while (policy_is_lower_alnum((unsigned char)*p))
			p++;
		if (*p == ':')
			break;
		if (*p == '\0' || strchr("+._-", *p) == NULL)
			return (0);
		p++;
	}
	p++;
	if (*p == '\0')
		return (0);
	for (; *p != '\0'; p++) {
		if (!policy_is_alnum((unsigned char)*p) &&
		    strchr("=_-", *p) == NULL)
			return (0);
	}
	return (1);
}

/* Skips optional white space (SP and HTAB). */
static const char *
policy_range_ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return (p);
}

/*
 * Reads a run of decimal digits into *v; returns the end, or NULL when there
 * are none or the value does not fit in 64 bits.
 */
static const char *
policy_range_number(const char *p, uint64_t *v)
{
	uint64_t	 n = 0;
	unsigned	 d;

	if (*p < '0' || *p > '9')
		return (NULL);
	for (; *p >= '0' && *p <= '9'; p++) {
		d = *p - '0';
		if (n > (UINT64_MAX - d) / 10)
			return (NULL);
		n = n * 10 + d;
	}
	*v = n;
	return (p);
}

/*
 * Turns a syntactically valid range (first-last, or a suffix of length last)
 * into inclusive offsets within size bytes, or POLICY_RANGE_UNSAT.
 */
static int
policy_range_resolve(int suffix, uint64_t first, uint64_t last, uint64_t size,
    uint64_t *start, uint64_t *end)
{
	if (size == 0)
		return (POLICY_RANGE_UNSAT);
	if (suffix) {
		if (last == 0)
			return (POLICY_RANGE_UNSAT);
		*start = last >= size ? 0 : size - last;
		*end = size - 1;
		return (POLICY_RANGE_OK);
	}
	if (first >= size)
		return (POLICY_RANGE_UNSAT);
	*start = first;
	*end = last > size - 1 ? size - 1 : last;
	return (POLICY_RANGE_OK);
}

/*
 * Parses a single "bytes=a-b", "bytes=a-" or "bytes=-n" range of a resource
 * of size bytes (RFC 7233); anything else is ignored as POLICY_RANGE_NONE.
 */
int
policy_range_parse(const char *hdr, uint64_t size, uint64_t *start,
    uint64_t *end)
{
	const char	*p;
	uint64_t	 a = 0, b = UINT64_MAX;
	int		 suffix = 0;

	if (hdr == NULL)
		return (POLICY_RANGE_NONE);
	p = policy_range_ows(hdr);
	if (strncasecmp(p, "bytes", 5) != 0)
		return (POLICY_RANGE_NONE);
	p = policy_range_ows(p + 5);
	if (*p++ != '=')
		return (POLICY_RANGE_NONE);
	p = policy_range_ows(p);
	if (*p == '-')
		suffix = 1;
	else if ((p = policy_range_number(p, &a)) == NULL)
		return (POLICY_RANGE_NONE);
	p = policy_range_ows(p);
	if (*p++ != '-')
		return (POLICY_RANGE_NONE);
	p = policy_range_ows(p);
	if (*p >= '0' && *p <= '9') {
		if ((p = policy_range_number(p, &b)) == NULL)
			return (POLICY_RANGE_NONE);
	} else if (suffix)
		return (POLICY_RANGE_NONE);
	if (*policy_range_ows(p) != '\0' || (!suffix && a > b))
		return (POLICY_RANGE_NONE);
	return (policy_range_resolve(suffix, a, b, size, start, end));
}

/*
 * A registry host as containerd sends it in "ns": DNS labels of letters,
 * digits and '-', joined by '.', and an optional ":port"; at most 253
 * characters.
 */
int
policy_ns_valid(const char *ns)
{
	const char	*p = ns;
	size_t		 label = 0, digits = 0;

	if (ns == NULL || *ns == '\0' || strlen(ns) > 253)
		return (0);
	for (; *p != '\0' && *p != ':'; p++) {
		if (*p == '.') {
			if (label == 0 || p[-1] == '-')
				return (0);
			label = 0;
			continue;
		}
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || (*p == '-' && label > 0)))
			return (0);
		if (++label > 63)
			return (0);
	}
	if (label == 0 || p[-1] == '-')
		return (0);
	if (*p == '\0')
		return (1);
	for (p++; *p != '\0'; p++) {
		if (*p < '0' || *p > '9' || ++digits > 5)
			return (0);
	}
	return (digits > 0);
}
