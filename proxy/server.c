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

#include "nixmirror.h"
#include "proxy/proxy.h"

#define SERVER_MAX_HEADERS	(16 * 1024)
#define SERVER_MAX_BODY		(64 * 1024)
#define SERVER_TIMEOUT		120

static struct evhttp	*server_http;

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
	char		 addr[256];
	unsigned short	 port;

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
	if (evhttp_bind_socket(server_http, addr, port) != 0) {
		xasprintf(cause, "cannot listen on %s", listen);
		evhttp_free(server_http);
		server_http = NULL;
		return (-1);
	}
	log_info("listening on %s", listen);
	return (0);
}

/* Stops accepting and closes every connection. */
void
proxy_server_stop(void)
{
	if (server_http != NULL)
		evhttp_free(server_http);
	server_http = NULL;
}
