"""The HTTP side of the REST API: a thread per connection, keep-alive, bounded bodies, graceful stop."""

import http.server
import json
import logging
import socket
import socketserver
import sys
import threading

log = logging.getLogger(__name__)

IDLE_TIMEOUT_SECONDS = 60  # a connection that sends nothing for this long is closed


class RestApiServer(http.server.ThreadingHTTPServer):
    """The HTTP side: a thread per connection, keep-alive, bodies up to `max_body_bytes`, graceful stop."""

    daemon_threads = True
    block_on_close = False  # stop() waits for requests in flight itself

    def __init__(self, host, port, api, max_body_bytes):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.api, self.max_body_bytes = api, max_body_bytes
        self._cond = threading.Condition()
        self._busy = 0
        self._stopping = False
        self._connections = set()
        self._thread = None
        super().__init__((host, port), _Handler)
        self.port = self.server_address[1]

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)  # HTTPServer's would look the host name up in DNS
        self.server_name, self.server_port = self.server_address[:2]

    def start(self):
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="rest_api", daemon=True)
        self._thread.start()

    def refuse_new_requests(self):
        """Stop accepting connections; requests that arrive now on open ones answer 503."""
        with self._cond:
            self._stopping = True
        if self._thread is not None:
            self.shutdown()
            self._thread.join()

    def close(self, timeout):
        """Wait up to `timeout` seconds for the requests in flight, then close every connection."""
        self.refuse_new_requests()
        with self._cond:
            self._cond.wait_for(lambda: self._busy == 0, timeout)
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):  # the client went away: one line, nothing to debug here
            log.info("REST client %s closed the connection (%s)", client_address[0], type(error).__name__)
            return
        if isinstance(error, TimeoutError):
            log.info("REST client %s sent or read nothing for %g s: connection closed", client_address[0],
                     self.RequestHandlerClass.timeout)
            return
        log.warning("REST connection from %s failed", client_address[0], exc_info=True)

    # bookkeeping used by _Handler
    def _opened(self, connection):
        with self._cond:
            self._connections.add(connection)

    def _closed(self, connection):
        with self._cond:
            self._connections.discard(connection)

    def _begin(self):
        with self._cond:
            if self._stopping:
                return False
            self._busy += 1
            return True

    def _end(self):
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "spade-tf-serving"
    timeout = IDLE_TIMEOUT_SECONDS

    def setup(self):
        super().setup()
        self.server._opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server._closed(self.connection)

    def _serve(self):
        server = self.server
        if not server._begin():
            self._reply(503, {"error": "The server is shutting down"}, close=True)
            return
        try:
            body = self._read_body()
            if body is not None:
                status, payload = server.api.handle(self.command, self.path, body)
                try:
                    self._reply(status, payload)
                except ConnectionError as e:
                    log.info("REST client %s closed the connection before the answer to %s %s (HTTP %d) was "
                             "sent (%s)", self.client_address[0], self.command, self.path, status, type(e).__name__)
                    self.close_connection = True
                except TimeoutError:
                    log.info("REST client %s read nothing of the answer to %s %s (HTTP %d) for %g s: connection "
                             "closed", self.client_address[0], self.command, self.path, status, self.timeout)
                    self.close_connection = True
        finally:
            server._end()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def handle_expect_100(self):
        """Refuse a body that cannot be read before the client sends it (curl asks first for large bodies)."""
        return self._body_length() is not None and super().handle_expect_100()

    def _read_body(self):
        """The request body, or None after answering why it cannot be read."""
        length = self._body_length()
        return None if length is None else self.rfile.read(length)

    def _body_length(self):
        """Content-Length if it is acceptable, else None after answering why it is not."""
        limit = self.server.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._reply(411, {"error": "Send the request body with a Content-Length header (chunked transfer "
                                       "encoding is not accepted)"}, close=True)
            return None
        try:
            length = int(self.headers.get("Content-Length", 0))
            if length < 0:
                raise ValueError
        except ValueError:
            self._reply(400, {"error": f"Bad Content-Length header: {self.headers['Content-Length']!r}"}, close=True)
            return None
        if length > limit:
            self._reply(413, {"error": f"Request body of {length} bytes is over this server's limit of {limit} "
                                       "bytes (--rest_api_max_body_bytes); send fewer or smaller images per "
                                       "request"}, close=True)
            return None
        return length

    def _reply(self, status, payload, close=False):
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format, *args):
        log.debug("REST %s: " + format, self.address_string(), *args)
