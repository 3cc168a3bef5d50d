/*
 * tests/test_name.c: Nix image names to requests and request keys.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nix/nix.h"

static int	passed, failed;

static void	ok(int, const char *, int);
static void	check_key(const char *, const char *, int, int);
static void	check_bad(const char *, const char *, int);
static void	test_good(void);
static void	test_order(void);
static void	test_bad(void);
static void	test_limits(void);
static void	test_key(void);

/* Counts one check. */
static void
ok(int cond, const char *what, int line)
{
	if (cond) {
		passed++;
		return;
	}
	failed++;
	printf("FAIL line %d: %s\n", line, what);
}

/* Parses name and compares its key and shell flag with the expected ones. */
static void
check_key(const char *name, const char *want, int shell, int line)
{
	struct nix_request	 req;
	char			*cause = NULL, *key;

	if (nix_name_parse(name, &req, &cause) != 0) {
		failed++;
		printf("FAIL line %d: \"%s\": %s\n", line, name, cause);
		free(cause);
		return;
	}
	key = nix_request_key(&req);
	if (strcmp(key, want) == 0 && req.nr_shell == shell && cause == NULL)
		passed++;
	else {
		failed++;
		printf("FAIL line %d: \"%s\" gives \"%s\" shell %d, want "
		    "\"%s\" shell %d\n", line, name, key, req.nr_shell, want,
		    shell);
	}
	free(key);
	nix_request_clear(&req);
}

/* Parses a bad name: must fail with a cause that contains text. */
static void
check_bad(const char *name, const char *text, int line)
{
	struct nix_request	 req;
	char			*cause = NULL;

	if (nix_name_parse(name, &req, &cause) == 0) {
		failed++;
		printf("FAIL line %d: \"%.60s\" accepted\n", line, name);
		nix_request_clear(&req);
		return;
	}
	if (cause != NULL && strstr(cause, text) != NULL &&
	    req.nr_pkgs == NULL && req.nr_npkgs == 0)
		passed++;
	else {
		failed++;
		printf("FAIL line %d: \"%.60s\": cause \"%s\", want \"%s\"\n",
		    line, name, cause ? cause : "(null)", text);
	}
	free(cause);
}

#define KEY(n, k, s)	check_key(n, k, s, __LINE__)
#define BAD(n, t)	check_bad(n, t, __LINE__)

/* Plain, meta and nested names. */
static void
test_good(void)
{
	struct nix_request	 req;
	char			*cause = NULL;
	int			 r;

	KEY("git", "x86_64-linux|git", 0);
	KEY("shell", "x86_64-linux|bashInteractive,coreutils,moreutils,nano|shell",
	    1);
	KEY("shell/git/htop", "x86_64-linux|bashInteractive,coreutils,git,"
	    "htop,moreutils,nano|shell",
	    1);
	KEY("arm64/git", "aarch64-linux|git", 0);
	KEY("git/arm64", "aarch64-linux|git", 0);
	KEY("arm64/shell/haskellpackages.pandoc", "aarch64-linux|"
	    "bashInteractive,coreutils,haskellpackages.pandoc,moreutils,nano|shell",
	    1);
	KEY("python3packages.numpy/python3", "x86_64-linux|python3,"
	    "python3packages.numpy", 0);
	KEY("_x/a-b/a_b/0ad", "x86_64-linux|0ad,_x,a-b,a_b", 0);
	KEY("shell.foo", "x86_64-linux|shell.foo", 0);
	KEY("arm64x", "x86_64-linux|arm64x", 0);
	KEY("coreutils/shell", "x86_64-linux|bashInteractive,coreutils,"
	    "moreutils,nano|shell",
	    1);

	r = nix_name_parse("arm64/shell/git", &req, &cause);
	ok(r == 0, "arm64/shell/git parses", __LINE__);
	ok(req.nr_npkgs == 5, "five packages", __LINE__);
	ok(req.nr_shell == 1, "shell flag", __LINE__);
	ok(req.nr_system != NULL && strcmp(req.nr_system, NM_SYSTEM_ARM64) ==
	    0, "arm64 system", __LINE__);
	ok(req.nr_npkgs == 5 && strcmp(req.nr_pkgs[0], "bashInteractive") ==
	    0 && strcmp(req.nr_pkgs[2], "git") == 0 &&
	    strcmp(req.nr_pkgs[4], "nano") == 0, "sorted list", __LINE__);
	nix_request_clear(&req);
	ok(req.nr_pkgs == NULL && req.nr_npkgs == 0, "clear zeroes",
	    __LINE__);
	nix_request_clear(&req);	/* twice is harmless */

	r = nix_name_parse("git", &req, &cause);
	ok(r == 0 && strcmp(req.nr_system, NM_SYSTEM_X86) == 0 &&
	    req.nr_shell == 0, "x86 by default", __LINE__);
	nix_request_clear(&req);
}

/* Order and duplicates never change the request. */
static void
test_order(void)
{
	KEY("a/b", "x86_64-linux|a,b", 0);
	KEY("b/a", "x86_64-linux|a,b", 0);
	KEY("b/a/b/a/a", "x86_64-linux|a,b", 0);
	KEY("htop/shell/git", "x86_64-linux|bashInteractive,coreutils,git,"
	    "htop,moreutils,nano|shell",
	    1);
	KEY("git/htop/shell/shell", "x86_64-linux|bashInteractive,coreutils,"
	    "git,htop,moreutils,nano|shell",
	    1);
	KEY("arm64/arm64/nano/shell", "aarch64-linux|bashInteractive,"
	    "coreutils,moreutils,nano|shell",
	    1);
	KEY("z.b/z/z.a", "x86_64-linux|z,z.a,z.b", 0);
}

/* Bad components are refused with a cause that names them. */
static void
test_bad(void)
{
	BAD("", "no packages named");
	BAD("arm64", "no packages named");
	BAD("arm64/arm64", "no packages named");
	BAD("a//b", "empty component");
	BAD("/a", "empty component");
	BAD("a/", "empty component");
	BAD("a..b", "\"a..b\"");
	BAD("a..b", "empty attribute path element");
	BAD(".a", "\".a\"");
	BAD("a.", "\"a.\"");
	BAD(".", "\".\"");
	BAD("a/../b", "\"..\"");
	BAD("../x", "\"..\"");
	BAD("git/-rf", "invalid attribute \"-rf\"");
	BAD("a.-b", "invalid attribute \"-b\"");
	BAD("a b", "\"a b\"");
	BAD("a\"b", "invalid attribute");
	BAD("a'b", "invalid attribute");
	BAD("a$b", "invalid attribute");
	BAD("a;b", "invalid attribute");
	BAD("a\\b", "invalid attribute");
	BAD("a:b", "invalid attribute");
	BAD("a${b}", "invalid attribute");
	BAD("caf\xc3\xa9", "invalid attribute");
	BAD("git/ok/x y", "\"x y\"");
}

/* At most 30 elements per attribute path and 64 packages per image. */
static void
test_limits(void)
{
	struct nix_request	 req;
	char			 buf[1024], *cause = NULL;
	size_t			 i, len;

	len = 0;
	for (i = 0; i < 30; i++)
		len += snprintf(buf + len, sizeof buf - len, "%sa", i ? "." :
		    "");
	KEY(buf, "x86_64-linux|a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a."
	    "a.a.a.a.a.a.a.a", 0);
	snprintf(buf + len, sizeof buf - len, ".a");
	BAD(buf, "more than 30");

	len = 0;
	for (i = 0; i < 64; i++)
		len += snprintf(buf + len, sizeof buf - len, "%sp%zu",
		    i ? "/" : "", i);
	KEY(buf, "x86_64-linux|p0,p1,p10,p11,p12,p13,p14,"
	    "p15,p16,p17,p18,p19,p2,p20,p21,p22,p23,p24,p25,p26,p27,p28,p29,"
	    "p3,p30,p31,p32,p33,p34,p35,p36,p37,p38,p39,p4,p40,p41,p42,p43,"
	    "p44,p45,p46,p47,p48,p49,p5,p50,p51,p52,p53,p54,p55,p56,p57,p58,"
	    "p59,p6,p60,p61,p62,p63,p7,p8,p9", 0);
	/* Duplicates do not count towards the limit. */
	snprintf(buf + len, sizeof buf - len, "/p0/p63/arm64");
	ok(nix_name_parse(buf, &req, &cause) == 0 && req.nr_npkgs == 64 &&
	    strcmp(req.nr_system, NM_SYSTEM_ARM64) == 0,
	    "64 unique of 66 accepted", __LINE__);
	nix_request_clear(&req);
	free(cause);
	snprintf(buf + len, sizeof buf - len, "/p64");
	BAD(buf, "too many packages");
	/* 61 packages plus the four of shell is 65. */
	len = 0;
	for (i = 0; i < 61; i++)
		len += snprintf(buf + len, sizeof buf - len, "p%zu/", i);
	snprintf(buf + len, sizeof buf - len, "shell");
	BAD(buf, "too many packages");
}

/* Keys of requests built by hand. */
static void
test_key(void)
{
	struct nix_request	 req;
	char			*pkgs[] = {
		"git", "bashInteractive", "coreutils"
	};
	char			*key;

	memset(&req, 0, sizeof req);
	req.nr_pkgs = pkgs;
	req.nr_npkgs = 3;
	req.nr_system = NM_SYSTEM_X86;
	key = nix_request_key(&req);
	ok(strcmp(key, "x86_64-linux|bashInteractive,coreutils,git") == 0,
	    "key of an unsorted list is sorted", __LINE__);
	free(key);
	ok(strcmp(pkgs[0], "git") == 0, "key leaves the list alone",
	    __LINE__);
	req.nr_npkgs = 0;
	req.nr_system = NM_SYSTEM_ARM64;
	key = nix_request_key(&req);
	ok(strcmp(key, "aarch64-linux|") == 0, "key of no packages",
	    __LINE__);
	free(key);
}

int
main(void)
{
	test_good();
	test_order();
	test_bad();
	test_limits();
	test_key();
	printf("test_name: %d passed, %d failed\n", passed, failed);
	return (failed != 0);
}
