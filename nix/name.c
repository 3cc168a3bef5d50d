/*
 * nix/name.c: from the repository name after the Nix prefix
 * ("arm64/shell/git") to a request: a system and a sorted, unique list of
 * attribute paths.  Every attribute path is checked here, element by
 * element, before anything can hand it to Nix.
 */
#include <stdlib.h>
#include <string.h>

#include "nix.h"

#define NIX_NAME_MAX_PKGS	64	/* packages in one image */
#define NIX_NAME_MAX_ELEMS	30	/* elements of one attribute path */

/* What "shell" stands for. */
static const char *const nix_name_shell[] = {
	"bashInteractive", "coreutils", "moreutils", "nano"
};

static int	nix_name_elem_valid(const char *, size_t);
static int	nix_name_attr_check(const char *, char **);
static int	nix_name_add(struct nix_request *, const char *, char **);
static int	nix_name_component(struct nix_request *, const char *,
		    char **);
static int	nix_name_cmp(const void *, const void *);

/* Whether an element of len bytes matches [A-Za-z0-9_][A-Za-z0-9_-]*. */
static int
nix_name_elem_valid(const char *s, size_t len)
{
	size_t	i;
	int	c;

	if (len == 0 || s[0] == '-')
		return (0);
	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return (0);
	}
	return (1);
}

/* Checks a dotted attribute path; 0, or -1 with *cause naming it. */
static int
nix_name_attr_check(const char *attr, char **cause)
{
	const char	*p = attr, *dot;
	size_t		 len, n = 0;

	for (;;) {
		dot = strchr(p, '.');
		len = dot != NULL ? (size_t)(dot - p) : strlen(p);
		if (len == 0) {
			xasprintf(cause, "bad package name \"%s\": empty "
			    "attribute path element", attr);
			return (-1);
		}
		if (!nix_name_elem_valid(p, len)) {
			xasprintf(cause, "bad package name \"%s\": invalid "
			    "attribute \"%.*s\"", attr, (int)len, p);
			return (-1);
		}
		if (++n > NIX_NAME_MAX_ELEMS) {
			xasprintf(cause, "bad package name \"%s\": more than "
			    "%d attribute path elements", attr,
			    NIX_NAME_MAX_ELEMS);
			return (-1);
		}
		if (dot == NULL)
			return (0);
		p = dot + 1;
	}
}

/* Adds a checked package to the request unless it is already there. */
static int
nix_name_add(struct nix_request *req, const char *pkg, char **cause)
{
	size_t	i;

	for (i = 0; i < req->nr_npkgs; i++) {
		if (strcmp(req->nr_pkgs[i], pkg) == 0)
			return (0);
	}
	if (req->nr_npkgs == NIX_NAME_MAX_PKGS) {
		xasprintf(cause, "too many packages: at most %d per image",
		    NIX_NAME_MAX_PKGS);
		return (-1);
	}
	req->nr_pkgs = xreallocarray(req->nr_pkgs, req->nr_npkgs + 1,
	    sizeof *req->nr_pkgs);
	req->nr_pkgs[req->nr_npkgs++] = xstrdup(pkg);
	return (0);
}

/* Applies one '/'-separated component: a meta-package or a package. */
static int
nix_name_component(struct nix_request *req, const char *comp, char **cause)
{
	size_t	i;

	if (*comp == '\0') {
		xasprintf(cause, "empty component in image name");
		return (-1);
	}
	if (strcmp(comp, "arm64") == 0) {
		req->nr_system = NM_SYSTEM_ARM64;
		return (0);
	}
	if (strcmp(comp, "shell") == 0) {
		req->nr_shell = 1;
		for (i = 0; i < sizeof nix_name_shell / sizeof *nix_name_shell;
		    i++) {
			if (nix_name_add(req, nix_name_shell[i], cause) != 0)
				return (-1);
		}
		return (0);
	}
	if (nix_name_attr_check(comp, cause) != 0)
		return (-1);
	return (nix_name_add(req, comp, cause));
}

/*
 * The name a client would pull the request by, after the prefix:
 * "shell/hello", "arm64/hello"; caller frees.
 */
char *
nix_request_name(const struct nix_request *req)
{
	char	*name, *p;
	size_t	 i, j, len = 16;

	for (i = 0; i < req->nr_npkgs; i++)
		len += strlen(req->nr_pkgs[i]) + 1;
	p = name = xmalloc(len);
	*p = '\0';
	if (req->nr_shell)
		p = stpcpy(p, "shell/");
	if (req->nr_system != NULL && strcmp(req->nr_system,
	    NM_SYSTEM_ARM64) == 0)
		p = stpcpy(p, "arm64/");
	for (i = 0; i < req->nr_npkgs; i++) {
		for (j = 0; req->nr_shell && j < sizeof nix_name_shell /
		    sizeof *nix_name_shell; j++)
			if (strcmp(req->nr_pkgs[i], nix_name_shell[j]) == 0)
				break;
		if (req->nr_shell && j < sizeof nix_name_shell /
		    sizeof *nix_name_shell)
			continue;
		p = stpcpy(stpcpy(p, req->nr_pkgs[i]), "/");
	}
	if (p > name)
		p[-1] = '\0';
	return (name);
}

/* Orders package strings with strcmp for qsort. */
static int
nix_name_cmp(const void *a, const void *b)
{
	return (strcmp(*(char *const *)a, *(char *const *)b));
}

/*
 * Parses the part of a repository name after the Nix prefix; 0, or -1 with
 * *cause set and req cleared.
 */
int
nix_name_parse(const char *rest, struct nix_request *req, char **cause)
{
	char	*copy, *p, *slash;

	memset(req, 0, sizeof *req);
	req->nr_system = NM_SYSTEM_X86;
	p = copy = xstrdup(rest);
	if (*copy == '\0')
		goto empty;
	for (;;) {
		if ((slash = strchr(p, '/')) != NULL)
			*slash = '\0';
		if (nix_name_component(req, p, cause) != 0)
			goto fail;
		if (slash == NULL)
			break;
		p = slash + 1;
	}
	if (req->nr_npkgs == 0)
		goto empty;
	qsort(req->nr_pkgs, req->nr_npkgs, sizeof *req->nr_pkgs, nix_name_cmp);
	free(copy);
	return (0);

empty:
	xasprintf(cause, "no packages named in \"%s\"", rest);
fail:
	free(copy);
	nix_request_clear(req);
	return (-1);
}

/* Frees the package list of a request and zeroes it. */
void
nix_request_clear(struct nix_request *req)
{
	xstrvfree(req->nr_pkgs, req->nr_npkgs);
	memset(req, 0, sizeof *req);
}

/*
 * Returns "system|pkg1,pkg2,..." for a request, packages in strcmp order
 * even if the list was built by hand; the caller frees it.
 */
char *
nix_request_key(const struct nix_request *req)
{
	const char	*sys;
	char		**pkgs, *key, *p;
	size_t		 i, len;

	sys = req->nr_system != NULL ? req->nr_system : NM_SYSTEM_X86;
	len = strlen(sys) + 2 + (req->nr_shell ? 6 : 0);
	pkgs = xcalloc(req->nr_npkgs + 1, sizeof *pkgs);
	for (i = 0; i < req->nr_npkgs; i++) {
		pkgs[i] = req->nr_pkgs[i];
		len += strlen(pkgs[i]) + 1;
	}
	qsort(pkgs, req->nr_npkgs, sizeof *pkgs, nix_name_cmp);
	key = xmalloc(len);
	p = stpcpy(key, sys);
	*p++ = '|';
	*p = '\0';
	for (i = 0; i < req->nr_npkgs; i++) {
		if (i > 0)
			*p++ = ',';
		p = stpcpy(p, pkgs[i]);
	}
	/* "shell" sets Cmd, so it is part of what makes the image. */
	if (req->nr_shell)
		p = stpcpy(p, "|shell");
	free(pkgs);
	return (key);
}
