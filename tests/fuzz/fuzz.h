/*
 * tests/fuzz/fuzz.h: what the libFuzzer targets and the corpus replay
 * share.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "nixmirror.h"

/* Each target defines this; libFuzzer or replay.c calls it. */
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* tests/fuzz/fuzz_common.c */
/* Quiet logging and a default configuration, once per process. */
void	fuzz_init(void);
/* A NUL-terminated copy of len bytes (the caller frees). */
char	*fuzz_string(const uint8_t *, size_t);
/* Reports a broken invariant and aborts, which the fuzzer sees as a crash. */
void	fuzz_fail(const char *, const char *, int) NM_DEAD;

#define FUZZ_CHECK(e) do {						\
	if (!(e))							\
		fuzz_fail(#e, __FILE__, __LINE__);			\
} while (0)

#endif /* FUZZ_H */
