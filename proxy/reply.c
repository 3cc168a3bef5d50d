/*
 * proxy/reply.c: how the server answers: the OCI error JSON, the headers
 * of a served blob or manifest, Range, serving a stored file, and the one
 * access log line of each request.  The dispatcher (route.c) and the
 * pull-through cache (mirror.c) both answer through these.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "nixmirror.h"
#include "policy/policy.h"
#include "proxy/proxy.h"
#include "store/store.h"

/* Whether the first n bytes of s hold needle. */
static int
reply_holds(const char *s, size_t n, const char *needle)
{
	size_t	 k = strlen(needle), i;

	for (i = 0; i + k <= n; i++)
		if (memcmp(s + i, needle, k) == 0)
			return (1);
	return (0);
}

/* The route of a request URI, as /metrics names it. */
const char *
proxy_route_name(const char *uri)
{
	size_t	 n;

	if (uri == NULL)
		return ("other");
	n = strcspn(uri, "?");
	if (n == 8 && strncmp(uri, "/metrics", 8) == 0)
		return ("metrics");
	if ((n == 1 && uri[0] == '/') ||
	    (n == 12 && strncmp(uri, "/status.json", 12) == 0))
		return ("status");
	if ((n == 4 && strncmp(uri, "/v2/", 4) == 0) ||
	    (n == 3 && strncmp(uri, "/v2", 3) == 0))
		return ("base");
	if (strncmp(uri, "/v2/", 4) != 0)
		return ("other");
	if (reply_holds(uri, n, "/manifests/"))
		return ("manifest");
	if (reply_holds(uri, n, "/blobs/"))
		return ("blob");
	if (reply_holds(uri, n, "/referrers/"))
		return ("referrers");
	if (n >= 10 && strncmp(uri + n - 10, "/tags/list", 10) == 0)
		return ("tags");
	return ("other");
}

/* Who a request is for; see proxy.h. */
int
proxy_client(struct evhttp_request *req, struct sockaddr_storage *ss,
    char *text, size_t tlen)
{
	struct evhttp_connection	*conn;
	struct sockaddr_in		*sin = (struct sockaddr_in *)(void *)ss;
	struct sockaddr_in6		*sin6 = (struct sockaddr_in6 *)(void *)ss;
	struct sockaddr_storage		 peer;
	struct evkeyval			*kv;
	char				*host = NULL, *xff = NULL, *more;
	ev_uint16_t			 port = 0;
	int				 fwd = 0, rc;

	memset(ss, 0, sizeof *ss);
	if ((conn = evhttp_request_get_connection(req)) != NULL)
		evhttp_connection_get_peer(conn, &host, &port);
	if (host != NULL && inet_pton(AF_INET, host, &sin->sin_addr) == 1)
		ss->ss_family = AF_INET;
	else if (host != NULL && inet_pton(AF_INET6, host,
	    &sin6->sin6_addr) == 1)
		ss->ss_family = AF_INET6;
	snprintf(text, tlen, "%s", host != NULL ? host : "-");
	if (ss->ss_family == 0)
		return (0);
	peer = *ss;
	/* Every X-Forwarded-For line, in order, as one list (RFC 9110). */
	TAILQ_FOREACH(kv, evhttp_request_get_input_headers(req), next) {
		if (strcasecmp(kv->key, "X-Forwarded-For") != 0)
			continue;
		if (xff == NULL)
			xff = xstrdup(kv->value);
		else {
			xasprintf(&more, "%s, %s", xff, kv->value);
			free(xff);
			xff = more;
		}
	}
	rc = policy_client_forwarded((struct sockaddr *)&peer, xff, ss);
	free(xff);
	if (rc == 1) {
		fwd = 1;
		if (ss->ss_family == 0)
			snprintf(text, tlen, "?");
		else if (inet_ntop(ss->ss_family, ss->ss_family == AF_INET ?
		    (void *)&sin->sin_addr : (void *)&sin6->sin6_addr, text,
		    (socklen_t)tlen) == NULL)
			snprintf(text, tlen, "?");
	}
	return (fwd);
}

/* Writes the access log line of a finished request, with a note. */
void
proxy_log(struct evhttp_request *req, int status, uint64_t bytes,
    const char *error)
{
	struct sockaddr_storage		 ss;
	const char			*method, *uri;
	char				 host[INET6_ADDRSTRLEN + 2], *vis;

	switch (evhttp_request_get_command(req)) {
	case EVHTTP_REQ_GET:	method = "GET"; break;
	case EVHTTP_REQ_HEAD:	method = "HEAD"; break;
	case EVHTTP_REQ_PUT:	method = "PUT"; break;
	case EVHTTP_REQ_POST:	method = "POST"; break;
	case EVHTTP_REQ_DELETE:	method = "DELETE"; break;
	case EVHTTP_REQ_PATCH:	method = "PATCH"; break;
	default:		method = "OTHER"; break;
	}
	proxy_client(req, &ss, host, sizeof host);
	uri = evhttp_request_get_uri(req);
	metrics_request(proxy_route_name(uri), status, bytes);
	vis = xstrvis(uri != NULL ? uri : "");
	log_info("%s %s \"%.200s\" %d %llu%s%s", host, method,
	    vis, status, (unsigned long long)bytes, error != NULL ? ": " : "",
	    error != NULL ? error : "");
	free(vis);
}

/*
 * A client's connection is being freed.  When evhttp saw the client's EOF
 * or a timeout before the response was whole, it detached the request
 * from the connection and leaves it to us: free it.  Otherwise evhttp
 * frees it right after this callback.
 */
void
proxy_orphan(struct evhttp_request *req)
{
	if (req != NULL && evhttp_request_get_connection(req) == NULL)
		evhttp_request_free(req);
}

/* The message of an upstream's error JSON, or NULL. */
char *
proxy_error_message(struct evbuffer *body)
{
	json_t		*doc, *m;
	char		*text, *msg = NULL;
	size_t		 len = evbuffer_get_length(body);

	text = xmalloc(len + 1);
	evbuffer_copyout(body, text, len);
	text[len] = '\0';
	if ((doc = json_loads(text, 0, NULL)) != NULL) {
		m = json_object_get(json_array_get(json_object_get(doc,
		    "errors"), 0), "message");
		if (json_is_string(m))
			msg = xstrdup(json_string_value(m));
		json_decref(doc);
	}
	free(text);
	return (msg);
}

/*
 * Sends a 200 with a body held in memory and its Content-Type; a HEAD
 * gets the Content-Length and no body.
 */
void
proxy_reply_text(struct evhttp_request *req, const char *type,
    const char *text, size_t len)
{
	struct evkeyvalq	*oh = evhttp_request_get_output_headers(req);
	struct evbuffer		*buf = evbuffer_new();
	char			 n[32];

	evhttp_add_header(oh, "Content-Type", type);
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		snprintf(n, sizeof n, "%zu", len);
		evhttp_add_header(oh, "Content-Length", n);
	} else
		evbuffer_add(buf, text, len);
	proxy_reply(req, 200, buf, NULL);
	evbuffer_free(buf);
}

/* Sends a reply (body may be NULL) and logs it. */
void
proxy_reply(struct evhttp_request *req, int status, struct evbuffer *body,
    const char *error)
{
	size_t	 len = body != NULL ? evbuffer_get_length(body) : 0;

	proxy_log(req, status, len, error);
	evhttp_send_reply(req, status, NULL, body);
}

/* Sends the OCI error JSON with the given status and code. */
void
proxy_error(struct evhttp_request *req, int status, const char *code,
    const char *fmt, ...)
{
	struct evkeyvalq	*oh = evhttp_request_get_output_headers(req);
	struct evbuffer		*buf;
	json_t			*doc;
	va_list			 ap;
	char			*msg, *text, *text2;

	va_start(ap, fmt);
	xvasprintf(&text, fmt, ap);
	va_end(ap);
	/*
	 * No secret or server path leaves the process, and the message may
	 * quote the client's bytes: keep it valid UTF-8.
	 */
	if ((text2 = nm_redact(text, 1)) == NULL)
		fatalx("%s: out of memory", __func__);
	free(text);
	msg = xstrvis(text2);
	free(text2);
	doc = json_pack("{s:[{s:s,s:s,s:{}}]}", "errors", "code", code,
	    "message", msg, "detail");
	if (doc == NULL || (text = json_dumps(doc, JSON_COMPACT)) == NULL)
		fatalx("%s: json", __func__);
	json_decref(doc);
	evhttp_remove_header(oh, "Content-Type");
	evhttp_remove_header(oh, "Docker-Content-Digest");
	evhttp_add_header(oh, "Content-Type", "application/json");
	buf = evbuffer_new();
	if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
		evbuffer_add(buf, text, strlen(text));
	else {
		char	 n[32];

		snprintf(n, sizeof n, "%zu", strlen(text));
		evhttp_add_header(oh, "Content-Length", n);
	}
	xasprintf(&text2, "%s %s", code, msg);
	proxy_reply(req, status, buf, text2);
	free(text2);
	evbuffer_free(buf);
	free(text);
	free(msg);
}

/* Adds the headers every served blob or manifest carries. */
void
proxy_headers(struct evhttp_request *req, const char *digest,
    const char *type, uint64_t length)
{
	struct evkeyvalq	*oh = evhttp_request_get_output_headers(req);
	char			 n[32];

	snprintf(n, sizeof n, "%llu", (unsigned long long)length);
	evhttp_add_header(oh, "Content-Type", type);
	evhttp_add_header(oh, "Content-Length", n);
	evhttp_add_header(oh, "Docker-Content-Digest", digest);
	evhttp_add_header(oh, "Docker-Distribution-API-Version",
	    "registry/2.0");
}

/*
 * Answers a blob's Range header: Accept-Ranges, and Content-Range for a
 * part.  Returns 200 with [start, end] the whole blob, 206 with the part,
 * or 416 when the error was sent already.
 */
int
proxy_range(struct evhttp_request *req, const char *range, uint64_t size,
    uint64_t *start, uint64_t *end)
{
	struct evkeyvalq	*oh = evhttp_request_get_output_headers(req);
	char			 cr[96];

	evhttp_add_header(oh, "Accept-Ranges", "bytes");
	switch (policy_range_parse(range, size, start, end)) {
	case POLICY_RANGE_UNSAT:
		snprintf(cr, sizeof cr, "bytes */%llu", (unsigned long long)size);
		evhttp_add_header(oh, "Content-Range", cr);
		proxy_error(req, 416, "BLOB_UNKNOWN",
		    "range \"%.64s\" is outside the blob's %llu bytes", range,
		    (unsigned long long)size);
		return (416);
	case POLICY_RANGE_OK:
		snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu",
		    (unsigned long long)*start, (unsigned long long)*end,
		    (unsigned long long)size);
		evhttp_add_header(oh, "Content-Range", cr);
		return (206);
	default:
		*start = 0;
		*end = size > 0 ? size - 1 : 0;
		return (200);
	}
}

/*
 * A buffer for file bytes bound for a client's socket.  On a plain
 * connection it is marked as draining to a descriptor, so that libevent
 * hands its file segments to sendfile(2) instead of mapping them; TLS
 * has to see the bytes, and maps them.
 */
static struct evbuffer *
proxy_body_buffer(void)
{
	struct evbuffer	*buf;

	if ((buf = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new", __func__);
	if (nm_conf->cf_tls_cert == NULL)
		evbuffer_set_flags(buf, EVBUFFER_FLAG_DRAINS_TO_FD);
	return (buf);
}

/*
 * A buffer holding len bytes of fd from off, by reference (the caller
 * keeps the descriptor open until the bytes went out); NULL on error.
 */
struct evbuffer *
proxy_file_buffer(int fd, uint64_t off, uint64_t len)
{
	struct evbuffer_file_segment	*seg;
	struct evbuffer			*buf;

	buf = proxy_body_buffer();
	seg = evbuffer_file_segment_new(fd, (ev_off_t)off, (ev_off_t)len, 0);
	if (seg == NULL || evbuffer_add_file_segment(buf, seg, 0,
	    (ev_off_t)len) == -1) {
		if (seg != NULL)
			evbuffer_file_segment_free(seg);
		evbuffer_free(buf);
		return (NULL);
	}
	evbuffer_file_segment_free(seg);	/* buf holds a reference */
	return (buf);
}

/*
 * Serves a stored blob or manifest: the whole file, or one range, straight
 * from the file (sendfile on a plain connection).
 */
void
proxy_serve_file(struct evhttp_request *req, struct store *st,
    const char *digest, const char *type, int ranged)
{
	struct evbuffer		*buf;
	uint64_t		 size, start = 0, end = 0;
	int			 fd, head, status = 200;

	head = evhttp_request_get_command(req) == EVHTTP_REQ_HEAD;
	if ((fd = store_blob_open(st, digest, &size)) == -1) {
		proxy_error(req, 404, ranged ? "BLOB_UNKNOWN" :
		    "MANIFEST_UNKNOWN", "%s is not known", digest);
		return;
	}
	if (ranged)
		status = proxy_range(req, evhttp_find_header(
		    evhttp_request_get_input_headers(req), "Range"), size,
		    &start, &end);
	else if (size > 0)
		end = size - 1;
	if (status == 416) {
		close(fd);
		return;
	}
	proxy_headers(req, digest, type, size == 0 ? 0 : end - start + 1);
	store_blob_touch(st, digest);
	buf = proxy_body_buffer();
	if (head || size == 0)
		close(fd);
	else if (evbuffer_add_file(buf, fd, (ev_off_t)start,
	    (ev_off_t)(end - start + 1)) == -1) {
		close(fd);
		evbuffer_free(buf);
		proxy_error(req, 500, "UNKNOWN", "cannot read %s", digest);
		return;
	}
	proxy_log(req, status, evbuffer_get_length(buf), NULL);
	evhttp_send_reply(req, status, status == 206 ? "Partial Content" : "OK",
	    buf);
	evbuffer_free(buf);
}
