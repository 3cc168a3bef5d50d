/*
 * test_eval.c: nix_run, nix_git_resolve and nix_closure_build against the
 * offline package set tests/pkgs (needs nix-instantiate, nix-store, nix
 * and git; no network).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nixmirror.h"
#include "nix/nix.h"

static int	passed, failed;
static char	pkgs[4096];

#define CHECK(c) do {							\
	if (c)								\
		passed++;						\
	else {								\
		failed++;						\
		printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #c);	\
	}								\
} while (0)

/* Seconds on the monotonic clock. */
static double
now(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (ts.tv_sec + ts.tv_nsec / 1e9);
}

/* Whether s ends with suffix. */
static int
endswith(const char *s, const char *suffix)
{
	size_t	 a = strlen(s), b = strlen(suffix);

	return (a >= b && strcmp(s + a - b, suffix) == 0);
}

/* Runs a shell command line through nix_run; its exit code. */
static int
sh(int timeout, const char *cmd, char **out, char **err)
{
	char	*argv[4];

	argv[0] = (char *)(uintptr_t)"sh";
	argv[1] = (char *)(uintptr_t)"-c";
	argv[2] = (char *)(uintptr_t)cmd;
	argv[3] = NULL;

	return (nix_run(argv, timeout, out, err));
}

/* nix_run: output, exit codes, stdin, timeouts and limits. */
static void
test_run(void)
{
	char	*out, *err, *argv[2];
	double	 t;
	int	 rc;

	rc = sh(5, "echo hi; echo oops >&2", &out, &err);
	CHECK(rc == NIX_OK);
	CHECK(strcmp(out, "hi\n") == 0);
	CHECK(strcmp(err, "oops\n") == 0);
	free(out);
	free(err);

	rc = sh(5, "echo bad >&2; exit 3", &out, &err);
	CHECK(rc == NIX_EFAIL);
	CHECK(strcmp(out, "") == 0 && strcmp(err, "bad\n") == 0);
	free(out);
	free(err);

	/* stdin is /dev/null: cat ends at once. */
	rc = sh(5, "cat; echo done", &out, NULL);
	CHECK(rc == NIX_OK && strcmp(out, "done\n") == 0);
	free(out);

	rc = sh(5, "yes | head -c 3000000", &out, NULL);
	CHECK(rc == NIX_OK && strlen(out) == 3000000);
	free(out);

	/* A child that closes its output but goes on is still timed out. */
	t = now();
	rc = sh(1, "exec >/dev/null 2>&1; sleep 30", NULL, NULL);
	CHECK(rc == NIX_ETIMEOUT && now() - t < 3);

	/* Too much output is refused. */
	rc = sh(30, "yes | head -c 80000000", NULL, NULL);
	CHECK(rc == NIX_EFAIL);

	argv[0] = (char *)(uintptr_t)"/nonexistent/prog";
	argv[1] = NULL;
	CHECK(nix_run(argv, 5, NULL, NULL) == NIX_EFAIL);
}

/* Checks a background child of a timed-out command was killed too. */
static void
test_run_group(void)
{
	char	*out = NULL, *chk = NULL, cmd[256];
	int	 pid, rc;

	rc = sh(1, "sleep 30 & echo $!; wait", &out, NULL);
	CHECK(rc == NIX_ETIMEOUT);
	pid = out != NULL ? atoi(out) : 0;
	CHECK(pid > 0);
	usleep(200000);
	snprintf(cmd, sizeof cmd, "f=/proc/%d/stat; test ! -e $f || "
	    "grep -q ') Z' $f", pid);
	CHECK(sh(5, cmd, &chk, NULL) == NIX_OK);
	free(chk);
	free(out);
}

/* Builds a closure from the test package set. */
static int
build(const char *loc, const char *rev, const char *system,
    const char *pkg1, const char *pkg2, struct nix_closure *nc, char **cause)
{
	struct nix_source	 src;
	struct nix_request	 req;
	char			*names[2];

	memset(&req, 0, sizeof req);
	src.ns_type = rev != NULL ? NM_SOURCE_REPO : NM_SOURCE_PATH;
	src.ns_loc = loc;
	src.ns_rev = rev;
	names[0] = (char *)(uintptr_t)pkg1;
	names[1] = (char *)(uintptr_t)pkg2;
	req.nr_pkgs = names;
	req.nr_npkgs = pkg2 != NULL ? 2 : 1;
	req.nr_system = system;
	return (nix_closure_build(&src, &req, 60, NULL, nc, cause));
}

/* The index of the closure path whose name ends with suffix. */
static size_t
find(const struct nix_closure *nc, const char *suffix)
{
	size_t	 i;

	for (i = 0; i < nc->nc_npaths; i++) {
		if (endswith(nc->nc_paths[i].np_path, suffix))
			return (i);
	}
	return (SIZE_MAX);
}

/* Whether path a references path b. */
static int
refers(const struct nix_closure *nc, size_t a, size_t b)
{
	size_t	 i;

	if (a == SIZE_MAX || b == SIZE_MAX)
		return (0);
	for (i = 0; i < nc->nc_paths[a].np_nrefs; i++) {
		if (nc->nc_paths[a].np_refs[i] == b)
			return (1);
	}
	return (0);
}

/* figlet and hello: paths, references, roots, Cmd and cacert. */
static void
test_closure_hello(const char *loc, const char *rev)
{
	struct nix_closure	 nc;
	char			*cause = NULL;
	size_t			 hello, bb, common, i;
	int			 rc, sorted = 1;

	rc = build(loc, rev, NM_SYSTEM_X86, "figlet", "hello", &nc, &cause);
	CHECK(rc == NIX_OK && cause == NULL);
	if (rc != NIX_OK) {
		printf("cause: %s\n", cause);
		free(cause);
		return;
	}
	hello = find(&nc, "-hello-1.0");
	bb = find(&nc, "-busybox-1.35.0");
	common = find(&nc, "-libcommon-1.0");
	CHECK(nc.nc_npaths == 7);
	CHECK(refers(&nc, hello, bb) && refers(&nc, hello, common));
	CHECK(refers(&nc, find(&nc, "-figlet-2.2.5"),
	    find(&nc, "-libfig-2.2.5")));
	CHECK(bb != SIZE_MAX && nc.nc_paths[bb].np_nrefs == 0);
	CHECK(common != SIZE_MAX && nc.nc_paths[common].np_narsize > 1048576);
	for (i = 1; i < nc.nc_npaths; i++)
		if (strcmp(nc.nc_paths[i - 1].np_path,
		    nc.nc_paths[i].np_path) >= 0)
			sorted = 0;
	CHECK(sorted);
	CHECK(nc.nc_nroots == 4);
	CHECK(nc.nc_nroots == 4 && nc.nc_roots[1] == hello &&
	    strcmp(nc.nc_rootpaths[1], nc.nc_paths[hello].np_path) == 0);
	CHECK(nc.nc_nroots == 4 &&
	    endswith(nc.nc_rootpaths[0], "-figlet-2.2.5") &&
	    endswith(nc.nc_rootpaths[2], "-nss-cacert-3.95") &&
	    endswith(nc.nc_rootpaths[3], "-iana-etc-20231227"));
	CHECK(nc.nc_cmd != NULL &&
	    endswith(nc.nc_cmd, "-hello-1.0/bin/hello") &&
	    access(nc.nc_cmd, X_OK) == 0);
	CHECK(nc.nc_cacert != NULL &&
	    endswith(nc.nc_cacert, "-nss-cacert-3.95"));
	nix_closure_clear(&nc);
	CHECK(nc.nc_paths == NULL && nc.nc_cmd == NULL);
}

/* Case-insensitive, nested, ambiguous, missing, invalid and failing names. */
static void
test_closure_names(void)
{
	struct nix_closure	 nc;
	char			*cause = NULL;
	int			 rc;

	rc = build(pkgs, NULL, NM_SYSTEM_X86, "htop", NULL, &nc, &cause);
	CHECK(rc == NIX_OK && nc.nc_nroots == 3 &&
	    endswith(nc.nc_rootpaths[0], "-htop-3.2.2") && nc.nc_cmd == NULL);
	nix_closure_clear(&nc);
	free(cause);
	cause = NULL;

	rc = build(pkgs, NULL, NM_SYSTEM_X86, "haskellpackages.pandoc", NULL,
	    &nc, &cause);
	CHECK(rc == NIX_OK && nc.nc_nroots == 3 &&
	    endswith(nc.nc_rootpaths[0], "-pandoc-3.1.9"));
	nix_closure_clear(&nc);
	free(cause);
	cause = NULL;

	rc = build(pkgs, NULL, NM_SYSTEM_X86, "dup", "nope", &nc, &cause);
	CHECK(rc == NIX_ENOTFOUND && nc.nc_paths == NULL);
	CHECK(cause != NULL && strcmp(cause, "packages not found in the "
	    "package set: nope; ambiguous package name \"dup\": candidates "
	    "DUP, Dup") == 0);
	free(cause);
	cause = NULL;

	rc = build(pkgs, NULL, NM_SYSTEM_X86, "notadrv", NULL, &nc, &cause);
	CHECK(rc == NIX_ENOTFOUND && cause != NULL &&
	    strstr(cause, "\"notadrv\" is not a derivation") != NULL);
	free(cause);
	cause = NULL;

	rc = build(pkgs, NULL, NM_SYSTEM_X86, "broken", NULL, &nc, &cause);
	CHECK(rc == NIX_EFAIL && cause != NULL &&
	    strstr(cause, "-broken-1.0.drv failed") != NULL &&
	    endswith(cause, ": intentional failure"));
	free(cause);
	cause = NULL;

	rc = build(pkgs, NULL, NM_SYSTEM_ARM64, "hello", NULL, &nc, &cause);
	CHECK(rc == NIX_EFAIL && cause != NULL && strcmp(cause, "no builder "
	    "or cache for aarch64-linux: configure a remote builder or binary "
	    "cache") == 0);
	free(cause);
	cause = NULL;

	rc = build("/nonexistent/pkgs", NULL, NM_SYSTEM_X86, "hello", NULL,
	    &nc, &cause);
	CHECK(rc == NIX_EFAIL && cause != NULL);
	free(cause);
}

/* Runs a command line in a directory; exits on failure. */
static void
git(const char *dir, const char *cmd)
{
	char	*line, *err = NULL;

	xasprintf(&line, "cd '%s' && %s", dir, cmd);
	if (sh(30, line, NULL, &err) != NIX_OK) {
		printf("FAIL setup: %s: %s\n", line, err);
		exit(1);
	}
	free(line);
	free(err);
}

/* The commit a ref names in a repository. */
static char *
revparse(const char *dir, const char *ref)
{
	char	*line, *out = NULL;

	xasprintf(&line, "git -C '%s' rev-parse '%s^{commit}'", dir, ref);
	if (sh(10, line, &out, NULL) != NIX_OK || strlen(out) < 40)
		exit(1);
	out[40] = '\0';
	free(line);
	return (out);
}

/* Git refs to commits, and a closure from a repository at a commit. */
static void
test_git(const char *dir)
{
	char	 commit[41], *cause = NULL, *c1, *c2, *c3, *url;

	git(dir, "cp -r \"$NM_PKGS\"/. . && git init -q -b main . && "
	    "git add . && git -c user.name=t -c user.email=t@t commit -qm one "
	    "&& git tag v1 && git -c user.name=t -c user.email=t@t tag -a "
	    "v1a -m annotated && echo '# two' >> default.nix && "
	    "git -c user.name=t -c user.email=t@t commit -qam two && "
	    "git checkout -qb side && echo '# side' >> default.nix && "
	    "git -c user.name=t -c user.email=t@t commit -qam side && "
	    "git checkout -q main && git tag side");
	c1 = revparse(dir, "v1");
	c2 = revparse(dir, "main");
	c3 = revparse(dir, "refs/heads/side");
	xasprintf(&url, "file://%s", dir);

	CHECK(nix_git_resolve(dir, "latest", 10, commit, &cause) == NIX_OK &&
	    strcmp(commit, c2) == 0);
	CHECK(nix_git_resolve(url, "v1", 10, commit, &cause) == NIX_OK &&
	    strcmp(commit, c1) == 0);
	CHECK(nix_git_resolve(dir, "v1a", 10, commit, &cause) == NIX_OK &&
	    strcmp(commit, c1) == 0);
	/* A tag named like a branch wins over the branch. */
	CHECK(nix_git_resolve(dir, "side", 10, commit, &cause) == NIX_OK &&
	    strcmp(commit, c2) == 0);
	CHECK(nix_git_resolve(dir, "main", 10, commit, &cause) == NIX_OK &&
	    strcmp(commit, c2) == 0);
	CHECK(nix_git_resolve(dir, c3, 10, commit, &cause) == NIX_OK &&
	    strcmp(commit, c3) == 0);
	CHECK(nix_git_resolve(dir, "nope", 10, commit, &cause) ==
	    NIX_ENOTFOUND && cause != NULL &&
	    strcmp(cause, "revision nope not found in the package "
	    "repository") == 0 && strstr(cause, dir) == NULL);
	free(cause);
	cause = NULL;
	CHECK(nix_git_resolve("-uhoh", "latest", 10, commit, &cause) ==
	    NIX_EFAIL && cause != NULL);
	free(cause);
	cause = NULL;
	CHECK(nix_git_resolve("/nonexistent/repo", "latest", 10, commit,
	    &cause) == NIX_EFAIL && cause != NULL);
	free(cause);

	test_closure_hello(dir, c3);
	free(c1);
	free(c2);
	free(c3);
	free(url);
}

/* Runs a long child from a thread. */
static void *
killall_child(void *arg)
{
	int	*rc = arg;

	*rc = sh(60, "sleep 30", NULL, NULL);
	return (NULL);
}

/* nix_run_killall ends running children and refuses new ones. */
static void
test_killall(void)
{
	pthread_t	 t;
	double		 t0;
	int		 rc = -1;

	t0 = now();
	pthread_create(&t, NULL, killall_child, &rc);
	usleep(300000);
	nix_run_killall();
	pthread_join(t, NULL);
	CHECK(rc == NIX_EFAIL && now() - t0 < 5);
	CHECK(sh(5, "true", NULL, NULL) == NIX_EFAIL);
}

int
main(void)
{
	const char	*top;
	char		 dir[] = "/tmp/test_eval.XXXXXX";
	char		*cmd;

	log_init(0);
	if ((top = getenv("NM_TOP")) == NULL)
		top = ".";
	snprintf(pkgs, sizeof pkgs, "%s/tests/pkgs", top);
	setenv("NM_PKGS", pkgs, 1);
	setenv("NIXMIRROR_OFFLINE", "1", 1);
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return (1);
	}

	test_run();
	test_run_group();
	test_closure_hello(pkgs, NULL);
	test_closure_names();
	test_git(dir);

	xasprintf(&cmd, "rm -rf '%s'", dir);
	sh(30, cmd, NULL, NULL);
	free(cmd);
	test_killall();

	printf("test_eval: %d passed, %d failed\n", passed, failed);
	return (failed != 0);
}
