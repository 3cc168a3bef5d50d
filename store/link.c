/*
 * store/link.c: repository links, the record of which repository holds a
 * digest.
 *
 * A stored blob or manifest is served under a repository only when that
 * repository links to it: content fetched for library/busybox is not
 * readable as library/big, nor under a Nix name.  A link is made when a
 * manifest naming the digest is fetched or built for the repository (the
 * manifest, its config, its layers and its child manifests, and theirs),
 * or when the repository's upstream confirms it holds the digest.  A link
 * to a digest not (or no longer) stored is harmless: the bytes are only
 * ever served after they matched the digest.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sqlite3.h>

#include "nixmirror.h"
#include "policy/policy.h"
#include "store/store.h"
#include "store/store_int.h"

#define LINK_MAX_MANIFEST	(4 * 1024 * 1024)
#define LINK_MAX_DEPTH		2	/* an index, its manifests, theirs */

/* The digests a link of a manifest covers. */
struct link_set {
	char		(*ls_digests)[NM_DIGEST_SIZE];
	size_t		 ls_n;
	size_t		 ls_cap;
};

static void	link_set_add(struct link_set *, const char *);
static void	link_collect(struct store *, struct link_set *, const char *,
		    int);
static int	link_insert(struct store *, const char *, const char *,
		    const struct link_set *);

/* A stored manifest or index as a JSON object; NULL when it is not one. */
json_t *
store_manifest_json(struct store *st, const char *digest)
{
	struct stat	 sb;
	json_t		*root = NULL;
	char		*path;

	if ((path = store_blob_path(st, digest)) == NULL)
		return (NULL);
	if (stat(path, &sb) == 0 && sb.st_size <= LINK_MAX_MANIFEST)
		root = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
	free(path);
	if (root != NULL && !json_is_object(root)) {
		json_decref(root);
		root = NULL;
	}
	return (root);
}

/* Adds a digest to a set once; anything but a valid digest is ignored. */
static void
link_set_add(struct link_set *ls, const char *digest)
{
	size_t	 i;

	if (digest == NULL || !policy_digest_valid(digest))
		return;
	for (i = 0; i < ls->ls_n; i++)
		if (strcmp(ls->ls_digests[i], digest) == 0)
			return;
	if (ls->ls_n == ls->ls_cap) {
		ls->ls_cap = ls->ls_cap == 0 ? 16 : ls->ls_cap * 2;
		ls->ls_digests = xreallocarray(ls->ls_digests, ls->ls_cap,
		    sizeof *ls->ls_digests);
	}
	memcpy(ls->ls_digests[ls->ls_n++], digest, NM_DIGEST_SIZE);
}

/*
 * Adds a manifest and what it references to a set: its config, layers
 * and blobs, and its child manifests with what those reference when they
 * are stored.  A manifest that is not stored adds only itself.
 */
static void
link_collect(struct store *st, struct link_set *ls, const char *digest,
    int depth)
{
	static const char *const lists[] = { "layers", "manifests", "blobs" };
	json_t		*root, *v;
	const char	*d;
	size_t		 i, j;

	link_set_add(ls, digest);
	if (depth > LINK_MAX_DEPTH ||
	    (root = store_manifest_json(st, digest)) == NULL)
		return;
	link_set_add(ls, json_string_value(json_object_get(json_object_get(
	    root, "config"), "digest")));
	for (i = 0; i < sizeof lists / sizeof lists[0]; i++) {
		json_array_foreach(json_object_get(root, lists[i]), j, v) {
			d = json_string_value(json_object_get(v, "digest"));
			if (i == 1 && d != NULL && policy_digest_valid(d))
				link_collect(st, ls, d, depth + 1);
			else
				link_set_add(ls, d);
		}
	}
	json_decref(root);
}

/* Inserts the links of a set; lock held, inside a transaction. */
static int
link_insert(struct store *st, const char *ns, const char *repo,
    const struct link_set *ls)
{
	size_t	 i;
	char	*key;

	for (i = 0; i < ls->ls_n; i++) {
		if (store_db_run(st, __func__, store_db_stmt(st, __func__,
		    "INSERT OR IGNORE INTO links (ns, repo, digest, created)"
		    " VALUES (?, ?, ?, ?)", "ttti", ns, repo,
		    ls->ls_digests[i], (int64_t)time(NULL))) == -1)
			return (-1);
		/* A new link goes to the bucket, for the other replicas. */
		if (st->st_s3 != NULL && sqlite3_changes(st->st_w.sc_db) > 0 &&
		    (key = store_remote_repo_key(ns, repo, "_links",
		    ls->ls_digests[i] + 7)) != NULL) {
			store_remote_queue(st, key, NULL, "");
			free(key);
		}
	}
	return (0);
}

/* Links a set in one transaction; 0 or -1. */
static int
link_commit(struct store *st, const char *ns, const char *repo,
    const struct link_set *ls)
{
	int	 rv = -1;

	store_lock(st);
	if (store_db_exec(st, "BEGIN IMMEDIATE") == 0) {
		if (link_insert(st, ns, repo, ls) == 0 &&
		    store_db_exec(st, "COMMIT") == 0)
			rv = 0;
		else
			store_db_exec(st, "ROLLBACK");
	}
	store_unlock(st);
	return (rv);
}

/* Whether repository (ns, repo) links to digest: 1, else 0. */
int
store_link_has(struct store *st, const char *ns, const char *repo,
    const char *digest)
{
	sqlite3_stmt	*stmt;
	int		 rv;

	store_rlock(st);
	stmt = store_db_rstmt(st, __func__, "SELECT 1 FROM links"
	    " WHERE ns = ? AND repo = ? AND digest = ?", "ttt", ns, repo,
	    digest);
	rv = store_db_rrow(st, __func__, stmt) == 0;
	store_db_rdone(st, stmt);
	store_runlock(st);
	return (rv);
}

/* Links one digest to (ns, repo); 0 or -1. */
int
store_link_put(struct store *st, const char *ns, const char *repo,
    const char *digest)
{
	struct link_set	 ls;
	int		 rv;

	memset(&ls, 0, sizeof ls);
	link_set_add(&ls, digest);
	if (ls.ls_n == 0)
		return (-1);
	rv = link_commit(st, ns, repo, &ls);
	free(ls.ls_digests);
	return (rv);
}

/*
 * Links a stored manifest and what it references to (ns, repo), in one
 * transaction; 0 or -1.
 */
int
store_link_manifest(struct store *st, const char *ns, const char *repo,
    const char *digest)
{
	struct link_set	 ls;
	int		 rv;

	memset(&ls, 0, sizeof ls);
	link_collect(st, &ls, digest, 0);
	if (ls.ls_n == 0)
		return (-1);
	rv = link_commit(st, ns, repo, &ls);
	free(ls.ls_digests);
	return (rv);
}

/*
 * The one-time backfill of links in the migration that adds them: every
 * repository links to the manifests its tags pointed at, and to what they
 * reference.  Nix images were stored by package set, not by name, so they
 * are linked when a name is next pulled by tag.  Runs inside the
 * migration's transaction, before the store is shared; 0 or -1.
 */
int
store_link_backfill(struct store *st)
{
	struct link_row {
		char	*ns, *repo;
		char	 digest[NM_DIGEST_SIZE];
	}		*rows = NULL;
	struct link_set	 ls;
	sqlite3_stmt	*stmt;
	const char	*ns, *repo, *d;
	size_t		 n = 0, cap = 0, i;
	int		 rc, rv = 0;

	stmt = store_db_stmt(st, __func__, "SELECT DISTINCT ns, repo, digest"
	    " FROM upstream_tags", "");
	if (stmt == NULL)
		return (-1);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		ns = (const char *)sqlite3_column_text(stmt, 0);
		repo = (const char *)sqlite3_column_text(stmt, 1);
		d = (const char *)sqlite3_column_text(stmt, 2);
		if (ns == NULL || repo == NULL || d == NULL ||
		    !policy_digest_valid(d))
			continue;
		if (n == cap) {
			cap = cap == 0 ? 64 : cap * 2;
			rows = xreallocarray(rows, cap, sizeof *rows);
		}
		rows[n].ns = xstrdup(ns);
		rows[n].repo = xstrdup(repo);
		memcpy(rows[n].digest, d, NM_DIGEST_SIZE);
		n++;
	}
	if (rc != SQLITE_DONE)
		rv = -1;
	store_db_done(st, stmt);
	for (i = 0; i < n; i++) {
		if (rv == 0) {
			memset(&ls, 0, sizeof ls);
			link_collect(st, &ls, rows[i].digest, 0);
			rv = link_insert(st, rows[i].ns, rows[i].repo, &ls);
			free(ls.ls_digests);
		}
		free(rows[i].ns);
		free(rows[i].repo);
	}
	free(rows);
	if (rv == 0 && n > 0)
		log_info("%s: linked %zu tagged manifests to their repositories",
		    __func__, n);
	return (rv);
}
