/*
 * tests/test_policy.c: the --policy file: parsing and its errors, client
 * address blocks (v4, v6, IPv4-mapped), upstream and Nix globs, limits
 * and their defaults, and reloads that keep the old policy on a bad file.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nixmirror.h"
#include "policy/policy.h"

struct nm_config	*nm_conf;

static int		 passed, failed;
static char		 tmpfile_path[64];

/* Counts one check. */
static void
check(int ok, int line, const char *what)
{
	if (ok) {
		passed++;
		return;
	}
	failed++;
	printf("FAIL line %d: %s\n", line, what);
}

#define CHECK(e)	check((e) ? 1 : 0, __LINE__, #e)

/* Whether s contains needle (s may be NULL). */
static int
has(const char *s, const char *needle)
{
	return (s != NULL && strstr(s, needle) != NULL);
}

/* Writes text to the temp policy file. */
static void
write_policy(const char *text)
{
	FILE	*f;

	if ((f = fopen(tmpfile_path, "w")) == NULL) {
		perror(tmpfile_path);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
}

/* Loads a policy from text through the temp file; returns policy_load's rc. */
static int
load(const char *text)
{
	char	*cause = NULL;
	int	 rc;

	write_policy(text);
	rc = policy_load(tmpfile_path, &cause);
	if (rc == -1) {
		printf("  (load failed: %s)\n", cause);
		free(cause);
	}
	return (rc);
}

/* policy_parse's cause for text, or NULL when it parses (caller frees). */
static char *
parse_error(const char *text)
{
	char	*cause = NULL;

	if (policy_parse(text, strlen(text), &cause) == 0)
		return (NULL);
	return (cause != NULL ? cause : xstrdup("(no cause)"));
}

/* Checks text fails to parse with a cause containing needle. */
static void
check_bad(const char *text, const char *needle, int line)
{
	char	*cause = parse_error(text);

	if (cause != NULL && strstr(cause, needle) != NULL) {
		passed++;
	} else {
		failed++;
		printf("FAIL line %d: %s: cause \"%s\", want \"%s\"\n", line,
		    text, cause != NULL ? cause : "(parsed)", needle);
	}
	free(cause);
}

#define BAD(t, n)	check_bad(t, n, __LINE__)

/* Asks policy_client_allowed about a textual address; frees *why. */
static int
client(const char *addr, char **why)
{
	struct sockaddr_in	 sin;
	struct sockaddr_in6	 sin6;

	*why = NULL;
	memset(&sin, 0, sizeof sin);
	memset(&sin6, 0, sizeof sin6);
	if (inet_pton(AF_INET, addr, &sin.sin_addr) == 1) {
		sin.sin_family = AF_INET;
		return (policy_client_allowed((struct sockaddr *)&sin, why));
	}
	if (inet_pton(AF_INET6, addr, &sin6.sin6_addr) == 1) {
		sin6.sin6_family = AF_INET6;
		return (policy_client_allowed((struct sockaddr *)&sin6, why));
	}
	printf("bad test address %s\n", addr);
	exit(2);
}

/* Checks a client address against the policy in force. */
static void
check_client(const char *addr, int want, const char *needle, int line)
{
	char	*why;
	int	 got = client(addr, &why);

	if (got == want && (want || has(why, needle)) && (!want || why == NULL))
		passed++;
	else {
		failed++;
		printf("FAIL line %d: client %s: %d (%s), want %d (%s)\n", line,
		    addr, got, why != NULL ? why : "-", want,
		    needle != NULL ? needle : "-");
	}
	free(why);
}

#define CLIENT(a, w, n)	check_client(a, w, n, __LINE__)

/* Checks an upstream repository against the policy in force. */
static void
check_up(const char *ns, const char *repo, int want, const char *needle,
    int line)
{
	char	*why = NULL;
	int	 got = policy_upstream_allowed(ns, repo, &why);

	if (got == want && (want || has(why, needle)) && (!want || why == NULL))
		passed++;
	else {
		failed++;
		printf("FAIL line %d: upstream %s %s: %d (%s), want %d (%s)\n",
		    line, ns, repo, got, why != NULL ? why : "-", want,
		    needle != NULL ? needle : "-");
	}
	free(why);
}

#define UP(ns, r, w, n)	check_up(ns, r, w, n, __LINE__)

/* Checks a list of Nix packages (separated by spaces) against the policy. */
static void
check_nix(const char *list, int want, const char *needle, int line)
{
	char	*copy = xstrdup(list), *pkgs[16], *p, *why = NULL;
	size_t	 n = 0;
	int	 got;

	for (p = strtok(copy, " "); p != NULL && n < 16; p = strtok(NULL, " "))
		pkgs[n++] = p;
	got = policy_nix_allowed(pkgs, n, &why);
	if (got == want && (want || has(why, needle)) && (!want || why == NULL))
		passed++;
	else {
		failed++;
		printf("FAIL line %d: nix %s: %d (%s), want %d (%s)\n", line,
		    list, got, why != NULL ? why : "-", want,
		    needle != NULL ? needle : "-");
	}
	free(why);
	free(copy);
}

#define NIX(l, w, n)	check_nix(l, w, n, __LINE__)

/* No policy: everything allowed, limits from the configuration. */
static void
test_none(void)
{
	struct policy_limits	 pl;
	char			*cause = NULL;

	CHECK(policy_load(NULL, &cause) == 0);
	CLIENT("127.0.0.2", 1, NULL);
	CLIENT("2001:db8::1", 1, NULL);
	UP("docker.io", "library/anything", 1, NULL);
	NIX("haskellpackages.pandoc hello", 1, NULL);
	CHECK(policy_client_allowed(NULL, &cause) == 1);
	policy_limits_get(&pl);
	/* The defaults bound downloads: 16 GiB a blob, 32 GiB in flight. */
	CHECK(pl.pl_max_blob_bytes == 16ULL << 30);
	CHECK(pl.pl_max_tmp_bytes == 32ULL << 30);
	CHECK(pl.pl_max_concurrent_builds == 3);
	CHECK(pl.pl_build_timeout == 77);
	CHECK(pl.pl_max_connections == 1024);
	CHECK(pl.pl_max_connections_per_client == 64);
	CHECK(pl.pl_max_packages == 0);
}

/* The example of the documentation, end to end. */
static void
test_example(void)
{
	struct policy_limits	 pl;

	CHECK(load("{\n"
	    " \"clients\": { \"allow\": [\"127.0.0.1/32\", \"10.0.0.0/8\","
	    " \"::1/128\"] },\n"
	    " \"upstreams\": { \"docker.io\": { \"allow\": [\"library/*\","
	    " \"myorg/*\"], \"deny\": [\"library/big*\"] } },\n"
	    " \"nix\": { \"allow\": [\"*\"], \"deny\": [\"haskellPackages.*\"],"
	    " \"max_packages\": 30 },\n"
	    " \"limits\": { \"max_blob_bytes\": 4294967296,"
	    " \"max_concurrent_builds\": 2, \"build_timeout_s\": 600,"
	    " \"max_connections\": 1000, \"max_connections_per_client\": 10 }\n"
	    "}\n") == 0);
	CLIENT("127.0.0.1", 1, NULL);
	CLIENT("127.0.0.2", 0, "client 127.0.0.2 is not in clients.allow");
	CLIENT("10.255.1.2", 1, NULL);
	CLIENT("11.0.0.1", 0, "not in clients.allow");
	CLIENT("::1", 1, NULL);
	CLIENT("::2", 0, "not in clients.allow");
	/* IPv4-mapped IPv6 addresses match the IPv4 blocks. */
	CLIENT("::ffff:127.0.0.1", 1, NULL);
	CLIENT("::ffff:10.1.2.3", 1, NULL);
	CLIENT("::ffff:127.0.0.2", 0, "not in clients.allow");
	/* ...but not IPv4-compatible or other v6 addresses with those bits. */
	CLIENT("::127.0.0.1", 0, "not in clients.allow");

	UP("docker.io", "library/alpine", 1, NULL);
	UP("docker.io", "myorg/tool", 1, NULL);
	/* No FNM_PATHNAME: a star crosses slashes. */
	UP("docker.io", "library/a/b", 1, NULL);
	UP("docker.io", "library/bigimg", 0,
	    "docker.io/library/bigimg is denied by upstreams.docker.io.deny "
	    "\"library/big*\"");
	UP("docker.io", "other/thing", 0,
	    "docker.io/other/thing is not in upstreams.docker.io.allow");
	/* Globs on repository names are case-sensitive. */
	UP("docker.io", "Library/alpine", 0,
	    "not in upstreams.docker.io.allow");
	/* An upstream without rules (and no "*") is not restricted. */
	UP("ghcr.io", "anyone/anything", 1, NULL);

	NIX("hello", 1, NULL);
	NIX("bashInteractive coreutils hello", 1, NULL);
	/* Attribute paths match without regard to case. */
	NIX("hello haskellpackages.pandoc", 0,
	    "package haskellpackages.pandoc is denied by nix.deny "
	    "\"haskellPackages.*\"");
	NIX("HASKELLPACKAGES.pandoc", 0, "nix.deny");
	NIX("haskellpackagesx", 1, NULL);

	policy_limits_get(&pl);
	CHECK(pl.pl_max_blob_bytes == 4294967296ULL);
	CHECK(pl.pl_max_concurrent_builds == 2);
	CHECK(pl.pl_build_timeout == 600);
	CHECK(pl.pl_max_connections == 1000);
	CHECK(pl.pl_max_connections_per_client == 10);
	CHECK(pl.pl_max_packages == 30);
}

/* clients.deny, v6 blocks, prefixes that are not byte multiples. */
static void
test_clients(void)
{
	CHECK(load("{\"clients\": {\"deny\": [\"192.168.1.128/25\","
	    " \"2001:db8::/33\", \"::ffff:172.16.0.0/108\"]}}") == 0);
	/* No allow list: everything not denied is allowed. */
	CLIENT("192.168.1.127", 1, NULL);
	CLIENT("192.168.1.128", 0, "client 192.168.1.128 is denied by "
	    "clients.deny \"192.168.1.128/25\"");
	CLIENT("192.168.1.255", 0, "clients.deny");
	CLIENT("::ffff:192.168.1.200", 0, "clients.deny \"192.168.1.128/25\"");
	CLIENT("2001:db8:7fff::1", 0, "clients.deny \"2001:db8::/33\"");
	CLIENT("2001:db8:8000::1", 1, NULL);
	/* A v6 block written in mapped form matches the mapped address. */
	CLIENT("::ffff:172.16.5.5", 0, "::ffff:172.16.0.0/108");
	CLIENT("172.16.5.5", 1, NULL);

	/* Deny wins over allow; host bits are ignored; /0 is everything. */
	CHECK(load("{\"clients\": {\"allow\": [\"10.1.2.3/8\"],"
	    " \"deny\": [\"10.9.0.0/16\"]}}") == 0);
	CLIENT("10.200.0.1", 1, NULL);
	CLIENT("10.9.3.4", 0, "clients.deny \"10.9.0.0/16\"");
	CHECK(load("{\"clients\": {\"allow\": [\"0.0.0.0/0\", \"::/0\"]}}")
	    == 0);
	CLIENT("8.8.8.8", 1, NULL);
	CLIENT("2001:db8::1", 1, NULL);
	/* An empty allow list allows nobody. */
	CHECK(load("{\"clients\": {\"allow\": []}}") == 0);
	CLIENT("127.0.0.1", 0, "not in clients.allow");
	CLIENT("::1", 0, "not in clients.allow");
	/* A bare address is a single host. */
	CHECK(load("{\"clients\": {\"allow\": [\"127.0.0.1\", \"::1\"]}}")
	    == 0);
	CLIENT("127.0.0.1", 1, NULL);
	CLIENT("127.0.0.2", 0, "not in clients.allow");
	CLIENT("::1", 1, NULL);
}

/* Upstream rules: "*", empty lists, absent allow. */
static void
test_upstreams(void)
{
	CHECK(load("{\"upstreams\": {"
	    " \"ghcr.io\": {\"allow\": [\"org/?ool\", \"x/[ab]*\"]},"
	    " \"127.0.0.1:5000\": {\"deny\": [\"*secret*\"]},"
	    " \"*\": {\"allow\": []}}}") == 0);
	UP("ghcr.io", "org/tool", 1, NULL);
	UP("ghcr.io", "org/pool", 1, NULL);
	UP("ghcr.io", "org/tools", 0, "not in upstreams.ghcr.io.allow");
	UP("ghcr.io", "x/bee", 1, NULL);
	UP("ghcr.io", "x/cee", 0, "not in upstreams.ghcr.io.allow");
	/* Only a deny list: the rest is allowed. */
	UP("127.0.0.1:5000", "team/app", 1, NULL);
	UP("127.0.0.1:5000", "team/my-secret-app", 0,
	    "127.0.0.1:5000/team/my-secret-app is denied by "
	    "upstreams.127.0.0.1:5000.deny \"*secret*\"");
	/* Every other namespace falls under "*", whose empty allow denies. */
	UP("docker.io", "library/alpine", 0,
	    "docker.io/library/alpine is not in upstreams.*.allow");
	UP("quay.io", "a/b", 0, "upstreams.*.allow");

	/* "*" with a deny list, and a namespace's own rules replace it. */
	CHECK(load("{\"upstreams\": {\"*\": {\"deny\": [\"library/big*\"]},"
	    " \"docker.io\": {}}}") == 0);
	UP("quay.io", "library/bigimg", 0, "upstreams.*.deny");
	UP("docker.io", "library/bigimg", 1, NULL);
}

/* Nix allow lists and max_packages. */
static void
test_nix(void)
{
	struct policy_limits	pl;

	CHECK(load("{\"nix\": {\"allow\": [\"hello\", \"figlet\", "
	    "\"python3Packages.*\"]}}") == 0);
	NIX("hello figlet", 1, NULL);
	NIX("python3packages.requests", 1, NULL);
	NIX("hello cowsay", 0, "package cowsay is not in nix.allow");
	NIX("", 1, NULL);
	policy_limits_get(&pl);
	CHECK(pl.pl_max_packages == 0);
	CHECK(load("{\"nix\": {\"max_packages\": 3}}") == 0);
	policy_limits_get(&pl);
	CHECK(pl.pl_max_packages == 3);
	NIX("a b c d e", 1, NULL);
}

/* Bad documents: each error names the key path. */
static void
test_bad(void)
{
	char	*c;

	BAD("", "line 1");
	BAD("{", "line 1");
	BAD("[]", "not a JSON object");
	BAD("{\"client\": {}}", "client: unknown key");
	BAD("{\"clients\": []}", "clients: expected an object");
	BAD("{\"clients\": {\"allows\": []}}", "clients.allows: unknown key");
	BAD("{\"clients\": {\"allow\": \"10.0.0.0/8\"}}",
	    "clients.allow: expected an array");
	BAD("{\"clients\": {\"allow\": [\"10.0.0.0/33\"]}}",
	    "clients.allow[0]: expected an address");
	BAD("{\"clients\": {\"deny\": [\"::1\", \"::1/129\"]}}",
	    "clients.deny[1]");
	BAD("{\"clients\": {\"deny\": [\"1.2.3.4/\"]}}", "clients.deny[0]");
	BAD("{\"clients\": {\"deny\": [\"1.2.3.4/-1\"]}}", "clients.deny[0]");
	BAD("{\"clients\": {\"deny\": [\"1.2.3.4/ 8\"]}}", "clients.deny[0]");
	BAD("{\"clients\": {\"deny\": [\"example.com\"]}}", "clients.deny[0]");
	BAD("{\"clients\": {\"deny\": [5]}}", "clients.deny[0]");
	BAD("{\"upstreams\": []}", "upstreams: expected an object");
	BAD("{\"upstreams\": {\"docker.io\": []}}",
	    "upstreams.docker.io: expected an object");
	BAD("{\"upstreams\": {\"docker.io\": {\"alow\": []}}}",
	    "upstreams.docker.io.alow: unknown key");
	BAD("{\"upstreams\": {\"docker.io\": {\"deny\": [\"\"]}}}",
	    "upstreams.docker.io.deny[0]: expected a non-empty string");
	BAD("{\"upstreams\": {\"docker.io\": {\"allow\": [1]}}}",
	    "upstreams.docker.io.allow[0]");
	BAD("{\"upstreams\": {\"not a host\": {}}}",
	    "upstreams.not a host: not a registry host");
	BAD("{\"nix\": {\"deny\": \"x\"}}", "nix.deny: expected an array");
	BAD("{\"nix\": {\"max_packages\": -1}}", "nix.max_packages: expected "
	    "an integer");
	BAD("{\"nix\": {\"max_packages\": \"3\"}}", "nix.max_packages");
	BAD("{\"nix\": {\"maxpackages\": 3}}", "nix.maxpackages: unknown key");
	BAD("{\"limits\": {\"max_blob_bytes\": 1.5}}", "limits.max_blob_bytes");
	BAD("{\"limits\": {\"max_concurrent_builds\": 0}}",
	    "limits.max_concurrent_builds: expected an integer from 1 to 64");
	BAD("{\"limits\": {\"build_timeout_s\": true}}",
	    "limits.build_timeout_s");
	BAD("{\"limits\": {\"max_connections\": -5}}",
	    "limits.max_connections");
	BAD("{\"limits\": {\"max_connections_per_client\": null}}",
	    "limits.max_connections_per_client");
	BAD("{\"limits\": {\"timeout\": 5}}", "limits.timeout: unknown key");
	BAD("{\"nix\": {}, \"nix\": {}}", "duplicate");
	c = parse_error("{\"clients\": {}, \"upstreams\": {}, \"nix\": {},"
	    " \"limits\": {}}");
	CHECK(c == NULL);
	free(c);
	/* Embedded NUL bytes are not valid JSON for us. */
	CHECK(policy_parse("{}\0garbage", 10, &c) == -1);
	free(c);
	CHECK(policy_parse("{}", 2, &c) == 0);
}

/* Limits: zero means no limit where it may; defaults fill the rest. */
static void
test_limits(void)
{
	struct policy_limits	pl;

	CHECK(load("{\"limits\": {\"max_connections\": 0,"
	    " \"build_timeout_s\": 5}}") == 0);
	policy_limits_get(&pl);
	CHECK(pl.pl_max_connections == 0);
	CHECK(pl.pl_max_connections_per_client == 64);
	CHECK(pl.pl_build_timeout == 5);
	CHECK(pl.pl_max_concurrent_builds == 3);
	CHECK(pl.pl_max_blob_bytes == 16ULL << 30);
	/* Defaults follow the configuration as it is now. */
	nm_conf->cf_max_builds = 5;
	policy_limits_get(&pl);
	CHECK(pl.pl_max_concurrent_builds == 5);
	nm_conf->cf_max_builds = 3;
}

/* Loading and reloading: a bad file fails the load and keeps the old. */
static void
test_reload(void)
{
	struct policy_limits	 pl;
	char			*cause = NULL;

	CHECK(load("{\"upstreams\": {\"docker.io\": {\"deny\": "
	    "[\"library/a*\"]}}, \"limits\": {\"max_blob_bytes\": 100}}") == 0);
	nm_conf->cf_policy = tmpfile_path;
	UP("docker.io", "library/alpine", 0, "library/a*");

	/* A broken file: the load fails naming file and key... */
	write_policy("{\"upstreams\": {\"docker.io\": {\"deny\": 5}}}");
	CHECK(policy_load(tmpfile_path, &cause) == -1);
	CHECK(has(cause, tmpfile_path));
	CHECK(has(cause, "upstreams.docker.io.deny: expected an array"));
	free(cause);
	cause = NULL;
	/* ...and neither the load nor a reload replaced the old policy. */
	policy_reload();
	UP("docker.io", "library/alpine", 0, "library/a*");
	policy_limits_get(&pl);
	CHECK(pl.pl_max_blob_bytes == 100);
	write_policy("{ not json");
	policy_reload();
	UP("docker.io", "library/alpine", 0, "library/a*");
	unlink(tmpfile_path);
	policy_reload();
	UP("docker.io", "library/alpine", 0, "library/a*");
	CHECK(policy_load(tmpfile_path, &cause) == -1);
	CHECK(has(cause, "No such file"));
	free(cause);
	cause = NULL;

	/* A valid file replaces it. */
	write_policy("{\"upstreams\": {\"docker.io\": {\"deny\": "
	    "[\"library/b*\"]}}}");
	policy_reload();
	UP("docker.io", "library/alpine", 1, NULL);
	UP("docker.io", "library/busybox", 0, "library/b*");
	policy_limits_get(&pl);
	CHECK(pl.pl_max_blob_bytes == 16ULL << 30);

	/* 0 turns the download limits off. */
	write_policy("{\"limits\": {\"max_blob_bytes\": 0, "
	    "\"max_tmp_bytes\": 0}}");
	policy_reload();
	policy_limits_get(&pl);
	CHECK(pl.pl_max_blob_bytes == 0 && pl.pl_max_tmp_bytes == 0);
	write_policy("{\"limits\": {\"max_tmp_bytes\": 1048576}}");
	policy_reload();
	policy_limits_get(&pl);
	CHECK(pl.pl_max_tmp_bytes == 1048576 &&
	    pl.pl_max_blob_bytes == 16ULL << 30);
	write_policy("{\"upstreams\": {\"docker.io\": {\"deny\": "
	    "[\"library/b*\"]}}}");
	policy_reload();

	/* Without a --policy file a reload changes nothing. */
	nm_conf->cf_policy = NULL;
	policy_reload();
	UP("docker.io", "library/busybox", 0, "library/b*");
	CHECK(policy_load(NULL, &cause) == 0);
	UP("docker.io", "library/busybox", 1, NULL);
}

static atomic_int	 reader_stop;

/* A reader thread: checks in a loop until told to stop. */
static void *
reader(void *arg)
{
	struct policy_limits	 pl;
	char			*why;
	char			*pkgs[2];
	long			 n = 0;

	(void)arg;
	pkgs[0] = (char *)"hello";
	pkgs[1] = (char *)"haskellpackages.pandoc";
	while (!atomic_load(&reader_stop)) {
		why = NULL;
		policy_upstream_allowed("docker.io", "library/busybox", &why);
		free(why);
		why = NULL;
		policy_nix_allowed(pkgs, 2, &why);
		free(why);
		policy_limits_get(&pl);
		n++;
	}
	return ((void *)n);
}

/* Checks from several threads while the policy is reloaded under them. */
static void
test_threads(void)
{
	pthread_t	 t[4];
	void		*n;
	long		 total = 0;
	int		 i, made = 0;

	nm_conf->cf_policy = tmpfile_path;
	for (i = 0; i < 4; i++)
		if (pthread_create(&t[i], NULL, reader, NULL) == 0)
			made++;
	for (i = 0; i < 100; i++) {
		write_policy(i % 2 ? "{\"upstreams\": {\"*\": {\"deny\": "
		    "[\"library/b*\"]}}, \"nix\": {\"deny\": [\"h*\"]}}" :
		    "{\"nix\": {\"allow\": [\"hello\"]}}");
		policy_reload();
	}
	atomic_store(&reader_stop, 1);
	for (i = 0; i < made; i++) {
		pthread_join(t[i], &n);
		total += (long)n;
	}
	CHECK(made == 4);
	CHECK(total > 0);
	nm_conf->cf_policy = NULL;
}

/*
 * Checks whom a request from peer with X-Forwarded-For xff is for: want
 * the address, "" for none, NULL when peer is no balancer.
 */
static void
check_fwd(const char *peer, const char *xff, const char *want, int line)
{
	struct sockaddr_storage	 p, c;
	struct sockaddr_in	*sin = (struct sockaddr_in *)(void *)&p;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)(void *)&p;
	char			 text[INET6_ADDRSTRLEN] = "";
	int			 rc;

	memset(&p, 0, sizeof p);
	if (inet_pton(AF_INET, peer, &sin->sin_addr) == 1)
		p.ss_family = AF_INET;
	else if (inet_pton(AF_INET6, peer, &sin6->sin6_addr) == 1)
		p.ss_family = AF_INET6;
	memset(&c, 0, sizeof c);
	rc = policy_client_forwarded((struct sockaddr *)&p, xff, &c);
	if (rc == 1 && c.ss_family != 0)
		inet_ntop(c.ss_family, c.ss_family == AF_INET ?
		    (void *)&((struct sockaddr_in *)(void *)&c)->sin_addr :
		    (void *)&((struct sockaddr_in6 *)(void *)&c)->sin6_addr,
		    text, sizeof text);
	if ((want == NULL && rc == 0) || (want != NULL && rc == 1 &&
	    strcmp(text, want) == 0))
		passed++;
	else {
		failed++;
		printf("FAIL line %d: %s X-Forwarded-For %s: %d %s, want %s\n",
		    line, peer, xff != NULL ? xff : "-", rc, text,
		    want != NULL ? want : "no balancer");
	}
}

#define FWD(p, x, w)	check_fwd(p, x, w, __LINE__)

/* clients.proxies: whom X-Forwarded-For names. */
static void
test_proxies(void)
{
	CHECK(load("{ \"clients\": { \"proxies\": [\"127.0.0.1\", "
	    "\"10.0.0.0/8\", \"fd00::/8\"] } }") == 0);
	FWD("192.0.2.1", "10.9.9.9", NULL);
	FWD("127.0.0.1", NULL, "127.0.0.1");
	FWD("127.0.0.1", " ", "127.0.0.1");
	FWD("127.0.0.1", "192.0.2.7", "192.0.2.7");
	FWD("127.0.0.1", " 192.0.2.7 ", "192.0.2.7");
	FWD("127.0.0.1", "198.51.100.1, 192.0.2.7", "192.0.2.7");
	FWD("127.0.0.1", "198.51.100.1,192.0.2.7, 10.1.1.1", "192.0.2.7");
	FWD("127.0.0.1", "192.0.2.7, 10.1.1.1, 10.2.2.2", "192.0.2.7");
	/* Balancers all the way: the leftmost. */
	FWD("127.0.0.1", "10.3.3.3, 10.1.1.1", "10.3.3.3");
	FWD("127.0.0.1", "2001:db8::5", "2001:db8::5");
	FWD("127.0.0.1", "[2001:db8::5], fd00::1", "2001:db8::5");
	FWD("fd00::9", "192.0.2.7", "192.0.2.7");
	/* What is not an address names no client. */
	FWD("127.0.0.1", "unknown", "");
	FWD("127.0.0.1", "192.0.2.7, bad, 10.1.1.1", "");
	/* A port some balancers add is no part of the address. */
	FWD("127.0.0.1", "192.0.2.7:4711", "192.0.2.7");
	FWD("127.0.0.1", "[2001:db8::5]:4711, 10.1.1.1", "2001:db8::5");
	FWD("127.0.0.1", "192.0.2.7:", "");
	FWD("127.0.0.1", "192.0.2.7:47a", "");
	FWD("127.0.0.1", "[2001:db8::5]:", "");
	FWD("127.0.0.1", "[2001:db8::5]x", "");
	FWD("127.0.0.1", "[2001:db8::5", "");
	FWD("127.0.0.1", "fe80::1%eth0", "");
	FWD("127.0.0.1", ",", "");
	FWD("127.0.0.1", "1.2.3.4, ", "");
	CHECK(load("{ \"clients\": { \"proxies\": [\"bad\"] } }") != 0);
	CHECK(load("{}") == 0);
	FWD("127.0.0.1", "192.0.2.7", NULL);
}

int
main(void)
{
	struct nm_config	 conf;
	int			 fd;

	memset(&conf, 0, sizeof conf);
	conf.cf_max_builds = 3;
	conf.cf_build_timeout = 77;
	nm_conf = &conf;
	log_init(0);
	snprintf(tmpfile_path, sizeof tmpfile_path, "/tmp/test_policy.XXXXXX");
	if ((fd = mkstemp(tmpfile_path)) == -1) {
		perror("mkstemp");
		return (2);
	}
	close(fd);
	test_none();
	test_example();
	test_clients();
	test_proxies();
	test_upstreams();
	test_nix();
	test_bad();
	test_limits();
	test_reload();
	test_threads();
	policy_load(NULL, NULL);
	unlink(tmpfile_path);
	printf("test_policy: %d passed, %d failed\n", passed, failed);
	return (failed != 0);
}
