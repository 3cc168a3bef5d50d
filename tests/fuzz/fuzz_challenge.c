/*
 * tests/fuzz/fuzz_challenge.c: the WWW-Authenticate challenge parser.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"
#include "tests/fuzz/fuzz.h"

static void	fz_param(const char *, const char *);

/* A parameter is absent or a string no longer than the header. */
static void
fz_param(const char *hdr, const char *v)
{
	if (v != NULL)
		FUZZ_CHECK(strlen(v) < strlen(hdr));
}

/* One input: a parsed challenge has a token scheme; all is freed. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	*hdr, *scheme, *realm, *service, *scope;
	size_t	 i, n;

	fuzz_init();
	hdr = fuzz_string(data, size);
	scheme = realm = service = scope = hdr;
	if (proxy_challenge_parse(hdr, &scheme, &realm, &service,
	    &scope) == -1) {
		FUZZ_CHECK(scheme == NULL && realm == NULL &&
		    service == NULL && scope == NULL);
		free(hdr);
		return (0);
	}
	FUZZ_CHECK(scheme != NULL);
	n = strlen(scheme);
	FUZZ_CHECK(n >= 1 && n <= 32);
	for (i = 0; i < n; i++)
		FUZZ_CHECK(isalnum((unsigned char)scheme[i]) ||
		    scheme[i] == '-');
	FUZZ_CHECK(strstr(hdr, scheme) != NULL);
	fz_param(hdr, realm);
	fz_param(hdr, service);
	fz_param(hdr, scope);
	free(scheme);
	free(realm);
	free(service);
	free(scope);
	free(hdr);
	return (0);
}
