/*
 * tests/test_peer.c: the owner of a digest among the replicas (proxy/
 * peer.c): every replica computes the same order, the owners spread
 * evenly, a replica is never its own source, the next choices walk the
 * whole list, removing a replica moves only the digests it owned, and
 * bad lists are refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nixmirror.h"
#include "proxy/proxy.h"

#define NDIGESTS	3000

struct nm_config	*nm_conf;
static int		 npass, nfail;

#define CHECK(c, what) do {						\
	if (c)								\
		npass++;						\
	else {								\
		nfail++;						\
		printf("FAIL line %d: %s\n", __LINE__, what);		\
	}								\
} while (0)

static const char *const urls[] = {
	"http://10.0.0.1:5000", "http://10.0.0.2:5000", "http://10.0.0.3:5000",
};

/* Reads a peer list as replica self; 0 or -1. */
static int
peers(const char *list, const char *self)
{
	char	*cause = NULL;
	int	 rc;

	nm_conf->cf_peers = list != NULL ? xstrdup(list) : NULL;
	nm_conf->cf_peer_self = self != NULL ? xstrdup(self) : NULL;
	rc = proxy_peers_init(&cause);
	free(nm_conf->cf_peers);
	free(nm_conf->cf_peer_self);
	free(cause);
	return (rc);
}

/* The owner of digest i (0, 1, 2), as replica self sees it. */
static int
owner(int i, int self)
{
	const struct nm_upstream	*up;
	char				 d[NM_DIGEST_SIZE], text[32];
	int				 k;

	snprintf(text, sizeof text, "blob %d", i);
	nm_sha256_digest(text, strlen(text), d);
	if ((up = proxy_peer_source(d, 0)) == NULL)
		return (self);
	for (k = 0; k < 3; k++)
		if (strcmp(up->up_url, urls[k]) == 0)
			return (k);
	return (-1);
}

int
main(void)
{
	static int	 own[3][NDIGESTS];
	const struct nm_upstream *a, *b, *c;
	char		 list[256], d[NM_DIGEST_SIZE];
	int		 i, s, count[3] = { 0, 0, 0 }, moved = 0, agree = 1;

	log_init(0);
	nm_conf = xcalloc(1, sizeof *nm_conf);
	nm_conf->cf_listen = xstrdup("10.0.0.2:5000");
	snprintf(list, sizeof list, "%s,%s,%s", urls[0], urls[1], urls[2]);

	CHECK(peers(NULL, NULL) == 0 && proxy_peer_source("sha256:0", 0) ==
	    NULL, "no peers: always the upstream");
	CHECK(peers("http://10.0.0.1:5000,ftp://x:1", NULL) == -1,
	    "a URL that is not http://HOST:PORT is refused");
	CHECK(peers("http://10.0.0.1:5000,http://u@x:1", NULL) == -1,
	    "credentials in a peer URL are refused");
	CHECK(peers(list, "http://10.0.0.9:5000") == -1,
	    "a list without this replica is refused");
	CHECK(peers(list, NULL) == 0, "this replica found by --listen");

	for (s = 0; s < 3; s++) {
		CHECK(peers(list, urls[s]) == 0, "the list as each replica");
		for (i = 0; i < NDIGESTS; i++)
			own[s][i] = owner(i, s);
	}
	for (i = 0; i < NDIGESTS; i++) {
		if (own[0][i] != own[1][i] || own[1][i] != own[2][i])
			agree = 0;
		if (own[0][i] >= 0)
			count[own[0][i]]++;
	}
	CHECK(agree, "every replica picks the same owner");
	for (s = 0; s < 3; s++)
		CHECK(count[s] > NDIGESTS / 4 && count[s] < NDIGESTS * 5 / 12,
		    "owners spread evenly (each a quarter to five twelfths)");

	/* The choices after the owner: the others, then this replica. */
	CHECK(peers(list, urls[0]) == 0, "the list as replica 0");
	nm_sha256_digest("walk", 4, d);
	a = proxy_peer_source(d, 0);
	b = proxy_peer_source(d, 1);
	c = proxy_peer_source(d, 2);
	CHECK((a == NULL) + (b == NULL) + (c == NULL) == 1,
	    "exactly one choice is this replica itself");
	CHECK(proxy_peer_source(d, 3) == NULL, "past the list: the upstream");
	CHECK((a == NULL || b == NULL || a != b) && (b == NULL || c == NULL ||
	    b != c) && (a == NULL || c == NULL || a != c),
	    "the choices are distinct replicas");

	/* Without replica 2, only the digests it owned move. */
	snprintf(list, sizeof list, "%s,%s", urls[0], urls[1]);
	CHECK(peers(list, urls[0]) == 0, "the list without replica 2");
	for (i = 0; i < NDIGESTS; i++)
		if (own[0][i] != 2 && owner(i, 0) != own[0][i])
			moved++;
	CHECK(moved == 0, "removing a replica moves only its digests");
	free(nm_conf->cf_listen);
	free(nm_conf);
	printf("%d passed, %d failed\n", npass, nfail);
	return (nfail == 0 ? 0 : 1);
}
