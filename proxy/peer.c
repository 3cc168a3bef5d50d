/*
 * proxy/peer.c: the replicas of one site, and which of them downloads a
 * blob.
 *
 * Every replica is given the same --peers list.  Each digest has an owner
 * among them, chosen by rendezvous hashing: the replica whose hash of
 * (its URL, the digest) is highest.  A replica that is not the owner of
 * a cold blob streams it from the owner, which downloads it once for
 * every replica asking, as it does for its own clients; when the owner
 * does not answer, the next replica in the digest's order takes over,
 * down to this one, which then asks the upstream itself.  Adding or
 * removing a replica moves only the digests it owns.
 *
 * A Nix image key has an owner the same way: a replica asked for an image
 * no replica built yet asks the owner for it, so that one replica builds
 * it, and takes it from the shared bucket once the owner put it there.
 *
 * A replica asks a peer over plain HTTP with PROXY_PEER_HEADER set, and
 * a request carrying it is never passed on to another peer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/http.h>

#include "nixmirror.h"
#include "nix/nix.h"
#include "proxy/proxy.h"

#define PEER_MAX	64

static struct nm_upstream	 peer_list[PEER_MAX];
static size_t			 peer_n;
static size_t			 peer_self = (size_t)-1;

/* A peer URL: http://HOST:PORT, no path, no credentials. */
static int
peer_url_valid(const char *u)
{
	const char	*h;

	if (strncmp(u, "http://", 7) != 0)
		return (0);
	h = u + 7;
	return (*h != '\0' && *h != '/' && strpbrk(h, "/@?# \t\r\n") == NULL &&
	    strchr(h, ':') != NULL);
}

/* Reads --peers and --peer-self; 0, or -1 with *cause. */
int
proxy_peers_init(char **cause)
{
	char	*list, *p, *tok, *self;
	size_t	 i;

	/* Read again (a test, a reload): what an earlier call read goes. */
	for (i = 0; i < peer_n; i++) {
		free(peer_list[i].up_url);
		free(peer_list[i].up_ns);
	}
	peer_n = 0;
	peer_self = (size_t)-1;
	if (nm_conf->cf_peers == NULL)
		return (0);
	list = xstrdup(nm_conf->cf_peers);
	for (p = list; (tok = strsep(&p, ",")) != NULL; ) {
		tok += strspn(tok, " ");
		tok[strcspn(tok, " ")] = '\0';
		if (*tok == '\0')
			continue;
		while (strlen(tok) > 7 && tok[strlen(tok) - 1] == '/')
			tok[strlen(tok) - 1] = '\0';
		if (!peer_url_valid(tok)) {
			xasprintf(cause, "peers: \"%s\" is not http://HOST:PORT",
			    tok);
			free(list);
			return (-1);
		}
		if (peer_n == PEER_MAX) {
			xasprintf(cause, "peers: more than %d", PEER_MAX);
			free(list);
			return (-1);
		}
		memset(&peer_list[peer_n], 0, sizeof peer_list[peer_n]);
		peer_list[peer_n].up_url = xstrdup(tok);
		xasprintf(&peer_list[peer_n].up_ns, "peer %s", tok + 7);
		peer_list[peer_n].up_peer = 1;
		peer_n++;
	}
	free(list);
	if (nm_conf->cf_peer_self != NULL)
		self = xstrdup(nm_conf->cf_peer_self);
	else
		xasprintf(&self, "http://%s", nm_conf->cf_listen);
	while (strlen(self) > 7 && self[strlen(self) - 1] == '/')
		self[strlen(self) - 1] = '\0';
	for (i = 0; i < peer_n; i++)
		if (strcmp(peer_list[i].up_url, self) == 0)
			peer_self = i;
	if (peer_self == (size_t)-1) {
		xasprintf(cause, "peers: this replica (%s) is not in the list; "
		    "set peer_self to its URL there", self);
		free(self);
		return (-1);
	}
	free(self);
	log_info("replica %zu of %zu: %s", peer_self + 1, peer_n,
	    peer_list[peer_self].up_url);
	return (0);
}

/* The rendezvous score of a replica for a digest. */
static uint64_t
peer_score(size_t i, const char *digest)
{
	char		 d[NM_DIGEST_SIZE], *text;
	uint64_t	 v = 0;
	int		 k;

	xasprintf(&text, "%s\n%s", peer_list[i].up_url, digest);
	nm_sha256_digest(text, strlen(text), d);
	free(text);
	for (k = 0; k < 16; k++)
		v = v << 4 | (uint64_t)(d[7 + k] <= '9' ? d[7 + k] - '0' :
		    d[7 + k] - 'a' + 10);
	return (v);
}

/*
 * The peer to fetch a digest from as the nth choice (0: its owner), or
 * NULL when that choice is this replica (or no replica is left): then the
 * upstream is asked directly.
 */
const struct nm_upstream *
proxy_peer_source(const char *digest, int nth)
{
	uint64_t	 score[PEER_MAX];
	size_t		 order[PEER_MAX], i, j, t;

	if (peer_n < 2 || nth < 0 || (size_t)nth >= peer_n)
		return (NULL);
	for (i = 0; i < peer_n; i++) {
		score[i] = peer_score(i, digest);
		order[i] = i;
	}
	/* Highest score first; a handful of peers, so insertion sort. */
	for (i = 1; i < peer_n; i++)
		for (j = i; j > 0 && score[order[j]] > score[order[j - 1]];
		    j--) {
			t = order[j];
			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	if (order[nth] == peer_self)
		return (NULL);
	return (&peer_list[order[nth]]);
}

/* Ends a wait for the owner when the build queue stops. */
static int
peer_build_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
	const int	*stop = arg;

	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return (__atomic_load_n(stop, __ATOMIC_RELAXED) != 0);
}

/* The owner's answer: kept for an error's message (a few KiB). */
static size_t
peer_build_body(char *p, size_t size, size_t n, void *arg)
{
	struct evbuffer	*buf = arg;

	if (evbuffer_get_length(buf) < 8192)
		evbuffer_add(buf, p, size * n);
	return (size * n);
}

/* Whether another replica owns a Nix image key. */
static int
peer_build_other(const char *key)
{
	return (proxy_peer_source(key, 0) != NULL);
}

/*
 * Asks the owner of a Nix image key for its manifest, which has it built
 * there; a pool job waits here.  An owner that cannot be reached hands
 * over to the next replica on the hash, as for blobs.  See nix.h.
 */
static int
peer_build_ask(const char *what, const char *key, const char *path,
    int timeout, const int *stop, char **cause)
{
	const struct nm_upstream	*o;
	struct curl_slist		*h = NULL;
	struct evbuffer			*body;
	CURL				*c;
	CURLcode			 cc;
	char				*url, *msg;
	long				 code;
	int				 nth, rc = -1;

	*cause = NULL;
	h = curl_slist_append(h, PROXY_PEER_HEADER ": 1");
	h = curl_slist_append(h, "Accept: "
	    "application/vnd.oci.image.manifest.v1+json, "
	    "application/vnd.docker.distribution.manifest.v2+json");
	for (nth = 0; (o = proxy_peer_source(key, nth)) != NULL; nth++) {
		if ((c = curl_easy_init()) == NULL ||
		    (body = evbuffer_new()) == NULL)
			fatalx("%s: out of memory", __func__);
		xasprintf(&url, "%s%s", o->up_url, path);
		curl_easy_setopt(c, CURLOPT_URL, url);
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
		curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
		/* Replicas talk directly, as for blobs: no http_proxy. */
		curl_easy_setopt(c, CURLOPT_PROXY, "");
		curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
		curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 5L);
		curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)timeout);
		/* Nothing comes while it builds: keepalive sees it vanish. */
		curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
		curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 10L);
		curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 5L);
		curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION,
		    peer_build_progress);
		/* (The callback only reads the flag.) */
		curl_easy_setopt(c, CURLOPT_XFERINFODATA,
		    (void *)(uintptr_t)stop);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, peer_build_body);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
		log_info("image %s: asking its owner replica %s", what,
		    o->up_url);
		code = 0;
		if ((cc = curl_easy_perform(c)) == CURLE_OK)
			curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
		free(*cause);
		*cause = NULL;
		if (cc == CURLE_OK && code == 200)
			rc = 0;
		else if (cc == CURLE_OK && code == 404) {
			/* The owner's word on an unknown package stands. */
			msg = proxy_error_message(body);
			xasprintf(cause, "%s", msg != NULL ? msg :
			    "the image does not exist");
			free(msg);
			rc = 2;
		} else if (cc != CURLE_OK)
			xasprintf(cause, "%s: %s", o->up_url,
			    curl_easy_strerror(cc));
		else
			xasprintf(cause, "%s answered %ld", o->up_url, code);
		curl_easy_cleanup(c);
		evbuffer_free(body);
		free(url);
		/* Only one that cannot be reached hands over. */
		if (rc != -1 || cc != CURLE_COULDNT_CONNECT)
			break;
		log_info("image %s: replica %s does not answer", what,
		    o->up_url);
	}
	curl_slist_free_all(h);
	if (o == NULL) {
		/* This replica is next on the hash: it builds. */
		free(*cause);
		*cause = NULL;
		return (1);
	}
	return (rc);
}

/* Who builds a Nix image key among the replicas; see proxy.h. */
const struct nix_owner proxy_peer_owner = {
	peer_build_other,
	peer_build_ask,
};

/* Whether a request came from another replica. */
int
proxy_peer_request(struct evhttp_request *req)
{
	return (evhttp_find_header(evhttp_request_get_input_headers(req),
	    PROXY_PEER_HEADER) != NULL);
}
