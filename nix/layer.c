/*
 * nix/layer.c: groups the store paths of a closure into layers with
 * Nixery's popularity and dominator-tree algorithm.
 *
 * The graph has a synthetic root (node 0) with an edge to every requested
 * top-level path; store path i is node i + 1 with an edge to each of its
 * references (self-references dropped).  A path that is popular
 * (popularity >= LAYER_POPULAR) or large (the narsize sum of everything
 * reachable from it >= LAYER_LARGE) gets an extra edge from the root, and
 * so does, in index order, any path still unreachable, so every path ends
 * up in a layer.  Each child of the root in the dominator tree becomes one
 * layer with its whole dominated subtree, rated popularity(child) x size.
 *
 * While there are more layers than the budget, the two lowest-rated
 * (ties: the smaller smallest store path) are merged into one whose rating
 * is the sum of theirs, and that goes back into the heap.  Popular, large
 * layers rate orders of magnitude above the rest, so they stay alone and
 * shared between images; the small unpopular ones pair up.
 *
 * The result is sorted by the highest popularity of a member path
 * (descending), then size (descending), then smallest path (ascending),
 * so the shared, popular layers come first and Docker's ChainIDs stay
 * equal across images.  The dominator tree does not depend on the order of
 * the edges, so the whole result depends only on the closure.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nixmirror.h"
#include "nix/nix.h"

/* A path at least this popular gets its own layer. */
#define LAYER_POPULAR	100
/* A path whose closure is at least this big gets its own layer. */
#define LAYER_LARGE	(100ULL * 1024 * 1024)
/* The popularity forced on cacert and iana-etc, as Nixery does. */
#define LAYER_FORCED	UINT32_MAX
/* The length of the hash part of a store path's base name. */
#define LAYER_HASHLEN	32

/* A graph in adjacency lists; node 0 is the root. */
struct layer_graph {
	size_t		  lg_n;
	size_t		**lg_succ;
	size_t		 *lg_nsucc;
};

/* The state of an iterative depth-first search. */
struct layer_dfs {
	size_t		 ld_n;
	uint8_t		*ld_seen;
	size_t		*ld_pos;	/* next successor to look at */
	size_t		*ld_stack;
	size_t		*ld_post;	/* nodes in postorder */
	size_t		 ld_npost;
};

/* A group of paths while merging: a list linked through lm_next. */
struct layer_group {
	size_t		 lp_head;
	size_t		 lp_tail;
	size_t		 lp_count;
	size_t		 lp_min;	/* path with the smallest string */
	uint64_t	 lp_size;
	uint64_t	 lp_maxpop;
	double		 lp_rating;
};

/* Everything nix_layer_group works on. */
struct layer_merge {
	const struct nix_closure *lm_c;
	struct layer_group	*lm_groups;
	size_t			 lm_ngroups;
	size_t			*lm_next;	/* per path, SIZE_MAX ends */
	size_t			*lm_heap;	/* indices into lm_groups */
	size_t			 lm_nheap;
};

/* A finished layer with its sort keys. */
struct layer_sorted {
	struct nix_layer	 ls_layer;
	uint64_t		 ls_maxpop;
	const char		*ls_min;
};

static const char *layer_name(const char *);
static void	layer_dfs_init(struct layer_dfs *, size_t);
static void	layer_dfs_run(struct layer_dfs *, size_t, size_t *const *,
		    const size_t *);
static void	layer_dfs_free(struct layer_dfs *);
static size_t	layer_intersect(const size_t *, const size_t *, size_t,
		    size_t);
static void	layer_preds(size_t, size_t *const *, const size_t *,
		    size_t **, size_t **);
static int	layer_exact_large(const struct layer_graph *, size_t,
		    const struct nix_closure *, size_t *, size_t *, size_t);
static void	layer_large(const struct layer_graph *,
		    const struct nix_closure *, uint8_t *);
static void	layer_graph_build(const struct nix_closure *,
		    const uint64_t *, struct layer_graph *);
static void	layer_graph_reach(struct layer_graph *, uint8_t *);
static void	layer_graph_free(struct layer_graph *);
static size_t	*layer_tops(const size_t *, size_t);
static void	layer_group_add(struct layer_merge *, struct layer_group *,
		    size_t, uint64_t);
static void	layer_groups(struct layer_merge *, const size_t *,
		    const uint64_t *);
static int	layer_heap_less(const struct layer_merge *, size_t, size_t);
static void	layer_heap_push(struct layer_merge *, size_t);
static size_t	layer_heap_pop(struct layer_merge *);
static void	layer_budget(struct layer_merge *, size_t);
static int	layer_sorted_cmp(const void *, const void *);
static int	layer_index_cmp(const void *, const void *);
static void	layer_output(struct layer_merge *, struct nix_layering *);

/* The name of a store path without directory and hash ("glibc-2.37"). */
static const char *
layer_name(const char *path)
{
	const char	*base;

	if ((base = strrchr(path, '/')) != NULL)
		base++;
	else
		base = path;
	if (strlen(base) > LAYER_HASHLEN + 1 && base[LAYER_HASHLEN] == '-')
		base += LAYER_HASHLEN + 1;
	return (base);
}

/* Loads a popularity file, or makes an empty object for NULL. */
json_t *
nix_popularity_load(const char *file, char **cause)
{
	json_error_t	 error;
	json_t		*pop, *v;
	const char	*k;

	if (file == NULL)
		return (json_object());
	if ((pop = json_load_file(file, 0, &error)) == NULL) {
		xasprintf(cause, "popularity file %s: %s (line %d)", file,
		    error.text, error.line);
		return (NULL);
	}
	if (!json_is_object(pop)) {
		xasprintf(cause, "popularity file %s: not a JSON object", file);
		goto fail;
	}
	json_object_foreach(pop, k, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0) {
			xasprintf(cause, "popularity file %s: \"%s\" is not "
			    "a count", file, k);
			goto fail;
		}
	}
	return (pop);

fail:
	json_decref(pop);
	return (NULL);
}

/* Looks up a store path's popularity; cacert and iana-etc are forced. */
uint64_t
nix_popularity_get(json_t *pop, const char *path)
{
	const char	*name;
	json_t		*v;
	json_int_t	 n;

	name = layer_name(path);
	if (strncmp(name, "nss-cacert", 10) == 0 ||
	    strncmp(name, "cacert", 6) == 0 ||
	    strncmp(name, "iana-etc", 8) == 0)
		return (LAYER_FORCED);
	if (pop == NULL || (v = json_object_get(pop, name)) == NULL ||
	    !json_is_integer(v))
		return (1);
	n = json_integer_value(v);
	return (n < 1 ? 1 : (uint64_t)n);
}

/* Prepares a search over n nodes with nothing seen yet. */
static void
layer_dfs_init(struct layer_dfs *d, size_t n)
{
	d->ld_n = n;
	d->ld_seen = xcalloc(n, 1);
	d->ld_pos = xcalloc(n, sizeof *d->ld_pos);
	d->ld_stack = xreallocarray(NULL, n, sizeof *d->ld_stack);
	d->ld_post = xreallocarray(NULL, n, sizeof *d->ld_post);
	d->ld_npost = 0;
}

/*
 * Iterative depth-first search from start over nodes not seen yet,
 * appending them to ld_post in postorder.
 */
static void
layer_dfs_run(struct layer_dfs *d, size_t start, size_t *const *succ,
    const size_t *nsucc)
{
	size_t	 sp = 0, v, w;

	if (d->ld_seen[start])
		return;
	d->ld_seen[start] = 1;
	d->ld_stack[sp++] = start;
	while (sp > 0) {
		v = d->ld_stack[sp - 1];
		if (d->ld_pos[v] == nsucc[v]) {
			d->ld_post[d->ld_npost++] = v;
			sp--;
			continue;
		}
		w = succ[v][d->ld_pos[v]++];
		if (w < d->ld_n && !d->ld_seen[w]) {
			d->ld_seen[w] = 1;
			d->ld_stack[sp++] = w;
		}
	}
}

/* Frees a search's arrays. */
static void
layer_dfs_free(struct layer_dfs *d)
{
	free(d->ld_seen);
	free(d->ld_pos);
	free(d->ld_stack);
	free(d->ld_post);
}

/* Walks two nodes up the dominator tree until they meet. */
static size_t
layer_intersect(const size_t *idom, const size_t *po, size_t a, size_t b)
{
	while (a != b) {
		while (po[a] < po[b])
			a = idom[a];
		while (po[b] < po[a])
			b = idom[b];
	}
	return (a);
}

/* Builds predecessor lists as offsets (n + 1) and one flat array. */
static void
layer_preds(size_t n, size_t *const *succ, const size_t *nsucc,
    size_t **offp, size_t **predp)
{
	size_t	*off, *pred, *fill, v, i, w;

	off = xcalloc(n + 1, sizeof *off);
	for (v = 0; v < n; v++)
		for (i = 0; i < nsucc[v]; i++)
			if ((w = succ[v][i]) < n)
				off[w + 1]++;
	for (v = 0; v < n; v++)
		off[v + 1] += off[v];
	pred = xreallocarray(NULL, off[n], sizeof *pred);
	fill = xreallocarray(NULL, n, sizeof *fill);
	memcpy(fill, off, n * sizeof *fill);
	for (v = 0; v < n; v++)
		for (i = 0; i < nsucc[v]; i++)
			if ((w = succ[v][i]) < n)
				pred[fill[w]++] = v;
	free(fill);
	*offp = off;
	*predp = pred;
}

/*
 * Computes immediate dominators with the Cooper-Harvey-Kennedy iterative
 * algorithm over the reverse postorder of an iterative DFS.
 */
void
nix_dominators(size_t n, size_t *const *succ, const size_t *nsucc,
    size_t *idom)
{
	struct layer_dfs	 d;
	size_t			*po, *off, *pred, *post, i, j, v, p, nd;
	int			 changed;

	if (n == 0)
		return;
	layer_dfs_init(&d, n);
	layer_dfs_run(&d, 0, succ, nsucc);
	post = d.ld_post;
	po = xcalloc(n, sizeof *po);
	for (i = 0; i < d.ld_npost; i++)
		po[post[i]] = i;
	layer_preds(n, succ, nsucc, &off, &pred);
	for (v = 0; v < n; v++)
		idom[v] = SIZE_MAX;
	idom[0] = 0;
	do {
		changed = 0;
		for (i = d.ld_npost - 1; i-- > 0;) {	/* reverse postorder */
			v = post[i];
			nd = SIZE_MAX;
			for (j = off[v]; j < off[v + 1]; j++) {
				if (idom[p = pred[j]] == SIZE_MAX)
					continue;
				nd = nd == SIZE_MAX ? p :
				    layer_intersect(idom, po, p, nd);
			}
			if (idom[v] != nd) {
				idom[v] = nd;
				changed = 1;
			}
		}
	} while (changed);
	layer_dfs_free(&d);
	free(po);
	free(off);
	free(pred);
}

/*
 * Whether the closure of graph node start reaches LAYER_LARGE, by a
 * search that stops as soon as it does; mark holds the stamp of the last
 * search that saw each node.
 */
static int
layer_exact_large(const struct layer_graph *g, size_t start,
    const struct nix_closure *c, size_t *mark, size_t *stack, size_t stamp)
{
	size_t		 sp = 0, v, i, w;
	uint64_t	 sum = 0;

	mark[start] = stamp;
	stack[sp++] = start;
	while (sp > 0) {
		v = stack[--sp];
		sum += c->nc_paths[v - 1].np_narsize;
		if (sum >= LAYER_LARGE)
			return (1);
		for (i = 0; i < g->lg_nsucc[v]; i++) {
			if (mark[w = g->lg_succ[v][i]] != stamp) {
				mark[w] = stamp;
				stack[sp++] = w;
			}
		}
	}
	return (0);
}

/*
 * Marks the paths whose closure reaches LAYER_LARGE.  In postorder, a
 * path with a large reference is large and one whose upper bound (its
 * size plus the bounds of its references) stays below the limit is not;
 * only the rest (shared references, cycles) need an exact search.
 */
static void
layer_large(const struct layer_graph *g, const struct nix_closure *c,
    uint8_t *large)
{
	struct layer_dfs	 d;
	size_t			 n = g->lg_n, *po, *mark, i, j, v, w;
	uint64_t		*ub, b;
	int			 exact;

	layer_dfs_init(&d, n);
	d.ld_seen[0] = 1;
	for (v = 1; v < n; v++)
		layer_dfs_run(&d, v, g->lg_succ, g->lg_nsucc);
	po = xcalloc(n, sizeof *po);
	mark = xcalloc(n, sizeof *mark);
	ub = xcalloc(n, sizeof *ub);
	for (i = 0; i < d.ld_npost; i++)
		po[d.ld_post[i]] = i;
	for (i = 0; i < d.ld_npost; i++) {
		v = d.ld_post[i];
		b = c->nc_paths[v - 1].np_narsize;
		exact = 0;
		for (j = 0; j < g->lg_nsucc[v]; j++) {
			w = g->lg_succ[v][j];
			if (po[w] >= po[v])	/* back edge: a cycle */
				exact = 1;
			else if (large[w])
				large[v] = 1;
			b = UINT64_MAX - b < ub[w] ? UINT64_MAX : b + ub[w];
		}
		ub[v] = b;
		if (!large[v] && (exact || b >= LAYER_LARGE))
			large[v] = layer_exact_large(g, v, c, mark,
			    d.ld_stack, i + 1);
	}
	layer_dfs_free(&d);
	free(po);
	free(mark);
	free(ub);
}

/*
 * Builds the graph of a closure, with the root's edges to the top-level,
 * popular, large and otherwise unreachable paths.
 */
static void
layer_graph_build(const struct nix_closure *c, const uint64_t *pop,
    struct layer_graph *g)
{
	const struct nix_path	*np;
	size_t			 n = c->nc_npaths + 1, i, j, r;
	uint8_t			*inroot;

	g->lg_n = n;
	g->lg_succ = xcalloc(n, sizeof *g->lg_succ);
	g->lg_nsucc = xcalloc(n, sizeof *g->lg_nsucc);
	for (i = 0; i < c->nc_npaths; i++) {
		np = &c->nc_paths[i];
		g->lg_succ[i + 1] = xreallocarray(NULL, np->np_nrefs,
		    sizeof **g->lg_succ);
		for (j = 0; j < np->np_nrefs; j++) {
			r = np->np_refs[j];
			if (r != i && r < c->nc_npaths)
				g->lg_succ[i + 1][g->lg_nsucc[i + 1]++] = r + 1;
		}
	}
	inroot = xcalloc(n, 1);
	for (i = 0; i < c->nc_nroots; i++)
		if (c->nc_roots[i] < c->nc_npaths)
			inroot[c->nc_roots[i] + 1] = 1;
	layer_large(g, c, inroot);
	for (i = 0; i < c->nc_npaths; i++)
		if (pop[i] >= LAYER_POPULAR)
			inroot[i + 1] = 1;
	layer_graph_reach(g, inroot);
	free(inroot);
}

/*
 * Gives the root its edges to the flagged nodes, then one to each node
 * still unreachable, in index order.
 */
static void
layer_graph_reach(struct layer_graph *g, uint8_t *inroot)
{
	struct layer_dfs	 d;
	size_t			 n = g->lg_n, v;

	g->lg_succ[0] = xreallocarray(NULL, n, sizeof **g->lg_succ);
	for (v = 1; v < n; v++)
		if (inroot[v])
			g->lg_succ[0][g->lg_nsucc[0]++] = v;
	layer_dfs_init(&d, n);
	layer_dfs_run(&d, 0, g->lg_succ, g->lg_nsucc);
	for (v = 1; v < n; v++) {
		if (d.ld_seen[v])
			continue;
		g->lg_succ[0][g->lg_nsucc[0]++] = v;
		layer_dfs_run(&d, v, g->lg_succ, g->lg_nsucc);
	}
	layer_dfs_free(&d);
}

/* Frees a graph's lists. */
static void
layer_graph_free(struct layer_graph *g)
{
	size_t	i;

	for (i = 0; i < g->lg_n; i++)
		free(g->lg_succ[i]);
	free(g->lg_succ);
	free(g->lg_nsucc);
}

/*
 * Finds for each graph node its ancestor that is a child of the root in
 * the dominator tree, compressing the walked paths so the work is linear.
 */
static size_t *
layer_tops(const size_t *idom, size_t n)
{
	size_t	*top, *stack, v, u, t, sp;

	top = xreallocarray(NULL, n, sizeof *top);
	stack = xreallocarray(NULL, n, sizeof *stack);
	for (v = 0; v < n; v++)
		top[v] = SIZE_MAX;
	for (v = 1; v < n; v++) {
		sp = 0;
		for (u = v; top[u] == SIZE_MAX && idom[u] != 0; u = idom[u])
			stack[sp++] = u;
		t = top[u] != SIZE_MAX ? top[u] : u;
		top[u] = t;
		while (sp > 0)
			top[stack[--sp]] = t;
	}
	free(stack);
	return (top);
}

/* Adds path i to a group. */
static void
layer_group_add(struct layer_merge *m, struct layer_group *lg, size_t i,
    uint64_t pop)
{
	const struct nix_closure *c = m->lm_c;

	m->lm_next[i] = SIZE_MAX;
	if (lg->lp_count == 0)
		lg->lp_head = i;
	else
		m->lm_next[lg->lp_tail] = i;
	lg->lp_tail = i;
	lg->lp_count++;
	lg->lp_size += c->nc_paths[i].np_narsize;
	if (pop > lg->lp_maxpop)
		lg->lp_maxpop = pop;
	if (lg->lp_count == 1 || strcmp(c->nc_paths[i].np_path,
	    c->nc_paths[lg->lp_min].np_path) < 0)
		lg->lp_min = i;
}

/*
 * Makes one group per child of the root in the dominator tree, holding
 * every path it dominates; idom is over graph nodes.
 */
static void
layer_groups(struct layer_merge *m, const size_t *idom, const uint64_t *pop)
{
	size_t			 np = m->lm_c->nc_npaths, i, v, *top, *gi;
	struct layer_group	*lg;

	top = layer_tops(idom, np + 1);
	gi = xreallocarray(NULL, np + 1, sizeof *gi);
	m->lm_groups = xcalloc(np, sizeof *m->lm_groups);
	m->lm_next = xreallocarray(NULL, np, sizeof *m->lm_next);
	for (v = 1; v <= np; v++)
		if (idom[v] == 0)
			gi[v] = m->lm_ngroups++;
	for (i = 0; i < np; i++)
		layer_group_add(m, &m->lm_groups[gi[top[i + 1]]], i, pop[i]);
	for (v = 1; v <= np; v++) {
		if (idom[v] == 0) {
			lg = &m->lm_groups[gi[v]];
			lg->lp_rating = (double)pop[v - 1] *
			    (double)lg->lp_size;
		}
	}
	free(top);
	free(gi);
}

/* Whether group a goes before group b: lower rating, then smaller path. */
static int
layer_heap_less(const struct layer_merge *m, size_t a, size_t b)
{
	const struct layer_group	*ga = &m->lm_groups[a];
	const struct layer_group	*gb = &m->lm_groups[b];
	const struct nix_path		*p = m->lm_c->nc_paths;

	if (ga->lp_rating != gb->lp_rating)
		return (ga->lp_rating < gb->lp_rating);
	return (strcmp(p[ga->lp_min].np_path, p[gb->lp_min].np_path) < 0);
}

/* Pushes a group onto the min-heap. */
static void
layer_heap_push(struct layer_merge *m, size_t g)
{
	size_t	i, parent;

	i = m->lm_nheap++;
	m->lm_heap[i] = g;
	while (i > 0) {
		parent = (i - 1) / 2;
		if (!layer_heap_less(m, m->lm_heap[i], m->lm_heap[parent]))
			break;
		m->lm_heap[i] = m->lm_heap[parent];
		m->lm_heap[parent] = g;
		i = parent;
	}
}

/* Pops the lowest group from the min-heap. */
static size_t
layer_heap_pop(struct layer_merge *m)
{
	size_t	top, i, l, r, s, tmp;

	top = m->lm_heap[0];
	m->lm_heap[0] = m->lm_heap[--m->lm_nheap];
	for (i = 0;; i = s) {
		l = 2 * i + 1;
		r = l + 1;
		s = i;
		if (l < m->lm_nheap &&
		    layer_heap_less(m, m->lm_heap[l], m->lm_heap[s]))
			s = l;
		if (r < m->lm_nheap &&
		    layer_heap_less(m, m->lm_heap[r], m->lm_heap[s]))
			s = r;
		if (s == i)
			break;
		tmp = m->lm_heap[i];
		m->lm_heap[i] = m->lm_heap[s];
		m->lm_heap[s] = tmp;
	}
	return (top);
}

/*
 * Merges the two lowest-rated groups into one, rated the sum of both,
 * until at most budget are left in the heap.
 */
static void
layer_budget(struct layer_merge *m, size_t budget)
{
	const struct nix_path	*p = m->lm_c->nc_paths;
	struct layer_group	*ga, *gb;
	size_t			 i;

	m->lm_heap = xreallocarray(NULL, m->lm_ngroups, sizeof *m->lm_heap);
	for (i = 0; i < m->lm_ngroups; i++)
		layer_heap_push(m, i);
	while (m->lm_nheap > budget) {
		ga = &m->lm_groups[layer_heap_pop(m)];
		gb = &m->lm_groups[i = layer_heap_pop(m)];
		m->lm_next[gb->lp_tail] = ga->lp_head;
		ga->lp_head = gb->lp_head;
		ga->lp_count += gb->lp_count;
		ga->lp_size += gb->lp_size;
		ga->lp_rating += gb->lp_rating;
		if (gb->lp_maxpop > ga->lp_maxpop)
			ga->lp_maxpop = gb->lp_maxpop;
		if (strcmp(p[gb->lp_min].np_path, p[ga->lp_min].np_path) < 0)
			ga->lp_min = gb->lp_min;
		gb->lp_count = 0;
		layer_heap_push(m, ga - m->lm_groups);
	}
}

/* Orders layers: most popular member, then bigger, then smaller path. */
static int
layer_sorted_cmp(const void *a, const void *b)
{
	const struct layer_sorted	*la = a, *lb = b;

	if (la->ls_maxpop != lb->ls_maxpop)
		return (la->ls_maxpop > lb->ls_maxpop ? -1 : 1);
	if (la->ls_layer.nl_size != lb->ls_layer.nl_size)
		return (la->ls_layer.nl_size > lb->ls_layer.nl_size ? -1 : 1);
	return (strcmp(la->ls_min, lb->ls_min));
}

/* Orders path indices ascending. */
static int
layer_index_cmp(const void *a, const void *b)
{
	size_t	ia = *(const size_t *)a, ib = *(const size_t *)b;

	return (ia < ib ? -1 : ia > ib);
}

/* Turns the groups left in the heap into the sorted layering. */
static void
layer_output(struct layer_merge *m, struct nix_layering *out)
{
	struct layer_sorted	*ls;
	struct layer_group	*lg;
	size_t			 n = m->lm_nheap, i, j, v;

	ls = xcalloc(n, sizeof *ls);
	for (i = 0; i < n; i++) {
		lg = &m->lm_groups[m->lm_heap[i]];
		ls[i].ls_maxpop = lg->lp_maxpop;
		ls[i].ls_min = m->lm_c->nc_paths[lg->lp_min].np_path;
		ls[i].ls_layer.nl_size = lg->lp_size;
		ls[i].ls_layer.nl_rating = lg->lp_rating;
		ls[i].ls_layer.nl_npaths = lg->lp_count;
		ls[i].ls_layer.nl_paths = xreallocarray(NULL, lg->lp_count,
		    sizeof *ls[i].ls_layer.nl_paths);
		for (j = 0, v = lg->lp_head; v != SIZE_MAX; v = m->lm_next[v])
			ls[i].ls_layer.nl_paths[j++] = v;
		qsort(ls[i].ls_layer.nl_paths, j, sizeof (size_t),
		    layer_index_cmp);
	}
	qsort(ls, n, sizeof *ls, layer_sorted_cmp);
	out->nl_layers = xcalloc(n, sizeof *out->nl_layers);
	out->nl_nlayers = n;
	for (i = 0; i < n; i++)
		out->nl_layers[i] = ls[i].ls_layer;
	free(ls);
}

/* Groups a closure into at most budget layers (0 counts as 1). */
void
nix_layer_group(const struct nix_closure *c, json_t *popularity,
    size_t budget, struct nix_layering *out)
{
	struct layer_graph	 g;
	struct layer_merge	 m;
	uint64_t		*pop;
	size_t			*idom, i;

	memset(out, 0, sizeof *out);
	if (c->nc_npaths == 0)
		return;
	pop = xreallocarray(NULL, c->nc_npaths, sizeof *pop);
	for (i = 0; i < c->nc_npaths; i++)
		pop[i] = nix_popularity_get(popularity, c->nc_paths[i].np_path);
	layer_graph_build(c, pop, &g);
	idom = xreallocarray(NULL, g.lg_n, sizeof *idom);
	nix_dominators(g.lg_n, g.lg_succ, g.lg_nsucc, idom);
	memset(&m, 0, sizeof m);
	m.lm_c = c;
	layer_groups(&m, idom, pop);
	layer_budget(&m, budget == 0 ? 1 : budget);
	layer_output(&m, out);
	log_debug("%s: %zu paths in %zu layers (%zu before merging)",
	    __func__, c->nc_npaths, out->nl_nlayers, m.lm_ngroups);
	free(m.lm_groups);
	free(m.lm_next);
	free(m.lm_heap);
	free(idom);
	free(pop);
	layer_graph_free(&g);
}

/* Frees the layers of a layering. */
void
nix_layering_clear(struct nix_layering *l)
{
	size_t	i;

	for (i = 0; i < l->nl_nlayers; i++)
		free(l->nl_layers[i].nl_paths);
	free(l->nl_layers);
	l->nl_layers = NULL;
	l->nl_nlayers = 0;
}

/*
 * Layering version 2: layers that stay put across images.
 *
 * Version 1 (nix_layer_group) decides by the image's own graph: a path
 * referenced by one package of an image joins that package's layer, and
 * gets its own once a second package references it, so its bytes move
 * again under a new digest.  Here nothing depends on which other paths
 * the image holds, as long as the closure fits the budget:
 *
 *   - every store path is a layer of its own;
 *   - only past the budget are paths merged, the smallest first: the
 *     budget minus what the merged ones need stay alone, largest first,
 *     and the rest join one of min(32, budget) buckets chosen by the first
 *     character of their hash, which is the path's own and not the image's.
 *
 * The order is popular first (the popularity file, cacert and iana-etc
 * forced), then by the size of a path's own closure, smallest first (a
 * property of the path: its hash fixes its references), so the paths
 * everything depends on come first and Docker's ChainIDs agree across
 * images as far as they can; then by store path.
 */

/* The number of paths reachable from each path, itself included. */
static void
layer_closure_counts(const struct nix_closure *c, size_t *count)
{
	uint8_t	*seen;
	size_t	*stack, i, k, top, p, r;

	seen = xcalloc(c->nc_npaths, 1);
	stack = xreallocarray(NULL, c->nc_npaths + 1, sizeof *stack);
	for (i = 0; i < c->nc_npaths; i++) {
		memset(seen, 0, c->nc_npaths);
		count[i] = 0;
		top = 0;
		stack[top++] = i;
		seen[i] = 1;
		while (top > 0) {
			p = stack[--top];
			count[i]++;
			for (k = 0; k < c->nc_paths[p].np_nrefs; k++) {
				r = c->nc_paths[p].np_refs[k];
				if (r < c->nc_npaths && !seen[r]) {
					seen[r] = 1;
					stack[top++] = r;
				}
			}
		}
	}
	free(stack);
	free(seen);
}

/* A path by size, for choosing who stays alone. */
struct layer2_bysize {
	uint64_t	 ls_size;
	size_t		 ls_path;
};

/* Larger NAR first, then the smaller path. */
static int
layer2_size_cmp(const void *a, const void *b)
{
	const struct layer2_bysize	*x = a, *y = b;

	if (x->ls_size != y->ls_size)
		return (x->ls_size > y->ls_size ? -1 : 1);
	return (x->ls_path < y->ls_path ? -1 : x->ls_path > y->ls_path);
}

/* The bucket of a merged path: its hash's first character. */
static size_t
layer2_bucket(const char *path, size_t nbuckets)
{
	static const char	 b32[] = "0123456789abcdfghijklmnpqrsvwxyz";
	const char		*name = path, *p;

	if (strncmp(name, "/nix/store/", 11) == 0)
		name += 11;
	p = strchr(b32, name[0]);
	return ((p != NULL && *p != '\0' ? (size_t)(p - b32) : 0) % nbuckets);
}

/* A layer with what orders it. */
struct layer2_sorted {
	uint64_t		 lo_pop;	/* its most popular path's */
	size_t			 lo_closure;	/* its smallest own closure */
	size_t			 lo_first;	/* its first path */
	struct nix_layer	 lo_layer;
};

/* Popular first, then the smaller own closure, then the smaller path. */
static int
layer2_order_cmp(const void *a, const void *b)
{
	const struct layer2_sorted	*x = a, *y = b;

	if (x->lo_pop != y->lo_pop)
		return (x->lo_pop > y->lo_pop ? -1 : 1);
	if (x->lo_closure != y->lo_closure)
		return (x->lo_closure < y->lo_closure ? -1 : 1);
	/* A path is in one layer only: the first paths differ. */
	return (x->lo_first < y->lo_first ? -1 : x->lo_first > y->lo_first);
}

static int
layer2_index_cmp(const void *a, const void *b)
{
	size_t	 i = *(const size_t *)a, j = *(const size_t *)b;

	return (i < j ? -1 : i > j);
}

/* Groups a closure into at most budget layers, version 2; see above. */
void
nix_layer_group_stable(const struct nix_closure *c, json_t *popularity,
    size_t budget, struct nix_layering *out)
{
	struct layer2_bysize	*bysize;
	struct layer2_sorted	*sl, *o;
	struct nix_layer	*l;
	uint64_t		 pop;
	size_t			*count, *bucket, n = c->nc_npaths;
	size_t			 own, nb = 0, nl = 0, used, i, k, b;
	uint8_t			*full;

	memset(out, 0, sizeof *out);
	if (n == 0)
		return;
	if (budget == 0)
		budget = 1;
	count = xreallocarray(NULL, n, sizeof *count);
	layer_closure_counts(c, count);
	bysize = xreallocarray(NULL, n, sizeof *bysize);
	for (i = 0; i < n; i++) {
		bysize[i].ls_size = c->nc_paths[i].np_narsize;
		bysize[i].ls_path = i;
	}
	qsort(bysize, n, sizeof *bysize, layer2_size_cmp);

	/* How many stay alone: all, or as many as the buckets leave. */
	bucket = xcalloc(n, sizeof *bucket);
	full = xcalloc(32, 1);
	own = n;
	if (n > budget) {
		nb = budget < 32 ? budget : 32;
		for (i = 0; i < n; i++)
			bucket[i] = layer2_bucket(c->nc_paths[i].np_path, nb);
		for (own = budget - 1;; own--) {
			memset(full, 0, nb);
			for (used = 0, i = own; i < n; i++)
				if (!full[bucket[bysize[i].ls_path]]) {
					full[bucket[bysize[i].ls_path]] = 1;
					used++;
				}
			if (own + used <= budget || own == 0)
				break;
		}
	}

	sl = xcalloc(budget + 1, sizeof *sl);
	for (i = 0; i < own; i++) {
		l = &sl[nl++].lo_layer;
		l->nl_paths = xcalloc(1, sizeof *l->nl_paths);
		l->nl_paths[l->nl_npaths++] = bysize[i].ls_path;
		l->nl_size = bysize[i].ls_size;
	}
	for (b = 0; b < nb; b++) {
		l = &sl[nl].lo_layer;
		for (i = own; i < n; i++) {
			if (bucket[bysize[i].ls_path] != b)
				continue;
			l->nl_paths = xreallocarray(l->nl_paths,
			    l->nl_npaths + 1, sizeof *l->nl_paths);
			l->nl_paths[l->nl_npaths++] = bysize[i].ls_path;
			l->nl_size += bysize[i].ls_size;
		}
		if (l->nl_npaths > 0) {
			qsort(l->nl_paths, l->nl_npaths, sizeof *l->nl_paths,
			    layer2_index_cmp);
			nl++;
		}
	}
	for (i = 0; i < nl; i++) {
		o = &sl[i];
		o->lo_closure = SIZE_MAX;
		o->lo_first = o->lo_layer.nl_paths[0];
		for (k = 0; k < o->lo_layer.nl_npaths; k++) {
			pop = nix_popularity_get(popularity,
			    c->nc_paths[o->lo_layer.nl_paths[k]].np_path);
			if (pop > o->lo_pop)
				o->lo_pop = pop;
			if (count[o->lo_layer.nl_paths[k]] < o->lo_closure)
				o->lo_closure = count[o->lo_layer.nl_paths[k]];
		}
	}
	qsort(sl, nl, sizeof *sl, layer2_order_cmp);
	out->nl_layers = xcalloc(nl, sizeof *out->nl_layers);
	for (i = 0; i < nl; i++)
		out->nl_layers[i] = sl[i].lo_layer;
	out->nl_nlayers = nl;
	log_debug("%s: %zu paths in %zu layers (%zu alone)", __func__, n, nl,
	    own);
	free(sl);
	free(full);
	free(bucket);
	free(bysize);
	free(count);
}
