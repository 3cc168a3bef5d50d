/*
 * tests/test_validate.c: names, tags, digests, byte ranges, and where an
 * upstream's redirects may lead.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "policy/policy.h"

static int	passed, failed;

static void	check(int, const char *, const char *, int, int);
static void	check_range(const char *, uint64_t, int, uint64_t, uint64_t);
static char	*repeat(char *, int, size_t);
static void	test_name(void);
static void	test_tag(void);
static void	test_digest(void);
static void	test_range(void);
static void	test_hop(void);

/* Counts one check of fn(arg) against the expected result. */
static void
check(int got, const char *fn, const char *arg, int want, int line)
{
	if (got == want) {
		passed++;
		return;
	}
	failed++;
	printf("FAIL line %d: %s(\"%.80s\") = %d, want %d\n", line, fn, arg,
	    got, want);
}

#define NAME(s, w)	check(policy_name_valid(s), "name", s, w, __LINE__)
#define TAG(s, w)	check(policy_tag_valid(s), "tag", s, w, __LINE__)
#define DIG(s, w)	check(policy_digest_valid(s), "digest", s, w, __LINE__)
#define LIKE(s, w)	check(policy_digest_like(s), "like", s, w, __LINE__)

/* Counts one range check: result code and, when OK, the bounds. */
static void
check_range(const char *hdr, uint64_t size, int want, uint64_t ws,
    uint64_t we)
{
	uint64_t	 s = 12345, e = 12345;
	int		 r;

	r = policy_range_parse(hdr, size, &s, &e);
	if (r == want && (r != POLICY_RANGE_OK || (s == ws && e == we))) {
		passed++;
		return;
	}
	failed++;
	printf("FAIL range(\"%s\", %" PRIu64 ") = %d [%" PRIu64 ",%" PRIu64
	    "], want %d [%" PRIu64 ",%" PRIu64 "]\n", hdr ? hdr : "(null)",
	    size, r, s, e, want, ws, we);
}

/* Fills buf with n copies of c and a NUL. */
static char *
repeat(char *buf, int c, size_t n)
{
	memset(buf, c, n);
	buf[n] = '\0';
	return (buf);
}

/* Repository names. */
static void
test_name(void)
{
	char	buf[512];

	NAME("a", 1);
	NAME("nix/shell/git", 1);
	NAME("library/ubuntu", 1);
	NAME("a.b_c__d-e--f/g0", 1);
	NAME("nix/arm64/shell/haskellpackages.pandoc", 1);
	NAME("0/9", 1);
	NAME("a---b", 1);
	NAME("", 0);
	NAME("A", 0);
	NAME("nix/Git", 0);
	NAME("../x", 0);
	NAME("a/../b", 0);
	NAME("a/./b", 0);
	NAME("a..b", 0);
	NAME("a//b", 0);
	NAME("/a", 0);
	NAME("a/", 0);
	NAME(".a", 0);
	NAME("a.", 0);
	NAME("a_", 0);
	NAME("-a", 0);
	NAME("a-", 0);
	NAME("a___b", 0);
	NAME("a._b", 0);
	NAME("a b", 0);
	NAME("a:b", 0);
	NAME("a\\b", 0);
	NAME("caf\xc3\xa9", 0);
	NAME("a\xff", 0);
	NAME("a\n", 0);
	check(policy_name_valid(NULL), "name", "(null)", 0, __LINE__);
	NAME(repeat(buf, 'a', 255), 1);
	NAME(repeat(buf, 'a', 256), 0);
	repeat(buf, 'a', 255);
	buf[100] = '/';
	NAME(buf, 1);
	NAME(repeat(buf, 'a', 500), 0);
}

/* Tags. */
static void
test_tag(void)
{
	char	buf[256];

	TAG("latest", 1);
	TAG("v1.2.3", 1);
	TAG("_x", 1);
	TAG("A-b_c.D", 1);
	TAG("0123456789abcdef0123456789abcdef01234567", 1);
	TAG("", 0);
	TAG(".x", 0);
	TAG("-x", 0);
	TAG("a/b", 0);
	TAG("a:b", 0);
	TAG("a b", 0);
	TAG("sha256:abc", 0);
	TAG("t\xc3\xa9", 0);
	check(policy_tag_valid(NULL), "tag", "(null)", 0, __LINE__);
	TAG(repeat(buf, 'a', 128), 1);
	TAG(repeat(buf, 'a', 129), 0);
}

/* Digests: valid, and shaped like one. */
static void
test_digest(void)
{
	char	buf[160], hex[65];

	repeat(hex, 'a', 64);
	memcpy(hex, "0123456789abcdef", 16);
	snprintf(buf, sizeof buf, "sha256:%s", hex);
	DIG(buf, 1);
	LIKE(buf, 1);
	DIG("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b"
	    "7852b855", 1);
	buf[7] = 'A';
	DIG(buf, 0);
	LIKE(buf, 1);
	buf[7] = 'g';
	DIG(buf, 0);
	LIKE(buf, 1);
	snprintf(buf, sizeof buf, "sha256:%.63s", hex);
	DIG(buf, 0);
	LIKE(buf, 1);
	snprintf(buf, sizeof buf, "sha256:%sa", hex);
	DIG(buf, 0);
	LIKE(buf, 1);
	snprintf(buf, sizeof buf, "SHA256:%s", hex);
	DIG(buf, 0);
	LIKE(buf, 0);
	snprintf(buf, sizeof buf, "sha512:%s%s", hex, hex);
	DIG(buf, 0);
	LIKE(buf, 1);
	snprintf(buf, sizeof buf, "sha256%s", hex);
	DIG(buf, 0);
	LIKE(buf, 0);
	DIG("sha256:", 0);
	LIKE("sha256:", 0);
	DIG("", 0);
	LIKE("", 0);
	check(policy_digest_valid(NULL), "digest", "(null)", 0, __LINE__);
	check(policy_digest_like(NULL), "like", "(null)", 0, __LINE__);
	LIKE("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
	    1);
	LIKE("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", 1);
	LIKE("a.b_c-d:x=", 1);
	LIKE("latest", 0);
	LIKE("v1.0", 0);
	LIKE(":abc", 0);
	LIKE("sha256::abc", 0);
	LIKE("sha256:ab:c", 0);
	LIKE("sha256:ab/c", 0);
	LIKE("sha256:ab.c", 0);
	LIKE("sha256:ab+c", 0);
	LIKE("Sha256:abc", 0);
	LIKE("sha__256:abc", 0);
	LIKE("sha256-:abc", 0);
	LIKE("-sha256:abc", 0);
}

/* Byte ranges of RFC 7233. */
static void
test_range(void)
{
	check_range("bytes=0-0", 10, POLICY_RANGE_OK, 0, 0);
	check_range("bytes=0-9", 10, POLICY_RANGE_OK, 0, 9);
	check_range("bytes=2-5", 10, POLICY_RANGE_OK, 2, 5);
	check_range("bytes=0-100", 10, POLICY_RANGE_OK, 0, 9);
	check_range("bytes=5-", 10, POLICY_RANGE_OK, 5, 9);
	check_range("bytes=9-", 10, POLICY_RANGE_OK, 9, 9);
	check_range("bytes=-3", 10, POLICY_RANGE_OK, 7, 9);
	check_range("bytes=-10", 10, POLICY_RANGE_OK, 0, 9);
	check_range("bytes=-11", 10, POLICY_RANGE_OK, 0, 9);
	check_range("bytes=-1", 1, POLICY_RANGE_OK, 0, 0);
	check_range("  bytes=1-2\t", 10, POLICY_RANGE_OK, 1, 2);
	check_range("bytes = 1 - 2", 10, POLICY_RANGE_OK, 1, 2);
	check_range("Bytes=1-2", 10, POLICY_RANGE_OK, 1, 2);
	check_range("bytes=0-18446744073709551615", 10, POLICY_RANGE_OK, 0, 9);
	check_range("bytes=-18446744073709551615", 10, POLICY_RANGE_OK, 0, 9);
	check_range("bytes=4294967296-", UINT64_C(8589934592),
	    POLICY_RANGE_OK, UINT64_C(4294967296), UINT64_C(8589934591));

	check_range("bytes=10-", 10, POLICY_RANGE_UNSAT, 0, 0);
	check_range("bytes=999-", 10, POLICY_RANGE_UNSAT, 0, 0);
	check_range("bytes=10-20", 10, POLICY_RANGE_UNSAT, 0, 0);
	check_range("bytes=-0", 10, POLICY_RANGE_UNSAT, 0, 0);
	check_range("bytes=0-0", 0, POLICY_RANGE_UNSAT, 0, 0);
	check_range("bytes=0-", 0, POLICY_RANGE_UNSAT, 0, 0);
	check_range("bytes=-5", 0, POLICY_RANGE_UNSAT, 0, 0);
	check_range("bytes=18446744073709551615-", 10, POLICY_RANGE_UNSAT,
	    0, 0);

	check_range(NULL, 10, POLICY_RANGE_NONE, 0, 0);
	check_range("", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("bytes=10-5", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("bytes=10-5", 100, POLICY_RANGE_NONE, 0, 0);
	check_range("bytes=0-1,3-4", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("bytes=0-1,", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("bytes=0-18446744073709551616", 10, POLICY_RANGE_NONE,
	    0, 0);
	check_range("bytes=99999999999999999999999-", 10, POLICY_RANGE_NONE,
	    0, 0);
	check_range("bytes=-99999999999999999999999", 10, POLICY_RANGE_NONE,
	    0, 0);
	check_range("bytes=", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("bytes=-", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("bytes=1", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("bytes=a-b", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("bytes=1-2x", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("bytes=+1-2", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("bytes=1--2", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("bytes=--2", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("bytes 0-1", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("bytesx=0-1", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("items=0-1", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("=0-1", 10, POLICY_RANGE_NONE, 0, 0);
	check_range("bytes=0x1-2", 10, POLICY_RANGE_NONE, 0, 0);
}

/* An address of either family from its text. */
static struct sockaddr_storage *
addr(struct sockaddr_storage *ss, const char *text)
{
	struct sockaddr_in	*s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6	*s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof *ss);
	if (inet_pton(AF_INET, text, &s4->sin_addr) == 1)
		s4->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, text, &s6->sin6_addr) == 1)
		s6->sin6_family = AF_INET6;
	else {
		printf("FAIL: bad test address %s\n", text);
		failed++;
	}
	return (ss);
}

/* Whether an upstream at up (NULL: unknown) may send the mirror to to. */
static void
check_hop(const char *up, const char *to, int want, int line)
{
	struct sockaddr_storage	 u, t;
	const char		*why;
	char			 arg[128];

	why = policy_hop_refused(up != NULL ?
	    (struct sockaddr *)addr(&u, up) : NULL, (struct sockaddr *)addr(&t,
	    to));
	snprintf(arg, sizeof arg, "%s -> %s", up != NULL ? up : "?", to);
	check(why == NULL, "hop allowed", arg, want, line);
}

#define HOP(u, t, w)	check_hop(u, t, w, __LINE__)
#define SPECIAL(a, w)	do {						\
	struct sockaddr_storage ss_;					\
	check(policy_addr_special((struct sockaddr *)addr(&ss_, a)) !=	\
	    NULL, "special", a, w, __LINE__);				\
} while (0)

/* Redirects and token realms: which addresses an upstream may lead to. */
static void
test_hop(void)
{
	SPECIAL("127.0.0.1", 1);
	SPECIAL("127.255.0.9", 1);
	SPECIAL("10.1.2.3", 1);
	SPECIAL("172.16.0.1", 1);
	SPECIAL("172.32.0.1", 0);
	SPECIAL("192.168.1.1", 1);
	SPECIAL("169.254.169.254", 1);
	SPECIAL("100.64.0.1", 1);
	SPECIAL("0.0.0.0", 1);
	SPECIAL("224.0.0.1", 1);
	SPECIAL("255.255.255.255", 1);
	SPECIAL("8.8.8.8", 0);
	SPECIAL("1.1.1.1", 0);
	SPECIAL("::1", 1);
	SPECIAL("::", 1);
	SPECIAL("fe80::1", 1);
	SPECIAL("fd00::1", 1);
	SPECIAL("ff02::1", 1);
	SPECIAL("::ffff:127.0.0.1", 1);
	SPECIAL("::ffff:10.0.0.1", 1);
	SPECIAL("::ffff:8.8.8.8", 0);
	SPECIAL("64:ff9b::7f00:1", 1);
	SPECIAL("2002:7f00:1::", 1);
	SPECIAL("2606:4700::1111", 0);

	/* A public upstream leads only to public addresses. */
	HOP("8.8.8.8", "1.1.1.1", 1);
	HOP("8.8.8.8", "2606:4700::1111", 1);
	HOP("8.8.8.8", "127.0.0.1", 0);
	HOP("8.8.8.8", "169.254.169.254", 0);
	HOP("8.8.8.8", "10.0.0.1", 0);
	HOP("8.8.8.8", "::1", 0);
	HOP("8.8.8.8", "::ffff:169.254.169.254", 0);
	HOP("8.8.8.8", "fd12::1", 0);
	/* So does one whose address is not known yet. */
	HOP(NULL, "1.1.1.1", 1);
	HOP(NULL, "192.168.0.1", 0);
	/* A non-public upstream leads only back to itself. */
	HOP("127.0.0.1", "127.0.0.1", 1);
	HOP("127.0.0.1", "::ffff:127.0.0.1", 1);
	HOP("127.0.0.1", "127.0.0.2", 0);
	HOP("127.0.0.1", "1.1.1.1", 0);
	HOP("10.0.0.5", "10.0.0.5", 1);
	HOP("10.0.0.5", "10.0.0.6", 0);
	HOP("10.0.0.5", "169.254.169.254", 0);
	HOP("::1", "::1", 1);
	HOP("::1", "127.0.0.1", 0);
}

int
main(void)
{
	test_name();
	test_tag();
	test_digest();
	test_range();
	test_hop();
	printf("test_validate: %d passed, %d failed\n", passed, failed);
	return (failed != 0);
}
