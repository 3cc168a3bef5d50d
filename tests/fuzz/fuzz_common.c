/*
 * tests/fuzz/fuzz_common.c: set-up and helpers shared by the fuzz targets.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"
#include "tests/fuzz/fuzz.h"

/*
 * The daemon defines nm_conf in main.c, which is not in libnixmirror.a;
 * weak, so that a definition moved into the library wins without a clash.
 */
__attribute__((weak)) struct nm_config *nm_conf;

/* Quiet logging and a default configuration, once per process. */
void
fuzz_init(void)
{
	static int	done;

	if (done)
		return;
	done = 1;
	log_init(0);
	if (nm_conf == NULL) {
		nm_conf = xcalloc(1, sizeof *nm_conf);
		policy_config_defaults(nm_conf);
	}
}

/* Returns a NUL-terminated copy of len bytes of data. */
char *
fuzz_string(const uint8_t *data, size_t len)
{
	char	*s;

	s = xmalloc(len + 1);
	if (len > 0)
		memcpy(s, data, len);
	s[len] = '\0';
	return (s);
}

/* Reports a broken invariant and aborts. */
void
fuzz_fail(const char *expr, const char *file, int line)
{
	fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, expr);
	abort();
}
