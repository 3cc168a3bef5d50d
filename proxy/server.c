/*
 * proxy/server.c: the HTTP listener (libevent's evhttp).
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <netinet/in.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "nixmirror.h"
#include "proxy/proxy.h"

/* The guard enforces the real head limits (16 KiB) before these. */
#define SERVER_MAX_HEADERS	(64 * 1024)
#define SERVER_MAX_BODY		(64 * 1024)
#define SERVER_TIMEOUT		120	/* idle keep-alive and stalled I/O */
#define SERVER_ACCEPT_PAUSE_MS	200

static struct evhttp		*server_http;
static struct evconnlistener	*server_listener;
static struct event		*server_resume;

/* Accepting again after running out of descriptors. */
static void
server_resume_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	(void)arg;
	if (server_listener != NULL)
		evconnlistener_enable(server_listener);
}

/*
 * accept() failed: out of descriptors (EMFILE, ENFILE) or memory pauses
 * accepting for a moment instead of spinning on the listening socket.
 */
static void
server_accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct timeval	 tv = { 0, SERVER_ACCEPT_PAUSE_MS * 1000 };
	int		 err = EVUTIL_SOCKET_ERROR();

	(void)arg;
	log_warnx("accept: %s; pausing accepts for %d ms",
	    evutil_socket_error_to_string(err), SERVER_ACCEPT_PAUSE_MS);
	evconnlistener_disable(lev);
	evtimer_add(server_resume, &tv);
}

/* Splits "ADDR:PORT", ":PORT" or "[V6]:PORT"; the address may be empty. */
static int
server_parse_listen(const char *listen, char *addr, size_t alen,
    unsigned short *port, char **cause)
{
	const char	*colon, *a = listen, *end;
	size_t		 n;
	long		 p;
	char		*ep;

	if ((colon = strrchr(listen, ':')) == NULL)
		goto bad;
	end = colon;
	if (*a == '[') {
		a++;
		if (end == a || end[-1] != ']')
			goto bad;
		end--;
	}
	n = (size_t)(end - a);
	if (n >= alen)
		goto bad;
	memcpy(addr, a, n);
	addr[n] = '\0';
	if (n == 0)
		snprintf(addr, alen, "0.0.0.0");
	p = strtol(colon + 1, &ep, 10);
	if (colon[1] == '\0' || *ep != '\0' || p < 0 || p > 65535)
		goto bad;
	*port = (unsigned short)p;
	return (0);
bad:
	xasprintf(cause, "listen: \"%s\" is not ADDR:PORT", listen);
	return (-1);
}

/* Binds the listener and routes every request through proxy_route. */
int
proxy_server_start(struct event_base *base, struct store *st,
    const char *listen, char **cause)
{
	struct evhttp_bound_socket	*bound;
	char				 addr[256];
	unsigned short			 port;

	proxy_remote_init(base);

	if (server_parse_listen(listen, addr, sizeof addr, &port, cause) == -1)
		return (-1);
	if ((server_http = evhttp_new(base)) == NULL)
		fatalx("%s: evhttp_new", __func__);
	evhttp_set_allowed_methods(server_http, EVHTTP_REQ_GET |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
	    EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
	evhttp_set_max_headers_size(server_http, SERVER_MAX_HEADERS);
	evhttp_set_max_body_size(server_http, SERVER_MAX_BODY);
	evhttp_set_timeout(server_http, SERVER_TIMEOUT);
	evhttp_set_default_content_type(server_http, "application/json");
	evhttp_set_gencb(server_http, proxy_route, st);
	if (nm_conf->cf_tls_cert != NULL && proxy_guard_tls(nm_conf->cf_tls_cert,
	    nm_conf->cf_tls_key, cause) == -1)
		return (-1);
	evhttp_set_bevcb(server_http, proxy_guard_bev, NULL);
	if ((bound = evhttp_bind_socket_with_handle(server_http, addr,
	    port)) == NULL) {
		xasprintf(cause, "cannot listen on %s", listen);
		evhttp_free(server_http);
		server_http = NULL;
		return (-1);
	}
	server_listener = evhttp_bound_socket_get_listener(bound);
	server_resume = evtimer_new(base, server_resume_cb, NULL);
	evconnlistener_set_error_cb(server_listener, server_accept_error_cb);
	log_info("listening on %s (%s)", listen, nm_conf->cf_tls_cert != NULL ?
	    "https" : "http");
	return (0);
}

/* The port the listener is bound to (for --listen ADDR:0); 0 if none. */
int
proxy_server_port(void)
{
	struct sockaddr_storage	 ss;
	socklen_t		 len = sizeof ss;

	if (server_listener == NULL || getsockname(evconnlistener_get_fd(
	    server_listener), (struct sockaddr *)&ss, &len) == -1)
		return (0);
	if (ss.ss_family == AF_INET)
		return (ntohs(((struct sockaddr_in *)(void *)&ss)->sin_port));
	if (ss.ss_family == AF_INET6)
		return (ntohs(((struct sockaddr_in6 *)(void *)&ss)->sin6_port));
	return (0);
}

/* Stops accepting and closes every connection. */
void
proxy_server_stop(void)
{
	if (server_http != NULL)
		evhttp_free(server_http);
	server_http = NULL;
	server_listener = NULL;
	if (server_resume != NULL)
		event_free(server_resume);
	server_resume = NULL;
	proxy_guard_free();
}
