/*
 * nix/eval.c: running Nix (and git) as child processes: evaluating a
 * request against a package set, realising it and reading its runtime
 * closure, and resolving git refs to commits.
 *
 * Everything here blocks; it runs in build worker threads.  Children are
 * started with posix_spawnp (safe in a multi-threaded process) in their
 * own process group, so a timeout or shutdown kills the whole tree.
 *
 * Offline use: when the environment variable NIXMIRROR_OFFLINE=1 is set
 * (the tests set it), every Nix command gets `--option substituters ''`
 * so Nix does not spend seconds retrying cache.nixos.org.  A real
 * deployment leaves it unset and keeps its configured binary caches.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1	/* pipe2 */
#endif

#include <sys/types.h>
#include <sys/wait.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "nixmirror.h"
#include "nix/nix.h"

extern char **environ;

/* The most output kept from one child stream. */
#define NIX_RUN_MAX	(64 * 1024 * 1024)

/* The most arguments of one command. */
#define NIX_ARGV_MAX	4096

/*
 * The evaluation helper.  It gets only the JSON request as data (never
 * user text in the expression): {source = {type; loc; rev}; system;
 * pkgs = [attribute paths]; extra = [names]}.  It imports the package
 * set, resolves every attribute path level by level (exact name, else
 * the one case-insensitive match), lazily so a missing name never forces
 * the whole set, and answers with the missing, ambiguous and invalid
 * names and the derivation and output path of every other one.
 */
static const char nix_eval_expr[] =
"{ request }:\n"
"let\n"
"  req = builtins.fromJSON request;\n"
"  src = req.source;\n"
"\n"
"  upper = [ \"A\" \"B\" \"C\" \"D\" \"E\" \"F\" \"G\" \"H\" \"I\" \"J\"\n"
"    \"K\" \"L\" \"M\" \"N\" \"O\" \"P\" \"Q\" \"R\" \"S\" \"T\" \"U\" \"V\"\n"
"    \"W\" \"X\" \"Y\" \"Z\" ];\n"
"  lower = [ \"a\" \"b\" \"c\" \"d\" \"e\" \"f\" \"g\" \"h\" \"i\" \"j\"\n"
"    \"k\" \"l\" \"m\" \"n\" \"o\" \"p\" \"q\" \"r\" \"s\" \"t\" \"u\" \"v\"\n"
"    \"w\" \"x\" \"y\" \"z\" ];\n"
"  toLower = builtins.replaceStrings upper lower;\n"
"  join = builtins.concatStringsSep \".\";\n"
"  tryOr = def: v:\n"
"    let r = builtins.tryEval v; in if r.success then r.value else def;\n"
"  tryDeep = def: v:\n"
"    let r = builtins.tryEval (builtins.deepSeq v v);\n"
"    in if r.success then r.value else def;\n"
"  # meta.license as SPDX ids joined by AND, or null when one has none.\n"
"  licenseOf = l:\n"
"    let\n"
"      one = x: if builtins.isAttrs x && builtins.isString (x.spdxId or null)\n"
"        then x.spdxId else null;\n"
"      ids = map one (if builtins.isList l then l else [ l ]);\n"
"    in if l == null || ids == [ ] || builtins.elem null ids then null\n"
"      else builtins.concatStringsSep \" AND \" ids;\n"
"  homepageOf = h:\n"
"    if builtins.isString h then h\n"
"    else if builtins.isList h && h != [ ]\n"
"      && builtins.isString (builtins.head h)\n"
"    then builtins.head h else null;\n"
"\n"
"  fetched =\n"
"    if src.type == \"path\" then /. + src.loc\n"
"    else if src.type == \"repo\" then builtins.fetchGit ({\n"
"      url = src.loc;\n"
"    } // (if src.rev == null then { } else {\n"
"      rev = src.rev;\n"
"      allRefs = true;\n"
"    }))\n"
"    else if builtins.match \"[0-9a-f]{40}\" src.loc != null then\n"
"      builtins.fetchTarball\n"
"        \"https://github.com/NixOS/nixpkgs/archive/${src.loc}.tar.gz\"\n"
"    else builtins.fetchTarball\n"
"      \"https://nixos.org/channels/${src.loc}/nixexprs.tar.xz\";\n"
"  imported = import fetched;\n"
"  called =\n"
"    if builtins.isFunction imported then\n"
"      imported (if (builtins.functionArgs imported) ? system\n"
"        then { system = req.system; } else { })\n"
"    else imported;\n"
"  pkgs =\n"
"    if builtins.isAttrs called then called\n"
"    else throw \"the package set is not an attribute set\";\n"
"\n"
"  # One level of an attribute path: exact, else case-insensitive.\n"
"  step = acc: part:\n"
"    let\n"
"      isSet = builtins.tryEval (builtins.isAttrs acc.value);\n"
"      cands = builtins.filter (n: toLower n == toLower part)\n"
"        (builtins.attrNames acc.value);\n"
"    in\n"
"    if acc ? error then acc\n"
"    else if !isSet.success then {\n"
"      error = \"invalid\";\n"
"      reason = \"cannot be evaluated (${join acc.attr} fails)\";\n"
"    }\n"
"    else if !isSet.value then { error = \"missing\"; }\n"
"    else if builtins.hasAttr part acc.value then {\n"
"      value = acc.value.${part};\n"
"      attr = acc.attr ++ [ part ];\n"
"    }\n"
"    else if cands == [ ] then { error = \"missing\"; }\n"
"    else if builtins.length cands == 1 then {\n"
"      value = acc.value.${builtins.head cands};\n"
"      attr = acc.attr ++ cands;\n"
"    }\n"
"    else {\n"
"      error = \"ambiguous\";\n"
"      candidates = map (c: join (acc.attr ++ [ c ])) cands;\n"
"    };\n"
"\n"
"  # A resolved value as a package, or why it is not one.\n"
"  describe = name: r:\n"
"    let\n"
"      v = r.value;\n"
"      whnf = builtins.tryEval (builtins.isAttrs v);\n"
"      isDrv = tryOr false ((v.type or null) == \"derivation\");\n"
"      drv = builtins.tryEval v.drvPath;\n"
"      out = builtins.tryEval v.outPath;\n"
"      output = tryOr \"out\" (v.outputName or \"out\");\n"
"      prog = tryOr null (v.meta.mainProgram or null);\n"
"      lic = tryDeep null (licenseOf (v.meta.license or null));\n"
"      home = tryDeep null (homepageOf (v.meta.homepage or null));\n"
"    in\n"
"    if r ? error then r // { inherit name; }\n"
"    else if !whnf.success then {\n"
"      error = \"invalid\";\n"
"      inherit name;\n"
"      reason = \"cannot be evaluated (removed, broken or unsupported)\";\n"
"    }\n"
"    else if !whnf.value || !isDrv then {\n"
"      error = \"invalid\";\n"
"      inherit name;\n"
"      reason = \"is not a derivation\";\n"
"    }\n"
"    else if !drv.success || !out.success then {\n"
"      error = \"invalid\";\n"
"      inherit name;\n"
"      reason = \"cannot be evaluated (broken or unsupported)\";\n"
"    }\n"
"    else {\n"
"      inherit name output;\n"
"      attr = join r.attr;\n"
"      drv = drv.value;\n"
"      out = out.value;\n"
"      mainProgram = if builtins.isString prog then prog else null;\n"
"      license = lic;\n"
"      homepage = home;\n"
"    };\n"
"\n"
"  resolve = name:\n"
"    describe name (builtins.foldl' step { value = pkgs; attr = [ ]; }\n"
"      (builtins.filter builtins.isString (builtins.split \"[.]\" name)));\n"
"\n"
"  results = map resolve req.pkgs;\n"
"  errors = kind: builtins.filter (r: (r.error or null) == kind) results;\n"
"  extras = builtins.filter (r: !(r ? error))\n"
"    (map resolve (builtins.filter (e: builtins.hasAttr e pkgs) req.extra));\n"
"in\n"
"{\n"
"  missing = map (r: r.name) (errors \"missing\");\n"
"  ambiguous = map (r: { inherit (r) name candidates; })\n"
"    (errors \"ambiguous\");\n"
"  invalid = map (r: { inherit (r) name reason; }) (errors \"invalid\");\n"
"  pkgs = builtins.filter (r: !(r ? error)) results;\n"
"  extras = map (r: { inherit (r) name drv out output; }) extras;\n"
"}\n";

/* Running children, by process group, for nix_run_killall. */
static pthread_mutex_t	  run_mtx = PTHREAD_MUTEX_INITIALIZER;
static pid_t		 *run_pids;
static size_t		  run_npids;
static size_t		  run_sizepids;
static int		  run_dead;	/* after nix_run_killall */

/* Output collected from one child stream. */
struct nix_buf {
	char		*nb_data;
	size_t		 nb_len;
	size_t		 nb_size;
};

/* An argument vector being built. */
struct nix_argv {
	char		**na_argv;
	size_t		  na_n;
	size_t		  na_size;
};

/* Milliseconds on the monotonic clock. */
static int64_t
nix_now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* Whether Nix commands must not use binary caches (NIXMIRROR_OFFLINE=1). */
static int
nix_offline(void)
{
	const char	*e;

	e = getenv("NIXMIRROR_OFFLINE");
	return (e != NULL && strcmp(e, "1") == 0);
}

/* Appends a copy of an argument. */
static void
nix_argv_add(struct nix_argv *na, const char *arg)
{
	if (na->na_n + 2 > na->na_size) {
		na->na_size = na->na_size == 0 ? 16 : na->na_size * 2;
		na->na_argv = xreallocarray(na->na_argv, na->na_size,
		    sizeof *na->na_argv);
	}
	na->na_argv[na->na_n++] = xstrdup(arg);
	na->na_argv[na->na_n] = NULL;
}

/* Starts a Nix command line, with the offline option when asked for. */
static void
nix_argv_nix(struct nix_argv *na, const char *cmd)
{
	nix_argv_add(na, cmd);
	if (nix_offline()) {
		nix_argv_add(na, "--option");
		nix_argv_add(na, "substituters");
		nix_argv_add(na, "");
	}
}

/* Frees an argument vector. */
static void
nix_argv_clear(struct nix_argv *na)
{
	xstrvfree(na->na_argv, na->na_n);
	memset(na, 0, sizeof *na);
}

/* Adds a child's process group to the registry (run_mtx held). */
static void
nix_run_register(pid_t pid)
{
	if (run_npids == run_sizepids) {
		run_sizepids = run_sizepids == 0 ? 8 : run_sizepids * 2;
		run_pids = xreallocarray(run_pids, run_sizepids,
		    sizeof *run_pids);
	}
	run_pids[run_npids++] = pid;
}

/* Removes a child's process group from the registry. */
static void
nix_run_unregister(pid_t pid)
{
	size_t	 i;

	pthread_mutex_lock(&run_mtx);
	for (i = 0; i < run_npids; i++) {
		if (run_pids[i] == pid) {
			run_pids[i] = run_pids[--run_npids];
			break;
		}
	}
	pthread_mutex_unlock(&run_mtx);
}

/*
 * Kills the process groups of all running children and makes later
 * nix_run calls fail at once; for shutdown.
 */
void
nix_run_killall(void)
{
	size_t	 i;

	pthread_mutex_lock(&run_mtx);
	run_dead = 1;
	for (i = 0; i < run_npids; i++) {
		log_debug("%s: killing process group %ld", __func__,
		    (long)run_pids[i]);
		kill(-run_pids[i], SIGKILL);
	}
	pthread_mutex_unlock(&run_mtx);
}

/*
 * Spawns argv in its own process group with stdin from /dev/null and
 * stdout and stderr to the given fds, and registers it; -1 on failure.
 */
static pid_t
nix_run_spawn(char *const argv[], char *const envp[], int fdout, int fderr)
{
	posix_spawn_file_actions_t	 fa;
	posix_spawnattr_t		 attr;
	sigset_t			 mask, def;
	pid_t				 pid = -1;
	int				 error;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, fdout, 1);
	posix_spawn_file_actions_adddup2(&fa, fderr, 2);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
	    POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setpgroup(&attr, 0);
	sigemptyset(&mask);
	posix_spawnattr_setsigmask(&attr, &mask);
	sigemptyset(&def);
	sigaddset(&def, SIGPIPE);
	sigaddset(&def, SIGHUP);
	sigaddset(&def, SIGINT);
	sigaddset(&def, SIGTERM);
	sigaddset(&def, SIGCHLD);
	posix_spawnattr_setsigdefault(&attr, &def);

	pthread_mutex_lock(&run_mtx);
	if (run_dead)
		log_warnx("%s: shutting down, not running %s", __func__,
		    argv[0]);
	else if ((error = posix_spawnp(&pid, argv[0], &fa, &attr, argv,
	    envp)) != 0) {
		errno = error;
		log_warn("%s: %s", __func__, argv[0]);
		pid = -1;
	} else
		nix_run_register(pid);
	pthread_mutex_unlock(&run_mtx);

	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	return (pid);
}

/* Reads what is available from fd; 1 data, 0 EOF, -1 error or too much. */
static int
nix_buf_read(int fd, struct nix_buf *nb)
{
	ssize_t	 n;

	if (nb->nb_size - nb->nb_len < 4096) {
		if (nb->nb_size >= NIX_RUN_MAX) {
			log_warnx("%s: output over %d bytes", __func__,
			    NIX_RUN_MAX);
			return (-1);
		}
		nb->nb_size = nb->nb_size == 0 ? 65536 : nb->nb_size * 2;
		nb->nb_data = xreallocarray(nb->nb_data, 1, nb->nb_size + 1);
	}
	n = read(fd, nb->nb_data + nb->nb_len, nb->nb_size - nb->nb_len);
	if (n == -1) {
		if (errno == EINTR || errno == EAGAIN)
			return (1);
		log_warn("%s: read", __func__);
		return (-1);
	}
	nb->nb_len += n;
	return (n == 0 ? 0 : 1);
}

/* Tells a build's phase, when someone listens. */
static void
nix_phase(const struct nix_progress *np, const char *fmt, ...)
{
	va_list	 ap;
	char	*phase;

	if (np == NULL || np->np_fn == NULL)
		return;
	va_start(ap, fmt);
	xvasprintf(&phase, fmt, ap);
	va_end(ap);
	np->np_fn(np->np_arg, phase);
	free(phase);
}

/*
 * Follows nix-store --realise on its stderr: "these N derivations will be
 * built:", "these N paths will be fetched ...", then a "building '...'" or
 * "copying path '...'" line as each one starts.
 */
struct nix_realising {
	const struct nix_progress *nr_progress;
	size_t		 nr_scanned;	/* bytes of stderr read as lines */
	size_t		 nr_total;
	size_t		 nr_started;
};

static void
nix_realising_scan(struct nix_realising *nr, const struct nix_buf *err)
{
	const char	*line, *nl, *end = err->nb_data + err->nb_len;
	unsigned long	 n;
	int		 more = 0;

	for (line = err->nb_data + nr->nr_scanned;
	    (nl = memchr(line, '\n', (size_t)(end - line))) != NULL;
	    line = nl + 1) {
		if (strncmp(line, "these ", 6) == 0 &&
		    sscanf(line + 6, "%lu", &n) == 1)
			nr->nr_total += n;
		else if (strncmp(line, "this derivation will be built", 29) == 0 ||
		    strncmp(line, "this path will be fetched", 25) == 0)
			nr->nr_total++;
		else if (strncmp(line, "building '", 10) == 0 ||
		    strncmp(line, "copying path '", 14) == 0) {
			nr->nr_started++;
			more = 1;
		}
	}
	nr->nr_scanned = (size_t)(line - err->nb_data);
	if (more)
		nix_phase(nr->nr_progress, "realising %zu of %zu paths",
		    nr->nr_started, nr->nr_total > nr->nr_started ?
		    nr->nr_total : nr->nr_started);
}

/*
 * Reads both pipes until EOF or the deadline (-1: none); NIX_OK,
 * NIX_ETIMEOUT or NIX_EFAIL.  With nr, stderr is followed as it comes.
 */
static int
nix_run_collect(int fds[2], struct nix_buf bufs[2], int64_t deadline,
    struct nix_realising *nr)
{
	struct pollfd	 pfd[2];
	int64_t		 left;
	int		 i, n, r, wait;

	for (;;) {
		for (i = n = 0; i < 2; i++) {
			pfd[i].fd = fds[i];
			pfd[i].events = POLLIN;
			if (fds[i] != -1)
				n++;
		}
		if (n == 0)
			return (NIX_OK);
		wait = -1;
		if (deadline != -1) {
			if ((left = deadline - nix_now_ms()) <= 0)
				return (NIX_ETIMEOUT);
			wait = left > INT_MAX ? INT_MAX : (int)left;
		}
		if ((r = poll(pfd, 2, wait)) == -1) {
			if (errno == EINTR)
				continue;
			log_warn("%s: poll", __func__);
			return (NIX_EFAIL);
		}
		for (i = 0; i < 2; i++) {
			if (fds[i] == -1 || pfd[i].revents == 0)
				continue;
			if ((r = nix_buf_read(fds[i], &bufs[i])) == -1)
				return (NIX_EFAIL);
			if (i == 1 && nr != NULL)
				nix_realising_scan(nr, &bufs[i]);
			if (r == 0) {
				close(fds[i]);
				fds[i] = -1;
			}
		}
	}
}

/*
 * Waits for a child to exit (killing its group at the deadline), takes it
 * out of the registry and reaps it; the wait status, -1 on timeout or -2
 * on error (nixmirror must not set SIGCHLD to SIG_IGN).
 */
static int
nix_run_reap(pid_t pid, int64_t deadline)
{
	siginfo_t	 si;
	int		 status, timedout = 0;
	struct timespec	 ts = { 0, 5 * 1000 * 1000 };

	for (;;) {
		memset(&si, 0, sizeof si);
		if (waitid(P_PID, pid, &si, WEXITED | WNOHANG | WNOWAIT) ==
		    -1) {
			if (errno == EINTR)
				continue;
			log_warn("%s: waitid", __func__);
			break;
		}
		if (si.si_pid != 0)
			break;
		if (!timedout && deadline != -1 && nix_now_ms() >= deadline) {
			kill(-pid, SIGKILL);
			timedout = 1;
		}
		nanosleep(&ts, NULL);
	}
	/* Exited but not reaped: its pid cannot be reused meanwhile. */
	nix_run_unregister(pid);
	while (waitpid(pid, &status, 0) == -1) {
		if (errno != EINTR) {
			log_warn("%s: waitpid", __func__);
			return (-2);
		}
	}
	return (timedout ? -1 : status);
}

/* Hands a collected buffer to the caller as a string, or frees it. */
static void
nix_buf_give(struct nix_buf *nb, char **to)
{
	if (to == NULL) {
		free(nb->nb_data);
		return;
	}
	if (nb->nb_data == NULL)
		nb->nb_data = xmalloc(1);
	nb->nb_data[nb->nb_len] = '\0';
	*to = nb->nb_data;
}

/* Runs argv with the given environment; see nix_run. */
static int
nix_run_envp(char *const argv[], char *const envp[], int timeout,
    char **out, char **err, struct nix_realising *nr)
{
	struct nix_buf	 bufs[2];
	int		 p_out[2] = { -1, -1 }, p_err[2] = { -1, -1 };
	int		 fds[2] = { -1, -1 };
	int64_t		 deadline = -1;
	int		 rc = NIX_EFAIL, status;
	pid_t		 pid;

	memset(bufs, 0, sizeof bufs);
	if (timeout > 0)
		deadline = nix_now_ms() + (int64_t)timeout * 1000;
	if (pipe2(p_out, O_CLOEXEC) == -1 || pipe2(p_err, O_CLOEXEC) == -1) {
		log_warn("%s: pipe", __func__);
		goto done;
	}
	pid = nix_run_spawn(argv, envp, p_out[1], p_err[1]);
	close(p_out[1]);
	close(p_err[1]);
	p_out[1] = p_err[1] = -1;
	if (pid == -1)
		goto done;
	fds[0] = p_out[0];
	fds[1] = p_err[0];
	p_out[0] = p_err[0] = -1;

	if ((rc = nix_run_collect(fds, bufs, deadline, nr)) != NIX_OK)
		kill(-pid, SIGKILL);
	status = nix_run_reap(pid, deadline);
	if (rc == NIX_OK) {
		if (status == -1)
			rc = NIX_ETIMEOUT;
		else if (status == -2 || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0)
			rc = NIX_EFAIL;
	}
	if (rc == NIX_ETIMEOUT)
		log_warnx("%s: %s: killed after %d seconds", __func__,
		    argv[0], timeout);
	else if (rc != NIX_OK && status >= 0 && WIFSIGNALED(status))
		log_warnx("%s: %s: killed by signal %d", __func__, argv[0],
		    WTERMSIG(status));
done:
	if (fds[0] != -1)
		close(fds[0]);
	if (fds[1] != -1)
		close(fds[1]);
	if (p_out[0] != -1)
		close(p_out[0]);
	if (p_err[0] != -1)
		close(p_err[0]);
	nix_buf_give(&bufs[0], out);
	nix_buf_give(&bufs[1], err);
	return (rc);
}

/*
 * Runs argv (no shell) with stdin from /dev/null, collecting stdout and
 * stderr (always set when not NULL, even on failure).  A timeout of 0 or
 * less waits for ever.
 */
int
nix_run(char *const argv[], int timeout, char **out, char **err)
{
	return (nix_run_envp(argv, environ, timeout, out, err, NULL));
}

/* Logs a child's stderr line by line. */
static void
nix_log_stderr(const char *what, const char *err)
{
	const char	*p, *nl;

	for (p = err; *p != '\0'; p = nl + 1) {
		if ((nl = strchr(p, '\n')) == NULL)
			nl = p + strlen(p);
		if (nl > p)
			log_warn_detail("%s: %.*s", what, (int)(nl - p), p);
		if (*nl == '\0')
			break;
	}
}

/*
 * The text of the first (or last) line of err starting with prefix,
 * without the prefix, trimmed; NULL if none.
 */
static char *
nix_find_line(const char *err, const char *prefix, int last)
{
	const char	*p, *nl, *found = NULL;
	size_t		 plen = strlen(prefix), len;
	char		*s;

	for (p = err; *p != '\0'; p = nl + 1) {
		if ((nl = strchr(p, '\n')) == NULL)
			nl = p + strlen(p);
		if (strncmp(p, prefix, plen) == 0 && (found == NULL || last))
			found = p;
		if (*nl == '\0')
			break;
	}
	if (found == NULL)
		return (NULL);
	found += plen;
	while (*found == ' ' || *found == '\t')
		found++;
	len = strcspn(found, "\n");
	while (len > 0 && (found[len - 1] == ' ' || found[len - 1] == '\r' ||
	    found[len - 1] == '\t'))
		len--;
	s = xmalloc(len + 1);
	memcpy(s, found, len);
	s[len] = '\0';
	return (s);
}

/* The error line of a failed Nix command, for a cause. */
static char *
nix_error_line(const char *err)
{
	char	*s;

	if ((s = nix_find_line(err, "error:", 1)) == NULL)
		s = xstrdup("unknown error (see the server log)");
	return (s);
}

/* The JSON request handed to the evaluation helper. */
static char *
nix_eval_request(const struct nix_source *src, const struct nix_request *req,
    char **cause)
{
	json_t		*j, *pkgs, *source;
	char		*s, *loc = NULL;
	const char	*type;
	size_t		 i;

	if (src->ns_loc == NULL) {
		xasprintf(cause, "no package set configured");
		return (NULL);
	}
	switch (src->ns_type) {
	case NM_SOURCE_PATH:
		type = "path";
		if ((loc = realpath(src->ns_loc, NULL)) == NULL) {
			log_warn("package set %s", src->ns_loc);
			xasprintf(cause, "the package set cannot be read");
			return (NULL);
		}
		break;
	case NM_SOURCE_REPO:
		type = "repo";
		break;
	default:
		type = "channel";
		break;
	}
	source = json_pack("{s:s, s:s, s:s?}", "type", type, "loc",
	    loc != NULL ? loc : src->ns_loc, "rev",
	    src->ns_type == NM_SOURCE_REPO ? src->ns_rev : NULL);
	free(loc);
	pkgs = json_array();
	for (i = 0; i < req->nr_npkgs; i++)
		json_array_append_new(pkgs, json_string(req->nr_pkgs[i]));
	j = json_pack("{s:o, s:s, s:o, s:[ss]}", "source", source, "system",
	    req->nr_system != NULL ? req->nr_system : NM_SYSTEM_X86, "pkgs",
	    pkgs, "extra", "cacert", "iana-etc");
	if (j == NULL)
		fatalx("%s: json_pack", __func__);
	s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (s == NULL)
		fatalx("%s: json_dumps", __func__);
	return (s);
}

/* The code and cause of a failed evaluation. */
static int
nix_eval_fail(const struct nix_source *src, const char *err, char **cause)
{
	char	*line;

	nix_log_stderr("nix-instantiate", err);
	if (src->ns_type == NM_SOURCE_REPO && src->ns_rev != NULL &&
	    strstr(err, "Cannot find Git revision") != NULL) {
		log_warnx("revision %s not found in %s", src->ns_rev,
		    src->ns_loc);
		xasprintf(cause, "revision %s not found in the package "
		    "repository", src->ns_rev);
		return (NIX_ENOTFOUND);
	}
	line = nix_error_line(err);
	xasprintf(cause, "evaluation failed: %s", line);
	free(line);
	return (NIX_EFAIL);
}

/* Step 1: evaluates the request; the helper's JSON answer in *ev. */
static int
nix_eval_run(const struct nix_source *src, const struct nix_request *req,
    int timeout, json_t **ev, char **cause)
{
	struct nix_argv	 na = { NULL, 0, 0 };
	json_error_t	 jerr;
	char		*json, *out = NULL, *err = NULL;
	int		 rc;

	if ((json = nix_eval_request(src, req, cause)) == NULL)
		return (NIX_EFAIL);
	nix_argv_nix(&na, "nix-instantiate");
	nix_argv_add(&na, "--eval");
	nix_argv_add(&na, "--json");
	nix_argv_add(&na, "--strict");
	nix_argv_add(&na, "--read-write-mode");
	nix_argv_add(&na, "--argstr");
	nix_argv_add(&na, "request");
	nix_argv_add(&na, json);
	nix_argv_add(&na, "-E");
	nix_argv_add(&na, nix_eval_expr);
	log_debug("%s: request %s", __func__, json);

	rc = nix_run(na.na_argv, timeout, &out, &err);
	if (rc == NIX_ETIMEOUT)
		xasprintf(cause, "evaluation timed out after %d seconds",
		    timeout);
	else if (rc != NIX_OK)
		rc = nix_eval_fail(src, err, cause);
	else if ((*ev = json_loads(out, 0, &jerr)) == NULL ||
	    !json_is_object(*ev)) {
		log_warnx("%s: bad helper output: %s", __func__, jerr.text);
		xasprintf(cause, "evaluation gave no valid answer");
		rc = NIX_EFAIL;
	}
	free(json);
	free(out);
	free(err);
	nix_argv_clear(&na);
	return (rc);
}

/* Appends ", name" (or "name" first) to a growing message. */
static void
nix_msg_add(char **msg, const char *sep, const char *text)
{
	char	*s;

	if (*msg == NULL)
		*msg = xstrdup(text);
	else {
		xasprintf(&s, "%s%s%s", *msg, sep, text);
		free(*msg);
		*msg = s;
	}
}

/* The list of missing packages as one message part, or NULL. */
static char *
nix_eval_missing(json_t *ev)
{
	json_t	*v;
	size_t	 i;
	char	*names = NULL, *s;

	json_array_foreach(json_object_get(ev, "missing"), i, v) {
		if (json_is_string(v))
			nix_msg_add(&names, ", ", json_string_value(v));
	}
	if (names == NULL)
		return (NULL);
	xasprintf(&s, "packages not found in the package set: %s", names);
	free(names);
	return (s);
}

/* One message part per ambiguous name, appended to msg. */
static void
nix_eval_ambiguous(json_t *ev, char **msg)
{
	json_t	*v, *c;
	size_t	 i, k;
	char	*cands, *s;

	json_array_foreach(json_object_get(ev, "ambiguous"), i, v) {
		cands = NULL;
		json_array_foreach(json_object_get(v, "candidates"), k, c) {
			if (json_is_string(c))
				nix_msg_add(&cands, ", ", json_string_value(c));
		}
		xasprintf(&s, "ambiguous package name \"%s\": candidates %s",
		    json_string_value(json_object_get(v, "name")),
		    cands != NULL ? cands : "none");
		nix_msg_add(msg, "; ", s);
		free(s);
		free(cands);
	}
}

/* Checks the answer names no missing, ambiguous or invalid package. */
static int
nix_eval_check(json_t *ev, char **cause)
{
	json_t	*v;
	size_t	 i;
	char	*msg, *s;

	msg = nix_eval_missing(ev);
	nix_eval_ambiguous(ev, &msg);
	json_array_foreach(json_object_get(ev, "invalid"), i, v) {
		xasprintf(&s, "package \"%s\" %s",
		    json_string_value(json_object_get(v, "name")),
		    json_string_value(json_object_get(v, "reason")));
		nix_msg_add(&msg, "; ", s);
		free(s);
	}
	if (msg == NULL)
		return (NIX_OK);
	*cause = msg;
	return (NIX_ENOTFOUND);
}

/* A field of an answer entry as a string, "" when absent. */
static const char *
nix_str(json_t *o, const char *key)
{
	const char	*s;

	if ((s = json_string_value(json_object_get(o, key))) == NULL)
		return ("");
	return (s);
}

/* Adds "drv!output" of every entry of an answer array to argv. */
static void
nix_argv_outputs(struct nix_argv *na, json_t *arr)
{
	json_t	*v;
	size_t	 i;
	char	*s;

	json_array_foreach(arr, i, v) {
		xasprintf(&s, "%s!%s", nix_str(v, "drv"), nix_str(v, "output"));
		nix_argv_add(na, s);
		free(s);
	}
}

/* A one-line cause for a failed nix-store --realise. */
static char *
nix_realise_cause(const char *err, const char *system)
{
	char	*line, *last, *s, *p, *q;

	if (strstr(err, "is required to build") != NULL) {
		xasprintf(&s, "no builder or cache for %s: configure a remote "
		    "builder or binary cache", system);
		return (s);
	}
	if ((line = nix_find_line(err, "error:", 0)) == NULL)
		line = nix_error_line(err);
	if (line[0] != '\0' && line[strlen(line) - 1] == ';')
		line[strlen(line) - 1] = '\0';
	/* "builder for '<drv>' failed with exit code 1" */
	if (strncmp(line, "builder for '", 13) == 0 &&
	    (q = strstr(line + 13, "' failed")) != NULL) {
		p = line + 13;
		*q = '\0';
		xasprintf(&s, "build of %s failed%s", p, q + 8);
	} else
		xasprintf(&s, "build failed: %s", line);
	free(line);
	/* With -Q, Nix quotes the builder's last lines as "> text". */
	if ((last = nix_find_line(err, "       >", 1)) != NULL) {
		if (*last != '\0') {
			xasprintf(&p, "%s: %s", s, last);
			free(s);
			s = p;
		}
		free(last);
	}
	return (s);
}

/* Step 2: builds or substitutes the requested outputs. */
static int
nix_eval_realise(json_t *ev, const char *system, int timeout,
    const struct nix_progress *np, char **cause)
{
	struct nix_argv		 na = { NULL, 0, 0 };
	struct nix_realising	 nr;
	char			*err = NULL;
	int			 rc;

	nix_argv_nix(&na, "nix-store");
	nix_argv_add(&na, "--no-build-output");
	nix_argv_add(&na, "--realise");
	nix_argv_outputs(&na, json_object_get(ev, "pkgs"));
	nix_argv_outputs(&na, json_object_get(ev, "extras"));
	if (na.na_n > NIX_ARGV_MAX) {
		xasprintf(cause, "too many packages");
		rc = NIX_EFAIL;
		goto done;
	}
	memset(&nr, 0, sizeof nr);
	nr.nr_progress = np;
	rc = nix_run_envp(na.na_argv, environ, timeout, NULL, &err, &nr);
	if (rc == NIX_ETIMEOUT)
		xasprintf(cause, "build timed out after %d seconds", timeout);
	else if (rc != NIX_OK) {
		nix_log_stderr("nix-store", err);
		*cause = nix_realise_cause(err, system);
	}
done:
	free(err);
	nix_argv_clear(&na);
	return (rc);
}

/* Orders closure paths by store path. */
static int
nix_path_cmp(const void *a, const void *b)
{
	const struct nix_path	*pa = a, *pb = b;

	return (strcmp(pa->np_path, pb->np_path));
}

/* The index of a store path in a closure, or SIZE_MAX. */
static size_t
nix_closure_find(const struct nix_closure *nc, const char *path)
{
	struct nix_path	 key, *p;

	memset(&key, 0, sizeof key);
	key.np_path = (char *)(uintptr_t)path;
	p = bsearch(&key, nc->nc_paths, nc->nc_npaths, sizeof *nc->nc_paths,
	    nix_path_cmp);
	return (p == NULL ? SIZE_MAX : (size_t)(p - nc->nc_paths));
}

/*
 * A NAR hash as path-info gives it, SRI ("sha256-<base64>") or Nix's
 * own ("sha256:<base32>"), as 64 hex digits; "" when it is neither.
 */
void
nix_narhash_hex(const char *h, char hex[65])
{
	static const char	 b32[] = "0123456789abcdfghijklmnpqrsvwxyz";
	unsigned char		 raw[48];
	const char		*p;
	size_t			 i, n, b;
	int			 len;

	hex[0] = '\0';
	if (h == NULL)
		return;
	memset(raw, 0, sizeof raw);
	if (strncmp(h, "sha256-", 7) == 0 && strlen(h + 7) == 44) {
		len = EVP_DecodeBlock(raw, (const unsigned char *)h + 7, 44);
		/* 44 base64 characters decode to 33 bytes, one padding. */
		if (len != 33 || h[7 + 43] != '=')
			return;
	} else if (strncmp(h, "sha256:", 7) == 0 && strlen(h + 7) == 52) {
		n = 52;
		for (i = 0; i < n; i++) {
			if ((p = strchr(b32, h[7 + n - 1 - i])) == NULL ||
			    *p == '\0')
				return;
			b = i * 5;
			raw[b / 8] |= (unsigned char)((p - b32) << (b % 8));
			if (b / 8 + 1 < sizeof raw)
				raw[b / 8 + 1] |= (unsigned char)((p - b32) >>
				    (8 - b % 8));
		}
	} else
		return;
	for (i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", raw[i]);
}

/* Fills the closure's paths and references from path-info JSON. */
static int
nix_closure_parse(json_t *info, struct nix_closure *nc)
{
	json_t		*v, *refs, *r;
	struct nix_path	*np;
	const char	*s;
	size_t		 i, k, idx;

	if (!json_is_array(info) || json_array_size(info) == 0)
		return (-1);
	nc->nc_npaths = json_array_size(info);
	nc->nc_paths = xcalloc(nc->nc_npaths, sizeof *nc->nc_paths);
	json_array_foreach(info, i, v) {
		if (!json_is_string(json_object_get(v, "path")))
			return (-1);
		nc->nc_paths[i].np_path = xstrdup(nix_str(v, "path"));
		nc->nc_paths[i].np_narsize = json_integer_value(
		    json_object_get(v, "narSize"));
		nix_narhash_hex(json_string_value(json_object_get(v,
		    "narHash")), nc->nc_paths[i].np_narhash);
	}
	qsort(nc->nc_paths, nc->nc_npaths, sizeof *nc->nc_paths, nix_path_cmp);
	json_array_foreach(info, i, v) {
		np = &nc->nc_paths[nix_closure_find(nc, nix_str(v, "path"))];
		refs = json_object_get(v, "references");
		np->np_refs = xcalloc(json_array_size(refs) + 1,
		    sizeof *np->np_refs);
		json_array_foreach(refs, k, r) {
			s = json_string_value(r);
			idx = nix_closure_find(nc, s != NULL ? s : "");
			if (idx == SIZE_MAX) {
				log_warnx("%s: %s: reference %s not in the "
				    "closure", __func__, np->np_path,
				    s != NULL ? s : "?");
				return (-1);
			}
			np->np_refs[np->np_nrefs++] = idx;
		}
	}
	return (0);
}

/* Step 3: reads the runtime closure of the outputs into nc. */
static int
nix_eval_closure(json_t *ev, int timeout, struct nix_closure *nc,
    char **cause)
{
	struct nix_argv	 na = { NULL, 0, 0 };
	json_t		*info = NULL, *v;
	json_error_t	 jerr;
	char		*out = NULL, *err = NULL, *line;
	size_t		 i;
	int		 rc;

	nix_argv_nix(&na, "nix");
	nix_argv_add(&na, "--extra-experimental-features");
	nix_argv_add(&na, "nix-command");
	nix_argv_add(&na, "path-info");
	nix_argv_add(&na, "--json");
	nix_argv_add(&na, "--recursive");
	json_array_foreach(json_object_get(ev, "pkgs"), i, v)
		nix_argv_add(&na, nix_str(v, "out"));
	json_array_foreach(json_object_get(ev, "extras"), i, v)
		nix_argv_add(&na, nix_str(v, "out"));
	rc = nix_run(na.na_argv, timeout, &out, &err);
	if (rc == NIX_ETIMEOUT)
		xasprintf(cause, "reading the closure timed out");
	else if (rc != NIX_OK) {
		nix_log_stderr("nix path-info", err);
		line = nix_error_line(err);
		xasprintf(cause, "reading the closure failed: %s", line);
		free(line);
	} else if ((info = json_loads(out, 0, &jerr)) == NULL ||
	    nix_closure_parse(info, nc) == -1) {
		log_warnx("%s: bad path-info output %s", __func__, jerr.text);
		xasprintf(cause, "reading the closure failed: bad path-info "
		    "output");
		rc = NIX_EFAIL;
	}
	json_decref(info);
	free(out);
	free(err);
	nix_argv_clear(&na);
	return (rc);
}

/* Adds an output as a root unless it is one already. */
static void
nix_closure_root(struct nix_closure *nc, size_t idx)
{
	size_t	 i;

	for (i = 0; i < nc->nc_nroots; i++) {
		if (nc->nc_roots[i] == idx)
			return;
	}
	nc->nc_roots[nc->nc_nroots] = idx;
	nc->nc_rootpaths[nc->nc_nroots] = xstrdup(nc->nc_paths[idx].np_path);
	nc->nc_nroots++;
}

/* Step 4: the roots, the program for Cmd and the cacert path. */
static int
nix_eval_roots(json_t *ev, struct nix_closure *nc)
{
	json_t		*pkgs, *extras, *v, *prog;
	struct nix_path	*np;
	size_t		 i, n, idx;

	pkgs = json_object_get(ev, "pkgs");
	extras = json_object_get(ev, "extras");
	n = json_array_size(pkgs) + json_array_size(extras);
	nc->nc_roots = xcalloc(n + 1, sizeof *nc->nc_roots);
	nc->nc_rootpaths = xcalloc(n + 1, sizeof *nc->nc_rootpaths);
	for (i = 0; i < n; i++) {
		if (i < json_array_size(pkgs))
			v = json_array_get(pkgs, i);
		else
			v = json_array_get(extras, i - json_array_size(pkgs));
		if ((idx = nix_closure_find(nc, nix_str(v, "out"))) ==
		    SIZE_MAX) {
			log_warnx("%s: %s not in the closure", __func__,
			    nix_str(v, "out"));
			return (-1);
		}
		nix_closure_root(nc, idx);
		if (i < json_array_size(pkgs)) {
			np = &nc->nc_paths[idx];
			np->np_requested = 1;
			if (json_is_string(json_object_get(v, "license")) &&
			    np->np_license == NULL)
				np->np_license = xstrdup(nix_str(v, "license"));
			if (json_is_string(json_object_get(v, "homepage")) &&
			    np->np_homepage == NULL)
				np->np_homepage = xstrdup(nix_str(v,
				    "homepage"));
		}
		prog = json_object_get(v, "mainProgram");
		if (json_is_string(prog) && strchr(json_string_value(prog),
		    '/') == NULL) {
			free(nc->nc_cmd);
			xasprintf(&nc->nc_cmd, "%s/bin/%s", nix_str(v, "out"),
			    json_string_value(prog));
		}
		if (i >= json_array_size(pkgs) &&
		    strcmp(nix_str(v, "name"), "cacert") == 0) {
			free(nc->nc_cacert);
			nc->nc_cacert = xstrdup(nix_str(v, "out"));
		}
	}
	return (0);
}

/*
 * Evaluates, realises and reads the runtime closure of a request; the
 * roots are the packages in request order, then cacert and iana-etc.
 */
int
nix_closure_build(const struct nix_source *src, const struct nix_request *req,
    int timeout, const struct nix_progress *np, struct nix_closure *nc,
    char **cause)
{
	json_t		*ev = NULL;
	const char	*system;
	int64_t		 t0, t;
	int		 rc;

	memset(nc, 0, sizeof *nc);
	*cause = NULL;
	system = req->nr_system != NULL ? req->nr_system : NM_SYSTEM_X86;

	t = t0 = nix_now_ms();
	nix_phase(np, "evaluating %zu package%s", req->nr_npkgs,
	    req->nr_npkgs == 1 ? "" : "s");
	if ((rc = nix_eval_run(src, req, timeout, &ev, cause)) != NIX_OK)
		goto done;
	if ((rc = nix_eval_check(ev, cause)) != NIX_OK)
		goto done;
	log_debug("%s: evaluated %zu packages for %s in %.2fs", __func__,
	    req->nr_npkgs, system, (nix_now_ms() - t) / 1000.0);

	t = nix_now_ms();
	nix_phase(np, "realising");
	if ((rc = nix_eval_realise(ev, system, timeout, np, cause)) != NIX_OK)
		goto done;
	log_debug("%s: realised in %.2fs", __func__,
	    (nix_now_ms() - t) / 1000.0);

	t = nix_now_ms();
	nix_phase(np, "reading the closure");
	if ((rc = nix_eval_closure(ev, timeout, nc, cause)) != NIX_OK)
		goto done;
	if (nix_eval_roots(ev, nc) == -1) {
		xasprintf(cause, "an output is missing from its closure");
		rc = NIX_EFAIL;
		goto done;
	}
	log_debug("%s: closure of %zu paths read in %.2fs", __func__,
	    nc->nc_npaths, (nix_now_ms() - t) / 1000.0);
done:
	if (rc != NIX_OK) {
		log_debug("%s: after %.2fs: %s", __func__,
		    (nix_now_ms() - t0) / 1000.0, *cause);
		nix_closure_clear(nc);
	}
	json_decref(ev);
	return (rc);
}

/* Frees what a closure holds. */
void
nix_closure_clear(struct nix_closure *nc)
{
	size_t	 i;

	for (i = 0; i < nc->nc_npaths; i++) {
		free(nc->nc_paths[i].np_path);
		free(nc->nc_paths[i].np_refs);
		free(nc->nc_paths[i].np_license);
		free(nc->nc_paths[i].np_homepage);
	}
	free(nc->nc_paths);
	xstrvfree(nc->nc_rootpaths, nc->nc_nroots);
	free(nc->nc_roots);
	free(nc->nc_cmd);
	free(nc->nc_cacert);
	memset(nc, 0, sizeof *nc);
}

/* Whether s is exactly 40 lowercase hex digits. */
static int
nix_is_commit(const char *s)
{
	size_t	 i;

	for (i = 0; i < 40; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') ||
		    (s[i] >= 'a' && s[i] <= 'f')))
			return (0);
	}
	return (s[40] == '\0');
}

/*
 * The commit of ref name in git ls-remote output ("<sha>\t<ref>" lines),
 * copied into commit; -1 if absent.
 */
static int
nix_lsremote_find(const char *out, const char *name, char commit[41])
{
	const char	*p, *nl;
	size_t		 len = strlen(name);

	for (p = out; *p != '\0'; p = nl + 1) {
		if ((nl = strchr(p, '\n')) == NULL)
			nl = p + strlen(p);
		if (nl - p == (ptrdiff_t)(41 + len) && p[40] == '\t' &&
		    strncmp(p + 41, name, len) == 0) {
			memcpy(commit, p, 40);
			commit[40] = '\0';
			if (nix_is_commit(commit))
				return (0);
		}
		if (*nl == '\0')
			break;
	}
	return (-1);
}

/* The environment for git: no prompts for passwords. */
static char **
nix_git_env(void)
{
	char	**env;
	size_t	  n, i, k = 0;

	for (n = 0; environ[n] != NULL; n++)
		;
	env = xcalloc(n + 3, sizeof *env);
	for (i = 0; i < n; i++) {
		if (strncmp(environ[i], "GIT_TERMINAL_PROMPT=", 20) != 0)
			env[k++] = environ[i];
	}
	env[k++] = (char *)(uintptr_t)"GIT_TERMINAL_PROMPT=0";
	if (getenv("GIT_SSH_COMMAND") == NULL)
		env[k++] = (char *)(uintptr_t)
		    "GIT_SSH_COMMAND=ssh -o BatchMode=yes";
	env[k] = NULL;
	return (env);
}

/* Runs git ls-remote for the patterns; its output in *out. */
static int
nix_git_lsremote(const char *url, char *const pats[], int timeout,
    char **out, char **cause)
{
	struct nix_argv	 na = { NULL, 0, 0 };
	char		**env, *err = NULL, *line;
	size_t		  i;
	int		  rc;

	nix_argv_add(&na, "git");
	nix_argv_add(&na, "ls-remote");
	nix_argv_add(&na, "--");
	nix_argv_add(&na, url);
	for (i = 0; pats[i] != NULL; i++)
		nix_argv_add(&na, pats[i]);
	env = nix_git_env();
	rc = nix_run_envp(na.na_argv, env, timeout, out, &err, NULL);
	/* The log names the repository; the client hears only what failed. */
	if (rc == NIX_ETIMEOUT) {
		log_warnx("git ls-remote %s timed out after %d seconds", url,
		    timeout);
		xasprintf(cause, "the package repository did not answer in %d "
		    "seconds", timeout);
	} else if (rc != NIX_OK) {
		nix_log_stderr("git ls-remote", err);
		if ((line = nix_find_line(err, "fatal:", 1)) == NULL)
			line = xstrdup("failed");
		log_warnx("git ls-remote %s: %s", url, line);
		free(line);
		xasprintf(cause, "the package repository cannot be read");
	}
	free(env);
	free(err);
	nix_argv_clear(&na);
	return (rc);
}

/*
 * Resolves a git ref: "latest" is HEAD, 40 hex is itself, else a peeled
 * tag, a tag or a branch, in that order.
 */
int
nix_git_resolve(const char *url, const char *ref, int timeout,
    char commit[41], char **cause)
{
	char	*pats[4] = { NULL, NULL, NULL, NULL }, *out = NULL;
	int	 rc, i;

	*cause = NULL;
	if (url[0] == '-' || url[0] == '\0') {
		log_warnx("invalid repository url \"%s\"", url);
		xasprintf(cause, "the package repository is misconfigured");
		return (NIX_EFAIL);
	}
	if (nix_is_commit(ref)) {
		memcpy(commit, ref, 41);
		return (NIX_OK);
	}
	if (strcmp(ref, "latest") == 0)
		pats[0] = xstrdup("HEAD");
	else {
		xasprintf(&pats[0], "refs/tags/%s^{}", ref);
		xasprintf(&pats[1], "refs/tags/%s", ref);
		xasprintf(&pats[2], "refs/heads/%s", ref);
	}
	rc = nix_git_lsremote(url, pats, timeout, &out, cause);
	if (rc == NIX_OK) {
		for (i = 0; pats[i] != NULL; i++) {
			if (nix_lsremote_find(out, pats[i], commit) == 0)
				break;
		}
		if (pats[i] == NULL) {
			xasprintf(cause, "revision %s not found in the "
			    "package repository", ref);
			rc = NIX_ENOTFOUND;
		} else
			log_debug("%s: %s %s is %s", __func__, url, ref,
			    commit);
	}
	for (i = 0; i < 3; i++)
		free(pats[i]);
	free(out);
	return (rc);
}

/* Whether a git ref's short name can be an image tag (no '/'). */
static int
nix_ref_is_tag(const char *s, size_t len)
{
	size_t	 i;

	if (len == 0 || len > 128 || s[0] == '.' || s[0] == '-')
		return (0);
	for (i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' &&
		    s[i] != '.' && s[i] != '-')
			return (0);
	return (1);
}

/*
 * The tags and branches of a git repository whose names can be image
 * tags, by git ls-remote; NIX_OK with *refs (NULL-terminated, caller
 * frees with nix_refs_free), or a NIX_E* code with *cause.
 */
int
nix_git_refs(const char *url, int timeout, char ***refs, size_t *nrefs,
    char **cause)
{
	static const char *const kinds[] = { "refs/tags/", "refs/heads/" };
	char		*pats[1] = { NULL }, *out = NULL;
	const char	*p, *nl, *name;
	size_t		 i, len, n = 0;
	int		 rc;

	*cause = NULL;
	*refs = xcalloc(1, sizeof **refs);
	*nrefs = 0;
	if (url[0] == '-' || url[0] == '\0') {
		log_warnx("invalid repository url \"%s\"", url);
		xasprintf(cause, "the package repository is misconfigured");
		return (NIX_EFAIL);
	}
	if ((rc = nix_git_lsremote(url, pats, timeout, &out, cause)) !=
	    NIX_OK) {
		free(out);
		return (rc);
	}
	for (p = out; *p != '\0'; p = nl + 1) {
		if ((nl = strchr(p, '\n')) == NULL)
			nl = p + strlen(p);
		for (i = 0; i < 2 && nl - p > 41 && p[40] == '\t'; i++) {
			name = p + 41;
			len = strlen(kinds[i]);
			if ((size_t)(nl - name) <= len ||
			    strncmp(name, kinds[i], len) != 0)
				continue;
			name += len;
			if (!nix_ref_is_tag(name, (size_t)(nl - name)))
				continue;
			*refs = xreallocarray(*refs, n + 2, sizeof **refs);
			(*refs)[n] = xmalloc((size_t)(nl - name) + 1);
			memcpy((*refs)[n], name, (size_t)(nl - name));
			(*refs)[n][nl - name] = '\0';
			(*refs)[++n] = NULL;
		}
		if (*nl == '\0')
			break;
	}
	*nrefs = n;
	free(out);
	return (NIX_OK);
}

/* Frees the refs of nix_git_refs. */
void
nix_refs_free(char **refs)
{
	size_t	 i;

	if (refs == NULL)
		return;
	for (i = 0; refs[i] != NULL; i++)
		free(refs[i]);
	free(refs);
}
