/*
 * tests/fuzz/fuzz_policy.c: the --policy document parser.
 */
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"
#include "tests/fuzz/fuzz.h"

/* One input: a policy document is accepted, or refused with a reason. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	*text, *cause = NULL;
	int	 rc;

	fuzz_init();
	text = fuzz_string(data, size);
	rc = policy_parse(text, size, &cause);
	FUZZ_CHECK(rc == 0 || rc == -1);
	if (rc == -1) {
		FUZZ_CHECK(cause != NULL && *cause != '\0');
		free(cause);
	} else
		FUZZ_CHECK(cause == NULL);
	/* Parsing is a pure function of the text. */
	cause = NULL;
	FUZZ_CHECK(policy_parse(text, size, &cause) == rc);
	free(cause);
	free(text);
	return (0);
}
