/*
 * tests/fuzz/fuzz_range.c: the Range header parser.  The first 8 bytes are
 * the resource size (big-endian), the rest is the header value.
 */
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"
#include "tests/fuzz/fuzz.h"

static uint64_t	fz_size(const uint8_t *, size_t);

/* Reads up to 8 bytes as a big-endian size. */
static uint64_t
fz_size(const uint8_t *data, size_t n)
{
	uint64_t	v = 0;
	size_t		i;

	for (i = 0; i < n && i < 8; i++)
		v = (v << 8) | data[i];
	return (v);
}

/* One input: the result code and, when satisfiable, the bounds. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t	 len, start = 0, end = 0, s2 = 0, e2 = 0;
	char		*hdr;
	size_t		 skip = size < 8 ? size : 8;
	int		 rc;

	fuzz_init();
	len = fz_size(data, skip);
	hdr = fuzz_string(data + skip, size - skip);
	rc = policy_range_parse(hdr, len, &start, &end);
	FUZZ_CHECK(rc == POLICY_RANGE_NONE || rc == POLICY_RANGE_OK ||
	    rc == POLICY_RANGE_UNSAT);
	if (rc == POLICY_RANGE_OK) {
		FUZZ_CHECK(start <= end);
		FUZZ_CHECK(end < len);
	}
	if (len == 0)
		FUZZ_CHECK(rc != POLICY_RANGE_OK);
	/* A syntactically valid range stays valid, whatever the size. */
	if (rc != POLICY_RANGE_NONE) {
		FUZZ_CHECK(policy_range_parse(hdr, UINT64_MAX, &s2, &e2) !=
		    POLICY_RANGE_NONE);
		FUZZ_CHECK(policy_range_parse(hdr, 0, &s2, &e2) ==
		    POLICY_RANGE_UNSAT);
	}
	/* Deterministic. */
	FUZZ_CHECK(policy_range_parse(hdr, len, &s2, &e2) == rc);
	if (rc == POLICY_RANGE_OK)
		FUZZ_CHECK(s2 == start && e2 == end);
	free(hdr);
	return (0);
}
