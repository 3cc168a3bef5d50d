/*
 * tests/fuzz/fuzz_names.c: the name, tag, digest and namespace validators
 * against regular-expression forms of their grammars, and the Nix image
 * name parser with its invariants.
 */
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "nix/nix.h"
#include "policy/policy.h"
#include "tests/fuzz/fuzz.h"

/* The grammars, as the OCI distribution spec writes them. */
#define RE_COMP		"[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*"
#define RE_NAME		"^" RE_COMP "(/" RE_COMP ")*$"
#define RE_TAG		"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$"
#define RE_DIGEST	"^sha256:[a-f0-9]{64}$"
#define RE_LIKE		"^[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"
#define RE_LABEL	"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
#define RE_NS		"^" RE_LABEL "(\\." RE_LABEL ")*(:[0-9]{1,5})?$"
#define RE_ATTR		"^[A-Za-z0-9_][A-Za-z0-9_-]*(\\.[A-Za-z0-9_][A-Za-z0-9_-]*)*$"

enum { FZ_NAME, FZ_TAG, FZ_DIGEST, FZ_LIKE, FZ_NS, FZ_ATTR, FZ_NRE };

static regex_t	fz_re[FZ_NRE];

static void	fz_compile(void);
static int	fz_match(int, const char *);
static void	fz_validators(const char *);
static void	fz_request_check(const char *, const struct nix_request *);
static void	fz_nix(const char *);

/* Compiles the reference expressions once. */
static void
fz_compile(void)
{
	static const char *const src[FZ_NRE] = {
		RE_NAME, RE_TAG, RE_DIGEST, RE_LIKE, RE_NS, RE_ATTR
	};
	static int	 done;
	int		 i;

	if (done)
		return;
	for (i = 0; i < FZ_NRE; i++) {
		if (regcomp(&fz_re[i], src[i], REG_EXTENDED | REG_NOSUB) != 0)
			fuzz_fail(src[i], __FILE__, __LINE__);
	}
	done = 1;
}

/* Whether s matches reference expression i. */
static int
fz_match(int i, const char *s)
{
	return (regexec(&fz_re[i], s, 0, NULL, 0) == 0);
}

/* Checks each validator against its reference grammar and length bounds. */
static void
fz_validators(const char *s)
{
	size_t	len = strlen(s);
	int	name, tag, dig, like, ns;

	name = policy_name_valid(s);
	tag = policy_tag_valid(s);
	dig = policy_digest_valid(s);
	like = policy_digest_like(s);
	ns = policy_ns_valid(s);
	FUZZ_CHECK(name == 0 || name == 1);
	FUZZ_CHECK(name == (len <= 255 && fz_match(FZ_NAME, s)));
	FUZZ_CHECK(tag == fz_match(FZ_TAG, s));
	FUZZ_CHECK(!tag || (len >= 1 && len <= 128));
	FUZZ_CHECK(dig == fz_match(FZ_DIGEST, s));
	FUZZ_CHECK(!dig || (len == 71 && like));
	FUZZ_CHECK(like == fz_match(FZ_LIKE, s));
	FUZZ_CHECK(ns == (len <= 253 && fz_match(FZ_NS, s)));
	FUZZ_CHECK(!ns || strchr(s, '/') == NULL);
}

/* Checks a parsed request: sorted unique valid packages, a known system. */
static void
fz_request_check(const char *s, const struct nix_request *req)
{
	char	*key, *p;
	size_t	 i;

	FUZZ_CHECK(req->nr_npkgs >= 1 && req->nr_npkgs <= 64);
	FUZZ_CHECK(req->nr_system != NULL);
	FUZZ_CHECK(strcmp(req->nr_system, NM_SYSTEM_X86) == 0 ||
	    strcmp(req->nr_system, NM_SYSTEM_ARM64) == 0);
	FUZZ_CHECK(!req->nr_shell || strstr(s, "shell") != NULL);
	for (i = 0; i < req->nr_npkgs; i++) {
		FUZZ_CHECK(fz_match(FZ_ATTR, req->nr_pkgs[i]));
		FUZZ_CHECK(strcmp(req->nr_pkgs[i], "shell") != 0);
		FUZZ_CHECK(strcmp(req->nr_pkgs[i], "arm64") != 0);
		if (i > 0)
			FUZZ_CHECK(strcmp(req->nr_pkgs[i - 1],
			    req->nr_pkgs[i]) < 0);
	}
	key = nix_request_key(req);
	FUZZ_CHECK(strncmp(key, req->nr_system, strlen(req->nr_system)) == 0);
	p = key + strlen(req->nr_system);
	FUZZ_CHECK(*p == '|');
	for (i = 0; i < req->nr_npkgs; i++) {
		p++;
		FUZZ_CHECK(strncmp(p, req->nr_pkgs[i],
		    strlen(req->nr_pkgs[i])) == 0);
		p += strlen(req->nr_pkgs[i]);
		if (i + 1 < req->nr_npkgs)
			FUZZ_CHECK(*p == ',');
	}
	FUZZ_CHECK(strcmp(p, req->nr_shell ? "|shell" : "") == 0);
	free(key);
}

/*
 * Parses s as a Nix image name; on success checks the request and that
 * the name rebuilt from it parses to the same key.
 */
static void
fz_nix(const char *s)
{
	struct nix_request	 req, again;
	char			*cause = NULL, *name, *key1, *key2, *tmp;
	size_t			 i;

	if (nix_name_parse(s, &req, &cause) != 0) {
		FUZZ_CHECK(cause != NULL);
		FUZZ_CHECK(req.nr_pkgs == NULL && req.nr_npkgs == 0);
		free(cause);
		return;
	}
	FUZZ_CHECK(cause == NULL);
	fz_request_check(s, &req);
	xasprintf(&name, "%s%s", strcmp(req.nr_system, NM_SYSTEM_ARM64) == 0 ?
	    "arm64" : "", req.nr_shell ? "/shell" : "");
	for (i = 0; i < req.nr_npkgs; i++) {
		xasprintf(&tmp, "%s/%s", name, req.nr_pkgs[i]);
		free(name);
		name = tmp;
	}
	FUZZ_CHECK(nix_name_parse(name + (name[0] == '/'), &again,
	    &cause) == 0);
	key1 = nix_request_key(&req);
	key2 = nix_request_key(&again);
	FUZZ_CHECK(strcmp(key1, key2) == 0);
	free(key1);
	free(key2);
	free(name);
	nix_request_clear(&again);
	nix_request_clear(&req);
	FUZZ_CHECK(req.nr_pkgs == NULL && req.nr_npkgs == 0);
}

/* One input: all validators and the Nix name parser on the same string. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	*s;

	fuzz_init();
	fz_compile();
	s = fuzz_string(data, size);
	fz_validators(s);
	fz_nix(s);
	free(s);
	return (0);
}
