/*
 * tests/test_layer.c: dominators, popularity and grouping closures into
 * layers, and the SBOM of a closure.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nix/nix.h"

#define MIB		(1024ULL * 1024)
#define CHAIN		20000

static int	passed, failed;

static void	check(int, int, const char *, ...) NM_PRINTF(3, 4);
static void	graph_idom(size_t, const size_t (*)[2], size_t,
		    const size_t *, const char *);
static void	cl_init(struct nix_closure *, size_t, const char *const *,
		    const uint64_t *);
static void	cl_ref(struct nix_closure *, size_t, size_t);
static void	cl_roots(struct nix_closure *, const size_t *, size_t);
static void	cl_free(struct nix_closure *);
static int	lay_find(const struct nix_layering *, size_t);
static int	lay_is(const struct nix_layering *, const size_t *, size_t);
static int	lay_partition(const struct nix_closure *,
		    const struct nix_layering *);
static int	lay_equal(const struct nix_layering *,
		    const struct nix_layering *);
static char	*write_tmp(const char *);
static void	test_dominators(void);
static void	test_shared(void);
static void	test_budget(void);
static void	test_popularity(void);
static void	test_large(void);
static void	test_determinism(void);
static void	*chain_thread(void *);
static void	test_chain(void);
static void	test_malformed(void);
static void	test_sbom(void);
static void	test_stable(void);

/* Counts one check and prints a line when it failed. */
static void
check(int ok, int line, const char *fmt, ...)
{
	va_list	ap;

	if (ok) {
		passed++;
		return;
	}
	failed++;
	printf("FAIL line %d: ", line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

#define CHECK(e)	check((e), __LINE__, "%s", #e)

/* Runs nix_dominators on an edge list and compares with want. */
static void
graph_idom(size_t n, const size_t (*edges)[2], size_t nedges,
    const size_t *want, const char *what)
{
	size_t	**succ, *nsucc, *idom, i;
	int	 ok = 1;

	succ = xcalloc(n, sizeof *succ);
	nsucc = xcalloc(n, sizeof *nsucc);
	for (i = 0; i < n; i++)
		succ[i] = xcalloc(nedges, sizeof **succ);
	for (i = 0; i < nedges; i++)
		succ[edges[i][0]][nsucc[edges[i][0]]++] = edges[i][1];
	idom = xcalloc(n, sizeof *idom);
	nix_dominators(n, succ, nsucc, idom);
	for (i = 0; i < n; i++) {
		if (idom[i] != want[i]) {
			ok = 0;
			check(0, __LINE__, "%s: idom[%zu] = %zu, want %zu",
			    what, i, idom[i], want[i]);
		}
	}
	if (ok)
		passed++;
	for (i = 0; i < n; i++)
		free(succ[i]);
	free(succ);
	free(nsucc);
	free(idom);
}

/* Makes a closure of n paths; the hash is the index, so it is sorted. */
static void
cl_init(struct nix_closure *c, size_t n, const char *const *names,
    const uint64_t *sizes)
{
	size_t	i;

	memset(c, 0, sizeof *c);
	c->nc_paths = xcalloc(n, sizeof *c->nc_paths);
	c->nc_npaths = n;
	for (i = 0; i < n; i++) {
		xasprintf(&c->nc_paths[i].np_path, "/nix/store/%032zu-%s", i,
		    names != NULL ? names[i] : "p");
		c->nc_paths[i].np_narsize = sizes != NULL ? sizes[i] : 1000;
	}
}

/* Adds a reference from path a to path b. */
static void
cl_ref(struct nix_closure *c, size_t a, size_t b)
{
	struct nix_path	*np = &c->nc_paths[a];

	np->np_refs = xreallocarray(np->np_refs, np->np_nrefs + 1,
	    sizeof *np->np_refs);
	np->np_refs[np->np_nrefs++] = b;
}

/* Sets the top-level paths. */
static void
cl_roots(struct nix_closure *c, const size_t *roots, size_t n)
{
	free(c->nc_roots);
	c->nc_roots = xcalloc(n, sizeof *c->nc_roots);
	memcpy(c->nc_roots, roots, n * sizeof *roots);
	c->nc_nroots = n;
}

/* Frees what cl_init and friends allocated. */
static void
cl_free(struct nix_closure *c)
{
	size_t	i;

	for (i = 0; i < c->nc_npaths; i++) {
		free(c->nc_paths[i].np_path);
		free(c->nc_paths[i].np_refs);
	}
	free(c->nc_paths);
	free(c->nc_roots);
}

/* The layer holding path p, or -1. */
static int
lay_find(const struct nix_layering *l, size_t p)
{
	size_t	i, j;

	for (i = 0; i < l->nl_nlayers; i++)
		for (j = 0; j < l->nl_layers[i].nl_npaths; j++)
			if (l->nl_layers[i].nl_paths[j] == p)
				return ((int)i);
	return (-1);
}

/* Whether some layer holds exactly the sorted paths want. */
static int
lay_is(const struct nix_layering *l, const size_t *want, size_t n)
{
	const struct nix_layer	*ly;
	int			 i;

	if ((i = lay_find(l, want[0])) == -1)
		return (0);
	ly = &l->nl_layers[i];
	return (ly->nl_npaths == n &&
	    memcmp(ly->nl_paths, want, n * sizeof *want) == 0);
}

/*
 * Whether every path is in exactly one layer, each layer's paths are
 * sorted and its size is the sum of their narsize.
 */
static int
lay_partition(const struct nix_closure *c, const struct nix_layering *l)
{
	const struct nix_layer	*ly;
	size_t			*seen, i, j;
	uint64_t		 size;
	int			 ok = 1;

	seen = xcalloc(c->nc_npaths, sizeof *seen);
	for (i = 0; i < l->nl_nlayers; i++) {
		ly = &l->nl_layers[i];
		size = 0;
		for (j = 0; j < ly->nl_npaths; j++) {
			if (ly->nl_paths[j] >= c->nc_npaths ||
			    (j > 0 && ly->nl_paths[j] <= ly->nl_paths[j - 1]))
				ok = 0;
			else {
				seen[ly->nl_paths[j]]++;
				size += c->nc_paths[ly->nl_paths[j]].np_narsize;
			}
		}
		if (ly->nl_npaths == 0 || size != ly->nl_size)
			ok = 0;
	}
	for (i = 0; i < c->nc_npaths; i++)
		if (seen[i] != 1)
			ok = 0;
	free(seen);
	return (ok);
}

/* Whether two layerings are the same in every field. */
static int
lay_equal(const struct nix_layering *a, const struct nix_layering *b)
{
	const struct nix_layer	*la, *lb;
	size_t			 i;

	if (a->nl_nlayers != b->nl_nlayers)
		return (0);
	for (i = 0; i < a->nl_nlayers; i++) {
		la = &a->nl_layers[i];
		lb = &b->nl_layers[i];
		if (la->nl_npaths != lb->nl_npaths ||
		    la->nl_size != lb->nl_size ||
		    la->nl_rating != lb->nl_rating ||
		    memcmp(la->nl_paths, lb->nl_paths,
		    la->nl_npaths * sizeof *la->nl_paths) != 0)
			return (0);
	}
	return (1);
}

/* Writes text to a new temporary file and returns its name. */
static char *
write_tmp(const char *text)
{
	char	*name;
	int	 fd;

	name = xstrdup("/tmp/test_layer.XXXXXX");
	if ((fd = mkstemp(name)) == -1)
		fatal("mkstemp");
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		fatal("write");
	close(fd);
	return (name);
}

/* Textbook graphs with known immediate dominators. */
static void
test_dominators(void)
{
	static const size_t diamond[][2] = { {0, 1}, {0, 2}, {1, 3}, {2, 3} };
	static const size_t diamond_w[] = { 0, 0, 0, 0 };
	static const size_t chain[][2] = { {0, 1}, {1, 2}, {2, 3} };
	static const size_t chain_w[] = { 0, 0, 1, 2 };
	static const size_t loop[][2] = {
		{0, 1}, {1, 2}, {2, 3}, {3, 1}, {2, 4}, {4, 4} };
	static const size_t loop_w[] = { 0, 0, 1, 2, 2 };
	/* Cooper, Harvey and Kennedy's irreducible example (fig. 4). */
	static const size_t chk[][2] = {
		{0, 1}, {0, 2}, {1, 3}, {2, 4}, {2, 5}, {3, 4}, {4, 3},
		{4, 5}, {5, 4} };
	static const size_t chk_w[] = { 0, 0, 0, 0, 0, 0 };
	/* Lengauer and Tarjan's example: R=0, A..L = 1..12. */
	static const size_t lt[][2] = {
		{0, 1}, {0, 2}, {0, 3}, {1, 4}, {2, 1}, {2, 4}, {2, 5},
		{3, 6}, {3, 7}, {4, 12}, {5, 8}, {6, 9}, {7, 9}, {7, 10},
		{8, 5}, {8, 11}, {9, 11}, {10, 9}, {11, 9}, {11, 0},
		{12, 8} };
	static const size_t lt_w[] = {
		0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 7, 0, 4 };
	static const size_t unreach[][2] = { {0, 1}, {2, 1}, {2, 3}, {3, 2} };
	static const size_t unreach_w[] = { 0, 0, SIZE_MAX, SIZE_MAX };

	graph_idom(4, diamond, 4, diamond_w, "diamond");
	graph_idom(4, chain, 3, chain_w, "chain");
	graph_idom(5, loop, 6, loop_w, "loop");
	graph_idom(6, chk, 9, chk_w, "chk");
	graph_idom(13, lt, 21, lt_w, "lengauer-tarjan");
	graph_idom(4, unreach, 4, unreach_w, "unreachable");
	graph_idom(1, NULL, 0, diamond_w, "root only");
}

/* A and B share C, A also has D: {A,D}, {B}, {C}. */
static void
test_shared(void)
{
	static const char *const names[] = { "a", "b", "c", "d" };
	static const size_t roots[] = { 0, 1 }, ad[] = { 0, 3 }, b[] = { 1 };
	static const size_t cc[] = { 2 };
	struct nix_closure	 c;
	struct nix_layering	 l;

	cl_init(&c, 4, names, NULL);
	cl_ref(&c, 0, 2);
	cl_ref(&c, 0, 3);
	cl_ref(&c, 0, 0);		/* self-references are ignored */
	cl_ref(&c, 1, 2);
	cl_ref(&c, 2, 2);
	cl_roots(&c, roots, 2);
	nix_layer_group(&c, NULL, 94, &l);
	CHECK(l.nl_nlayers == 3);
	CHECK(lay_is(&l, ad, 2));
	CHECK(lay_is(&l, b, 1));
	CHECK(lay_is(&l, cc, 1));
	CHECK(lay_partition(&c, &l));
	/* All popularity 1: the biggest layer first, then by path. */
	CHECK(l.nl_nlayers == 3 && l.nl_layers[0].nl_size == 2000 &&
	    l.nl_layers[0].nl_rating == 2000.0);
	CHECK(lay_find(&l, 1) == 1 && lay_find(&l, 2) == 2);
	nix_layering_clear(&l);
	CHECK(l.nl_layers == NULL && l.nl_nlayers == 0);

	/* Budget 1 puts everything in one layer. */
	nix_layer_group(&c, NULL, 1, &l);
	CHECK(l.nl_nlayers == 1 && l.nl_layers[0].nl_npaths == 4 &&
	    l.nl_layers[0].nl_size == 4000);
	nix_layering_clear(&l);
	cl_free(&c);
}

/* Ten independent roots with budget 3. */
static void
test_budget(void)
{
	static const uint64_t sizes[] = {
		1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000,
		100000 };
	static const size_t roots[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 };
	static const size_t top[] = { 9 };
	struct nix_closure	 c;
	struct nix_layering	 l;
	size_t			 i, n = 0;

	cl_init(&c, 10, NULL, sizes);
	cl_roots(&c, roots, 10);
	nix_layer_group(&c, NULL, 3, &l);
	CHECK(l.nl_nlayers == 3);
	CHECK(lay_partition(&c, &l));
	CHECK(lay_is(&l, top, 1));
	CHECK(l.nl_nlayers > 0 && l.nl_layers[0].nl_npaths == 1 &&
	    l.nl_layers[0].nl_paths[0] == 9);
	for (i = 0; i < l.nl_nlayers; i++)
		n += l.nl_layers[i].nl_npaths;
	CHECK(n == 10);
	/*
	 * Pairwise merging of the lowest: 1+2, 3+3, 4+5, 6+6, 7+8, 9+9,
	 * 12+15 leaves {10}, {18} and {27} (in thousands).
	 */
	CHECK(l.nl_nlayers == 3 && l.nl_layers[1].nl_size == 27000 &&
	    l.nl_layers[2].nl_size == 18000);
	CHECK(l.nl_nlayers == 3 && l.nl_layers[1].nl_rating == 27000.0);
	nix_layering_clear(&l);

	/* Within the budget nothing is merged; budget 0 acts as 1. */
	nix_layer_group(&c, NULL, 10, &l);
	CHECK(l.nl_nlayers == 10 && lay_partition(&c, &l));
	nix_layering_clear(&l);
	nix_layer_group(&c, NULL, 0, &l);
	CHECK(l.nl_nlayers == 1 && lay_partition(&c, &l));
	nix_layering_clear(&l);
	cl_free(&c);
}

/* Popular paths come first and get their own layer. */
static void
test_popularity(void)
{
	static const char *const names[] = {
		"app-1.0", "glibc-2.37", "libfoo-1", "nss-cacert-3.90",
		"zlib-1.3" };
	static const size_t roots[] = { 0 };
	static const size_t app[] = { 0, 2 }, glibc[] = { 1 };
	static const size_t cacert[] = { 3 }, zlib[] = { 4 };
	struct nix_closure	 c;
	struct nix_layering	 l;
	json_t			*pop;
	char			*file, *cause = NULL;

	file = write_tmp("{\"glibc-2.37\": 5000, \"zlib-1.3\": 150, "
	    "\"libfoo-1\": 20, \"zero-1\": 0}");
	pop = nix_popularity_load(file, &cause);
	CHECK(pop != NULL && cause == NULL);
	CHECK(nix_popularity_get(pop,
	    "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-glibc-2.37") == 5000);
	CHECK(nix_popularity_get(pop, "glibc-2.37") == 5000);
	CHECK(nix_popularity_get(pop,
	    "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-bash-5.2") == 1);
	CHECK(nix_popularity_get(pop, "zero-1") == 1);
	CHECK(nix_popularity_get(pop,
	    "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nss-cacert-3.90") ==
	    UINT32_MAX);
	CHECK(nix_popularity_get(NULL, "iana-etc-20230316") == UINT32_MAX);
	CHECK(nix_popularity_get(NULL, "cacert-1") == UINT32_MAX);

	/* app -> glibc, libfoo, cacert, zlib; only app uses them. */
	cl_init(&c, 5, names, NULL);
	cl_ref(&c, 0, 1);
	cl_ref(&c, 0, 2);
	cl_ref(&c, 0, 3);
	cl_ref(&c, 0, 4);
	cl_ref(&c, 4, 1);
	cl_roots(&c, roots, 1);
	nix_layer_group(&c, pop, 94, &l);
	CHECK(l.nl_nlayers == 4 && lay_partition(&c, &l));
	CHECK(lay_is(&l, app, 2) && lay_is(&l, glibc, 1) &&
	    lay_is(&l, cacert, 1) && lay_is(&l, zlib, 1));
	CHECK(lay_find(&l, 3) == 0 && lay_find(&l, 1) == 1 &&
	    lay_find(&l, 4) == 2 && lay_find(&l, 0) == 3);
	CHECK(l.nl_nlayers == 4 && l.nl_layers[1].nl_rating == 5000.0 * 1000);
	nix_layering_clear(&l);

	/* Without popularity data only cacert is split off. */
	nix_layer_group(&c, NULL, 94, &l);
	CHECK(l.nl_nlayers == 2 && lay_find(&l, 3) == 0 &&
	    l.nl_layers[1].nl_npaths == 4);
	nix_layering_clear(&l);
	cl_free(&c);
	json_decref(pop);
	unlink(file);
	free(file);

	pop = nix_popularity_load(NULL, &cause);
	CHECK(pop != NULL && json_is_object(pop) && json_object_size(pop) == 0);
	json_decref(pop);
}

/* A path with a closure of 100 MiB or more gets its own layer. */
static void
test_large(void)
{
	static const uint64_t sizes[] = { 1000, 60 * MIB, 50 * MIB, 1000,
		99 * MIB };
	static const uint64_t dsizes[] = { 1000, 1000, 1000, 1000,
		60 * MIB };
	static const size_t roots[] = { 0 }, app[] = { 0, 3, 4 };
	static const size_t xy[] = { 1, 2 }, a[] = { 0 }, x[] = { 1 };
	static const size_t y[] = { 2 }, zw[] = { 3, 4 };
	struct nix_closure	 c;
	struct nix_layering	 l;

	/* app -> x -> y (110 MiB), app -> z -> w (just under 100 MiB). */
	cl_init(&c, 5, NULL, sizes);
	cl_ref(&c, 0, 1);
	cl_ref(&c, 1, 2);
	cl_ref(&c, 0, 3);
	cl_ref(&c, 3, 4);
	cl_roots(&c, roots, 1);
	nix_layer_group(&c, NULL, 94, &l);
	CHECK(l.nl_nlayers == 2 && lay_partition(&c, &l));
	CHECK(lay_is(&l, xy, 2) && lay_is(&l, app, 3));
	/* Same popularity: the bigger layer first. */
	CHECK(lay_find(&l, 1) == 0);
	nix_layering_clear(&l);

	/* Also x -> z -> y: z is shared and its closure is large. */
	cl_ref(&c, 1, 3);
	cl_ref(&c, 3, 2);
	nix_layer_group(&c, NULL, 94, &l);
	CHECK(l.nl_nlayers == 4 && lay_partition(&c, &l));
	CHECK(lay_is(&l, a, 1) && lay_is(&l, x, 1) && lay_is(&l, y, 1) &&
	    lay_is(&l, zw, 2));
	nix_layering_clear(&l);
	cl_free(&c);

	/*
	 * top -> p, p -> q, p -> r, q -> s, r -> s with s 60 MiB: counting
	 * s twice would make p look large; its closure is only 60 MiB.
	 */
	cl_init(&c, 5, NULL, dsizes);
	cl_ref(&c, 0, 1);
	cl_ref(&c, 1, 2);
	cl_ref(&c, 1, 3);
	cl_ref(&c, 2, 4);
	cl_ref(&c, 3, 4);
	cl_roots(&c, roots, 1);
	nix_layer_group(&c, NULL, 94, &l);
	CHECK(l.nl_nlayers == 1 && lay_partition(&c, &l));
	nix_layering_clear(&l);
	/* A cycle q -> p (not in real stores) is searched exactly too. */
	cl_ref(&c, 2, 1);
	nix_layer_group(&c, NULL, 94, &l);
	CHECK(l.nl_nlayers == 1 && lay_partition(&c, &l));
	nix_layering_clear(&l);
	cl_free(&c);
}

/* The order of the top-level paths does not change the result. */
static void
test_determinism(void)
{
	static const size_t roots[] = { 0, 3, 7, 11, 15, 19, 22, 25 };
	struct nix_closure	 c;
	struct nix_layering	 a, b;
	size_t			 r[8], i, j, t, tmp;
	uint64_t		 sizes[30];
	int			 same = 1;

	for (i = 0; i < 30; i++)
		sizes[i] = 1000 + (i * 7919) % 5000;
	cl_init(&c, 30, NULL, sizes);
	for (i = 0; i < 30; i++)
		for (j = 1; j < 4; j++)
			if ((i * 31 + j * 17) % 3 == 0 && i + j * 2 < 30)
				cl_ref(&c, i, i + j * 2);
	cl_roots(&c, roots, 8);
	nix_layer_group(&c, NULL, 5, &a);
	CHECK(a.nl_nlayers == 5 && lay_partition(&c, &a));
	srand(7);
	for (t = 0; t < 20; t++) {
		memcpy(r, roots, sizeof r);
		for (i = 7; i > 0; i--) {
			j = (size_t)rand() % (i + 1);
			tmp = r[i];
			r[i] = r[j];
			r[j] = tmp;
		}
		cl_roots(&c, r, 8);
		nix_layer_group(&c, NULL, 5, &b);
		if (!lay_equal(&a, &b))
			same = 0;
		nix_layering_clear(&b);
	}
	CHECK(same);
	nix_layering_clear(&a);
	cl_free(&c);
}

/* Groups a chain of CHAIN paths; runs on a small stack. */
static void *
chain_thread(void *arg)
{
	struct nix_closure	 c;
	struct nix_layering	 l;
	size_t			 i, **succ, *nsucc, *idom;
	int			*ok = arg, good = 1;

	cl_init(&c, CHAIN, NULL, NULL);
	for (i = 0; i + 1 < CHAIN; i++)
		cl_ref(&c, i, i + 1);
	cl_roots(&c, (const size_t[]){ 0 }, 1);
	nix_layer_group(&c, NULL, 94, &l);
	ok[0] = l.nl_nlayers == 1 && l.nl_layers[0].nl_npaths == CHAIN &&
	    lay_partition(&c, &l);
	nix_layering_clear(&l);
	cl_free(&c);

	succ = xcalloc(CHAIN, sizeof *succ);
	nsucc = xcalloc(CHAIN, sizeof *nsucc);
	idom = xcalloc(CHAIN, sizeof *idom);
	for (i = 0; i + 1 < CHAIN; i++) {
		succ[i] = xcalloc(1, sizeof **succ);
		succ[i][nsucc[i]++] = i + 1;
	}
	nix_dominators(CHAIN, succ, nsucc, idom);
	for (i = 1; i < CHAIN; i++)
		if (idom[i] != i - 1)
			good = 0;
	ok[1] = good && idom[0] == 0;
	for (i = 0; i < CHAIN; i++)
		free(succ[i]);
	free(succ);
	free(nsucc);
	free(idom);
	return (NULL);
}

/* A long chain on a 256 KiB stack, where recursion would overflow. */
static void
test_chain(void)
{
	pthread_attr_t	 attr;
	pthread_t	 t;
	int		 ok[2] = { 0, 0 };

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	if (pthread_create(&t, &attr, chain_thread, ok) != 0)
		fatalx("pthread_create");
	pthread_join(t, NULL);
	pthread_attr_destroy(&attr);
	CHECK(ok[0]);
	CHECK(ok[1]);
}

/* Bad popularity files give NULL and a cause. */
static void
test_malformed(void)
{
	static const char *const bad[] = {
		"{\"glibc-2.37\": 5", "[1, 2, 3]", "{\"a\": \"many\"}",
		"{\"a\": -3}", "", "42" };
	json_t	*pop;
	char	*file, *cause;
	size_t	 i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		file = write_tmp(bad[i]);
		cause = NULL;
		pop = nix_popularity_load(file, &cause);
		check(pop == NULL && cause != NULL &&
		    strstr(cause, file) != NULL, __LINE__,
		    "popularity \"%s\" not refused", bad[i]);
		json_decref(pop);
		free(cause);
		unlink(file);
		free(file);
	}
	cause = NULL;
	pop = nix_popularity_load("/nonexistent/popularity.json", &cause);
	CHECK(pop == NULL && cause != NULL);
	free(cause);
}

/* Renames path i of a closure to /nix/store/<hash>-<name>. */
static void
cl_name(struct nix_closure *c, size_t i, const char *hash, const char *name)
{
	free(c->nc_paths[i].np_path);
	xasprintf(&c->nc_paths[i].np_path, "/nix/store/%s-%s", hash, name);
}

/* The store path of the one path of a layer, or "" when it holds more. */
static const char *
lay_only(const struct nix_closure *c, const struct nix_layering *l, size_t i)
{
	if (i >= l->nl_nlayers || l->nl_layers[i].nl_npaths != 1)
		return ("");
	return (c->nc_paths[l->nl_layers[i].nl_paths[0]].np_path);
}

/*
 * Layering version 2: under the budget every path is alone, whatever
 * else the image holds, so a path shared by two images keeps its layer;
 * cacert first, then the paths with the smallest own closures; past the
 * budget the largest stay alone and the rest share buckets by the first
 * character of their hash; the same closure always gives the same layers.
 */
static void
test_stable(void)
{
	static const char *const hx[] = {
		"a", "b", "c", "d", "f", "g", "h", "i", "j", "k", "l", "m",
	};
	struct nix_closure	 a, b, big;
	struct nix_layering	 la, lb, l1, l2;
	char			 hash[40];
	size_t			 i, j, alone, n;
	int			 ok;

	/* hello -> libcommon, busybox; cacert. */
	cl_init(&a, 4, NULL, NULL);
	cl_name(&a, 0, "00000000000000000000000000000hel", "hello-1.0");
	cl_name(&a, 1, "00000000000000000000000000000lib", "libcommon-1.0");
	cl_name(&a, 2, "00000000000000000000000000000bus", "busybox-1.35");
	cl_name(&a, 3, "00000000000000000000000000000cac", "nss-cacert-3");
	cl_ref(&a, 0, 1);
	cl_ref(&a, 0, 2);
	cl_ref(&a, 1, 1);
	/* figlet -> libcommon, libfig -> busybox; figlet2 -> libcommon. */
	cl_init(&b, 5, NULL, NULL);
	cl_name(&b, 0, "00000000000000000000000000000fig", "figlet-1");
	cl_name(&b, 1, "00000000000000000000000000000lib", "libcommon-1.0");
	cl_name(&b, 2, "00000000000000000000000000000bus", "busybox-1.35");
	cl_name(&b, 3, "00000000000000000000000000000lfg", "libfig-1");
	cl_name(&b, 4, "00000000000000000000000000000fg2", "figlet2-1");
	cl_ref(&b, 0, 1);
	cl_ref(&b, 0, 3);
	cl_ref(&b, 3, 2);
	cl_ref(&b, 4, 1);
	nix_layer_group_stable(&a, NULL, 94, &la);
	nix_layer_group_stable(&b, NULL, 94, &lb);
	CHECK(la.nl_nlayers == 4 && lay_partition(&a, &la));
	CHECK(lb.nl_nlayers == 5 && lay_partition(&b, &lb));
	for (ok = 1, i = 0; i < la.nl_nlayers; i++)
		ok &= la.nl_layers[i].nl_npaths == 1;
	CHECK(ok);
	/* libcommon: referenced by one package in a, by two in b. */
	CHECK(lay_find(&la, 1) != -1 && lay_find(&lb, 1) != -1 &&
	    strcmp(lay_only(&a, &la, (size_t)lay_find(&la, 1)),
	    lay_only(&b, &lb, (size_t)lay_find(&lb, 1))) == 0 &&
	    strstr(lay_only(&a, &la, (size_t)lay_find(&la, 1)), "libcommon") !=
	    NULL);
	/*
	 * cacert, then libcommon and busybox (own closure 1; then by index,
	 * which is the store path's order in a real closure), then hello.
	 */
	CHECK(strstr(lay_only(&a, &la, 0), "cacert") != NULL);
	CHECK(strstr(lay_only(&a, &la, 1), "libcommon") != NULL);
	CHECK(strstr(lay_only(&a, &la, 2), "busybox") != NULL);
	CHECK(strstr(lay_only(&a, &la, 3), "hello") != NULL);
	/* figlet's own closure (4) is bigger than libfig's (2). */
	CHECK(lay_find(&lb, 3) < lay_find(&lb, 0));
	nix_layering_clear(&la);
	nix_layering_clear(&lb);
	cl_free(&a);
	cl_free(&b);

	/* 60 paths with 12 first characters in a budget of 40. */
	n = 60;
	cl_init(&big, n, NULL, NULL);
	for (i = 0; i < n; i++) {
		snprintf(hash, sizeof hash, "%s%031zu", hx[i % 12], i);
		cl_name(&big, i, hash, "p");
		big.nc_paths[i].np_narsize = 1000 * (i + 1);
	}
	nix_layer_group_stable(&big, NULL, 40, &l1);
	nix_layer_group_stable(&big, NULL, 40, &l2);
	CHECK(l1.nl_nlayers == 40 && lay_partition(&big, &l1));
	CHECK(l1.nl_nlayers == l2.nl_nlayers);
	for (ok = 1, i = 0; i < l1.nl_nlayers && i < l2.nl_nlayers; i++)
		ok &= l1.nl_layers[i].nl_npaths == l2.nl_layers[i].nl_npaths &&
		    memcmp(l1.nl_layers[i].nl_paths, l2.nl_layers[i].nl_paths,
		    l1.nl_layers[i].nl_npaths * sizeof(size_t)) == 0;
	CHECK(ok);
	/*
	 * The 12 buckets leave 28 alone: the largest; a merged layer holds
	 * one bucket, the paths of one first character.
	 */
	alone = 28;
	for (ok = 1, i = 0; i < alone; i++)
		ok &= lay_find(&l1, n - 1 - i) != -1 &&
		    l1.nl_layers[lay_find(&l1, n - 1 - i)].nl_npaths == 1;
	CHECK(ok);
	for (ok = 1, i = 0; i < l1.nl_nlayers; i++)
		for (j = 1; j < l1.nl_layers[i].nl_npaths; j++)
			ok &= l1.nl_layers[i].nl_paths[j] % 12 ==
			    l1.nl_layers[i].nl_paths[0] % 12 &&
			    l1.nl_layers[i].nl_paths[j] < n - alone;
	CHECK(ok);
	/* A small budget: as many buckets as layers. */
	nix_layering_clear(&l1);
	nix_layer_group_stable(&big, NULL, 10, &l1);
	CHECK(l1.nl_nlayers <= 10 && lay_partition(&big, &l1));
	nix_layering_clear(&l1);
	nix_layering_clear(&l2);
	nix_layer_group_stable(&big, NULL, 1, &l1);
	CHECK(l1.nl_nlayers == 1 && l1.nl_layers[0].nl_npaths == n);
	nix_layering_clear(&l1);
	cl_free(&big);
}

/* The SPDX package of a store path, by its packageFileName. */
static json_t *
sbom_pkg(json_t *doc, const char *path)
{
	json_t	*p;
	size_t	 i;

	json_array_foreach(json_object_get(doc, "packages"), i, p)
		if (json_is_string(json_object_get(p, "packageFileName")) &&
		    strcmp(json_string_value(json_object_get(p,
		    "packageFileName")), path) == 0)
			return (p);
	return (NULL);
}

/* Whether a package's field is a string equal to want (NULL: absent). */
static int
sbom_field(json_t *p, const char *field, const char *want)
{
	json_t	*v = json_object_get(p, field);

	if (want == NULL)
		return (v == NULL);
	return (json_is_string(v) && strcmp(json_string_value(v), want) == 0);
}

/* Counts relationships of a type from one element. */
static size_t
sbom_rels(json_t *doc, const char *from, const char *type)
{
	json_t	*r;
	size_t	 i, n = 0;

	json_array_foreach(json_object_get(doc, "relationships"), i, r)
		if (strcmp(json_string_value(json_object_get(r,
		    "spdxElementId")), from) == 0 && strcmp(json_string_value(
		    json_object_get(r, "relationshipType")), type) == 0)
			n++;
	return (n);
}

/*
 * The SBOM of a closure: names and versions as parseDrvName splits them,
 * references as DEPENDS_ON (not a path's own), what was asked for as the
 * image's CONTAINS, NAR hashes in both of Nix's forms, and the same bytes
 * every time.
 */
static void
test_sbom(void)
{
	static const char *const names[] = {
		"hello-2.12.1", "perl5.36.0-Foo-1.0", "gnome-shell-40",
		"tzdata", "foo-bar-",
	};
	struct nix_closure	 c;
	struct nix_request	 req;
	char			*pkgs[] = { "hello" }, *a, *b, hex[65];
	json_t			*doc, *p;
	const char		*id;
	size_t			 i;

	cl_init(&c, 5, names, NULL);
	cl_ref(&c, 0, 1);
	cl_ref(&c, 0, 2);
	cl_ref(&c, 0, 0);		/* a path naming itself */
	cl_ref(&c, 2, 3);
	c.nc_paths[0].np_requested = 1;
	c.nc_paths[0].np_license = xstrdup("GPL-3.0-or-later");
	c.nc_paths[0].np_homepage = xstrdup("https://example.org/hello");
	nix_narhash_hex("sha256-W5UI2/YcsLjGzR+qfmUwK8wTMsI0TM0HnCzBHr0UkMM=",
	    c.nc_paths[0].np_narhash);
	CHECK(strcmp(c.nc_paths[0].np_narhash, "5b9508dbf61cb0b8c6cd1faa7e65"
	    "302bcc1332c2344ccd079c2cc11ebd1490c3") == 0);
	nix_narhash_hex("sha256:0nydv10n8bx3pjn98qlg8jdzmfapgijhmbpqvvji2zfh"
	    "dq32j2ax", hex);
	CHECK(strcmp(hex, "5d0929066ed07d11e5def8ae0a657c57b9fa9b448f6294acbc"
	    "a32f6441d8cd5b") == 0);
	nix_narhash_hex("md5:abc", hex);
	CHECK(hex[0] == '\0');
	nix_narhash_hex("sha256-short", hex);
	CHECK(hex[0] == '\0');

	memset(&req, 0, sizeof req);
	req.nr_pkgs = pkgs;
	req.nr_npkgs = 1;
	a = nix_sbom_spdx(&c, &req, "sha256:" "0123456789abcdef0123456789abcdef"
	    "0123456789abcdef0123456789abcdef", "0123456789012345678901234567"
	    "890123456789");
	b = nix_sbom_spdx(&c, &req, "sha256:" "0123456789abcdef0123456789abcdef"
	    "0123456789abcdef0123456789abcdef", "0123456789012345678901234567"
	    "890123456789");
	CHECK(strcmp(a, b) == 0);
	doc = json_loads(a, 0, NULL);
	CHECK(doc != NULL);
	CHECK(json_array_size(json_object_get(doc, "packages")) == 6);
	p = sbom_pkg(doc, c.nc_paths[0].np_path);
	CHECK(sbom_field(p, "name", "hello") &&
	    sbom_field(p, "versionInfo", "2.12.1") &&
	    sbom_field(p, "licenseDeclared", "GPL-3.0-or-later") &&
	    sbom_field(p, "homepage", "https://example.org/hello") &&
	    sbom_field(p, "primaryPackagePurpose", "APPLICATION"));
	CHECK(strcmp(json_string_value(json_object_get(json_array_get(
	    json_object_get(p, "checksums"), 0), "checksumValue")),
	    c.nc_paths[0].np_narhash) == 0);
	id = json_string_value(json_object_get(p, "SPDXID"));
	CHECK(sbom_rels(doc, id, "DEPENDS_ON") == 2);
	CHECK(sbom_rels(doc, "SPDXRef-image", "CONTAINS") == 1);
	CHECK(sbom_rels(doc, "SPDXRef-DOCUMENT", "DESCRIBES") == 1);
	p = sbom_pkg(doc, c.nc_paths[1].np_path);
	CHECK(sbom_field(p, "name", "perl5.36.0-Foo") &&
	    sbom_field(p, "versionInfo", "1.0") &&
	    sbom_field(p, "licenseDeclared", "NOASSERTION") &&
	    sbom_field(p, "homepage", NULL) && sbom_field(p, "checksums", NULL));
	p = sbom_pkg(doc, c.nc_paths[2].np_path);
	CHECK(sbom_field(p, "name", "gnome-shell") &&
	    sbom_field(p, "versionInfo", "40"));
	CHECK(sbom_rels(doc, json_string_value(json_object_get(p, "SPDXID")),
	    "DEPENDS_ON") == 1);
	p = sbom_pkg(doc, c.nc_paths[3].np_path);
	CHECK(sbom_field(p, "name", "tzdata") &&
	    sbom_field(p, "versionInfo", NULL));
	p = sbom_pkg(doc, c.nc_paths[4].np_path);
	CHECK(sbom_field(p, "name", "foo-bar-") &&
	    sbom_field(p, "versionInfo", NULL));
	CHECK(json_is_string(json_object_get(doc, "documentNamespace")) &&
	    strstr(json_string_value(json_object_get(doc,
	    "documentNamespace")), "0123456789abcdef") != NULL);
	json_decref(doc);
	free(a);
	free(b);
	for (i = 0; i < c.nc_npaths; i++) {
		free(c.nc_paths[i].np_license);
		free(c.nc_paths[i].np_homepage);
		c.nc_paths[i].np_license = c.nc_paths[i].np_homepage = NULL;
	}
	cl_free(&c);
}

int
main(void)
{
	log_init(0);
	test_dominators();
	test_shared();
	test_budget();
	test_popularity();
	test_large();
	test_determinism();
	test_chain();
	test_malformed();
	test_sbom();
	test_stable();
	printf("test_layer: %d passed, %d failed\n", passed, failed);
	return (failed != 0);
}
