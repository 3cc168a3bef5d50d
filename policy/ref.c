/*
 * policy/ref.c: image references as users write them, for the tools
 * (prefetch, export, import) and the bundles' names.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nixmirror.h"
#include "policy/policy.h"

/*
 * Parses an image reference as Docker writes them: [HOST/]NAME[:TAG]
 * [@DIGEST].  The first component is a host when it has a '.' or a ':'
 * or is "localhost"; without one the host is docker.io, where a
 * one-component name is under library/.  Docker Hub names under the Nix
 * prefix, and every name of --nix-ns, are Nix images (pr_ns NULL, pr_repo
 * the part after the prefix).  A reference with neither a tag nor a
 * digest means :latest.  0, or -1 with *cause.
 */
int
policy_ref_parse(const char *text, struct policy_ref *pr, char **cause)
{
	const char	*pre = nm_conf->cf_nix_prefix;
	size_t		 plen = strlen(pre);
	char		*s, *at, *colon, *slash, *host = NULL, *name;

	memset(pr, 0, sizeof *pr);
	if (strlen(text) > 512) {
		xasprintf(cause, "image reference \"%.60s...\" is too long",
		    text);
		return (-1);
	}
	s = xstrdup(text);
	if ((at = strchr(s, '@')) != NULL) {
		*at++ = '\0';
		if (!policy_digest_valid(at)) {
			xasprintf(cause, "\"%s\": \"%s\" is not a sha256 digest",
			    text, at);
			goto fail;
		}
		pr->pr_digest = xstrdup(at);
	}
	slash = strchr(s, '/');
	if (slash != NULL && (memchr(s, '.', slash - s) != NULL ||
	    memchr(s, ':', slash - s) != NULL ||
	    strncmp(s, "localhost/", 10) == 0)) {
		*slash = '\0';
		host = s;
		name = slash + 1;
	} else
		name = s;
	if ((colon = strrchr(name, ':')) != NULL) {
		*colon++ = '\0';
		if (!policy_tag_valid(colon)) {
			xasprintf(cause, "\"%s\": \"%s\" is not a valid tag",
			    text, colon);
			goto fail;
		}
		pr->pr_tag = xstrdup(colon);
	} else if (pr->pr_digest == NULL)
		pr->pr_tag = xstrdup("latest");
	if (host != NULL && !policy_ns_valid(host)) {
		xasprintf(cause, "\"%s\": \"%s\" is not a registry host", text,
		    host);
		goto fail;
	}
	if (!policy_name_valid(name)) {
		xasprintf(cause, "\"%s\": \"%s\" is not a valid repository "
		    "name", text, name);
		goto fail;
	}
	if (host == NULL || strcmp(host, "index.docker.io") == 0 ||
	    strcmp(host, "registry-1.docker.io") == 0)
		host = "docker.io";
	if (nm_conf->cf_nix_ns != NULL && strcmp(host, nm_conf->cf_nix_ns) == 0)
		pr->pr_repo = xstrdup(strncmp(name, pre, plen) == 0 &&
		    name[plen] == '/' ? name + plen + 1 : name);
	else if (strcmp(host, "docker.io") == 0 &&
	    strncmp(name, pre, plen) == 0 && name[plen] == '/')
		pr->pr_repo = xstrdup(name + plen + 1);
	else {
		pr->pr_ns = xstrdup(host);
		if (strcmp(host, "docker.io") == 0 && strchr(name, '/') == NULL)
			xasprintf(&pr->pr_repo, "library/%s", name);
		else
			pr->pr_repo = xstrdup(name);
	}
	if (pr->pr_ns == NULL)
		xasprintf(&pr->pr_name, "%s/%s", pre, pr->pr_repo);
	else
		xasprintf(&pr->pr_name, "%s/%s", pr->pr_ns, pr->pr_repo);
	xasprintf(&pr->pr_ref, "%s%s%s%s%s", pr->pr_name,
	    pr->pr_tag != NULL ? ":" : "", pr->pr_tag != NULL ? pr->pr_tag : "",
	    pr->pr_digest != NULL ? "@" : "",
	    pr->pr_digest != NULL ? pr->pr_digest : "");
	free(s);
	return (0);
fail:
	free(s);
	policy_ref_clear(pr);
	return (-1);
}

void
policy_ref_clear(struct policy_ref *pr)
{
	free(pr->pr_ns);
	free(pr->pr_repo);
	free(pr->pr_tag);
	free(pr->pr_digest);
	free(pr->pr_name);
	free(pr->pr_ref);
	memset(pr, 0, sizeof *pr);
}
