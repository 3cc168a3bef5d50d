/*
 * tests/fuzz/fuzz_manifest.c: manifest and index documents as an upstream
 * sends them.  The first line of the input is the Content-Type (empty: none),
 * the rest the body; the body is typed with proxy_manifest_type and walked
 * the way the mirror reads it.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "policy/policy.h"
#include "proxy/proxy.h"
#include "tests/fuzz/fuzz.h"

static void	fz_type(const char *, const char *, size_t);
static void	fz_descriptor(json_t *);
static int	fz_platform(json_t *);
static void	fz_walk(json_t *);
static void	fz_roundtrip(json_t *);

/* The type found is a manifest or index type without parameters. */
static void
fz_type(const char *ctype, const char *body, size_t len)
{
	char	*t, *again;

	t = proxy_manifest_type(ctype, body, len);
	if (t == NULL)
		return;
	FUZZ_CHECK(strstr(t, "manifest") != NULL || strstr(t, "index") != NULL);
	/*
	 * A type from the header has its parameters cut off, and typing again
	 * with it as the header gives it back.  (A mediaType from the body is
	 * taken as it is.)
	 */
	if (strpbrk(t, "; \t") == NULL) {
		again = proxy_manifest_type(t, body, len);
		FUZZ_CHECK(again != NULL && strcmp(again, t) == 0);
		free(again);
	}
	free(t);
}

/* Reads a descriptor: mediaType, digest and size. */
static void
fz_descriptor(json_t *d)
{
	json_t		*dig, *size, *mt;
	const char	*s;

	if (!json_is_object(d))
		return;
	mt = json_object_get(d, "mediaType");
	if (json_is_string(mt))
		(void)strlen(json_string_value(mt));
	dig = json_object_get(d, "digest");
	if (json_is_string(dig)) {
		s = json_string_value(dig);
		if (policy_digest_valid(s)) {
			FUZZ_CHECK(strlen(s) == NM_DIGEST_SIZE - 1);
			FUZZ_CHECK(policy_digest_like(s));
		}
	}
	size = json_object_get(d, "size");
	if (json_is_integer(size) && json_integer_value(size) < 0)
		return;	/* the mirror rejects it */
}

/*
 * Reads a platform the way an index is matched against a client; 1 when it
 * is one of ours (linux on amd64 or arm64).
 */
static int
fz_platform(json_t *p)
{
	const char	*os, *arch;

	if (!json_is_object(p))
		return (0);
	os = json_string_value(json_object_get(p, "os"));
	arch = json_string_value(json_object_get(p, "architecture"));
	(void)json_string_value(json_object_get(p, "variant"));
	return (os != NULL && arch != NULL && strcmp(os, "linux") == 0 &&
	    (strcmp(arch, "amd64") == 0 || strcmp(arch, "arm64") == 0));
}

/* Walks a manifest (config, layers) or an index (manifests, platform). */
static void
fz_walk(json_t *doc)
{
	json_t	*layers, *manifests, *m, *l;
	size_t	 i, ours = 0;

	if (!json_is_object(doc))
		return;
	(void)json_integer_value(json_object_get(doc, "schemaVersion"));
	fz_descriptor(json_object_get(doc, "config"));
	layers = json_object_get(doc, "layers");
	json_array_foreach(layers, i, l)
		fz_descriptor(l);
	manifests = json_object_get(doc, "manifests");
	json_array_foreach(manifests, i, m) {
		fz_descriptor(m);
		if (json_is_object(m))
			ours += fz_platform(json_object_get(m, "platform"));
	}
	FUZZ_CHECK(ours <= json_array_size(manifests));
}

/* Canonical bytes (sorted, compact) load back to an equal document. */
static void
fz_roundtrip(json_t *doc)
{
	json_t	*back;
	char	*text;

	text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS |
	    JSON_ENCODE_ANY);
	if (text == NULL)
		return;	/* out of memory, or nesting too deep */
	back = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	FUZZ_CHECK(back != NULL);
	FUZZ_CHECK(json_equal(doc, back));
	json_decref(back);
	free(text);
}

/* One input: "Content-Type\nbody". */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t	*nl;
	char		*ctype = NULL, *body;
	size_t		 blen;
	json_t		*doc;

	fuzz_init();
	nl = size > 0 ? memchr(data, '\n', size) : NULL;
	if (nl == NULL) {
		/* A Content-Type alone, with an empty body. */
		ctype = size > 0 ? fuzz_string(data, size) : NULL;
		body = fuzz_string(data, 0);
		blen = 0;
	} else {
		if (nl > data)
			ctype = fuzz_string(data, (size_t)(nl - data));
		blen = size - (size_t)(nl - data) - 1;
		body = fuzz_string(nl + 1, blen);
	}
	fz_type(ctype, body, blen);
	doc = json_loadb(body, blen, JSON_ALLOW_NUL, NULL);
	if (doc != NULL) {
		fz_walk(doc);
		fz_roundtrip(doc);
		json_decref(doc);
	}
	free(ctype);
	free(body);
	return (0);
}
