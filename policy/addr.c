/*
 * policy/addr.c: where an upstream may send the mirror.  A redirect or a
 * token realm names another host; the mirror connects there only when the
 * address it resolved to fits the upstream's own: a public upstream never
 * sends it to a loopback, link-local (cloud metadata included), private or
 * unspecified address, and an upstream on such an address (a site
 * registry, a test on loopback) only to that same address.  Hosts listed
 * in the upstream's redirect_hosts are allowed as well.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <fnmatch.h>
#include <stdint.h>
#include <string.h>

#include "policy.h"

/* An IPv4 address in host order, from a v4 or a v4-mapped v6 address. */
static int
addr_v4(const struct sockaddr *sa, uint32_t *a)
{
	const struct sockaddr_in	*s4;
	const struct sockaddr_in6	*s6;
	const uint8_t			*b;

	if (sa->sa_family == AF_INET) {
		s4 = (const struct sockaddr_in *)(const void *)sa;
		*a = ntohl(s4->sin_addr.s_addr);
		return (1);
	}
	if (sa->sa_family != AF_INET6)
		return (0);
	s6 = (const struct sockaddr_in6 *)(const void *)sa;
	if (!IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		return (0);
	b = s6->sin6_addr.s6_addr + 12;
	*a = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
	    (uint32_t)b[2] << 8 | b[3];
	return (1);
}

/* Whether a/bits holds x. */
static int
in4(uint32_t x, uint32_t a, int bits)
{
	uint32_t	 mask = bits == 0 ? 0 : ~(uint32_t)0 << (32 - bits);

	return ((x & mask) == (a & mask));
}

/*
 * The class of an address that is not on the public internet, or NULL
 * for a public one (or one of an unknown family, which is refused).
 */
const char *
policy_addr_special(const struct sockaddr *sa)
{
	const struct sockaddr_in6	*s6;
	const uint8_t			*b;
	uint32_t			 a;

	if (addr_v4(sa, &a)) {
		if (in4(a, 0x7f000000, 8))
			return ("loopback");
		if (in4(a, 0xa9fe0000, 16))
			return ("link-local");
		if (in4(a, 0x0a000000, 8) || in4(a, 0xac100000, 12) ||
		    in4(a, 0xc0a80000, 16) || in4(a, 0x64400000, 10) ||
		    in4(a, 0xc6120000, 15))
			return ("private");
		if (in4(a, 0x00000000, 8))
			return ("unspecified");
		if (in4(a, 0xe0000000, 4) || in4(a, 0xf0000000, 4))
			return ("multicast or reserved");
		return (NULL);
	}
	if (sa->sa_family != AF_INET6)
		return ("unknown");
	s6 = (const struct sockaddr_in6 *)(const void *)sa;
	b = s6->sin6_addr.s6_addr;
	if (IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr))
		return ("loopback");
	if (IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr))
		return ("unspecified");
	if (IN6_IS_ADDR_LINKLOCAL(&s6->sin6_addr))
		return ("link-local");
	if ((b[0] & 0xfe) == 0xfc || IN6_IS_ADDR_SITELOCAL(&s6->sin6_addr))
		return ("private");
	if (b[0] == 0xff)
		return ("multicast or reserved");
	/* NAT64 and 6to4 embed IPv4 addresses: judge the embedded one. */
	if ((b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b) ||
	    (b[0] == 0x20 && b[1] == 0x02))
		return ("translated");
	return (NULL);
}

/* Whether two addresses are the same host (ports aside). */
int
policy_addr_same(const struct sockaddr *x, const struct sockaddr *y)
{
	const struct sockaddr_in6	*a6, *b6;
	uint32_t			 a, b;

	if (addr_v4(x, &a) && addr_v4(y, &b))
		return (a == b);
	if (x->sa_family != AF_INET6 || y->sa_family != AF_INET6)
		return (0);
	a6 = (const struct sockaddr_in6 *)(const void *)x;
	b6 = (const struct sockaddr_in6 *)(const void *)y;
	return (memcmp(&a6->sin6_addr, &b6->sin6_addr,
	    sizeof a6->sin6_addr) == 0);
}

/*
 * Whether an upstream whose own address is up (NULL: not known, taken as
 * public) may send the mirror to the address to: NULL, or why not.
 */
const char *
policy_hop_refused(const struct sockaddr *up, const struct sockaddr *to)
{
	static const char *const texts[][2] = {
		{ "loopback", "a loopback address" },
		{ "link-local", "a link-local address" },
		{ "private", "a private address" },
		{ "unspecified", "the unspecified address" },
		{ "multicast or reserved", "a multicast or reserved address" },
		{ "translated", "an address that translates to another" },
	};
	const char	*tcls;
	size_t		 i;

	if (up != NULL && policy_addr_special(up) != NULL)
		return (policy_addr_same(up, to) ? NULL : "not the upstream's "
		    "own address (an upstream on a non-public address may only "
		    "lead back to itself)");
	if ((tcls = policy_addr_special(to)) == NULL)
		return (NULL);
	for (i = 0; i < sizeof texts / sizeof texts[0]; i++)
		if (strcmp(tcls, texts[i][0]) == 0)
			return (texts[i][1]);
	return ("an address of an unknown kind");
}

/* Whether host is one of an upstream's redirect_hosts (globs). */
int
policy_hop_listed(const struct nm_upstream *up, const char *host)
{
	size_t	 i;

	for (i = 0; i < up->up_nredirect_hosts; i++)
		if (fnmatch(up->up_redirect_hosts[i], host, FNM_CASEFOLD) == 0)
			return (1);
	return (0);
}
