import com.fasterxml.jackson.databind.JsonNode;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * HTTP mode (CONTRACT.md §1): the JDK's own com.sun.net.httpserver on $HOST:$PORT
 * (default 127.0.0.1:8080), HTTP/1.1 keep-alive, one pooled thread per request in flight, so a
 * sleeping request never blocks the others.
 */
final class Server {
    static final int MAX_BODY_BYTES = 8 * 1024 * 1024;

    private Server() {}

    private static final class TooLarge extends Exception {
        private static final long serialVersionUID = 1L;

        TooLarge() {
            super(null, null, false, false);
        }
    }

    static void serve() throws IOException {
        // Without TCP_NODELAY the response head and body go out in two segments and Nagle plus
        // delayed ACK stall keep-alive requests by ~40 ms. ServerConfig reads this at class load.
        System.setProperty("sun.net.httpserver.nodelay", "true");
        String host = System.getenv().getOrDefault("HOST", "127.0.0.1");
        int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "8080"));
        HttpServer server = HttpServer.create(new InetSocketAddress(host, port), 1024);
        AtomicInteger n = new AtomicInteger();
        ExecutorService pool = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "fnbench-" + n.incrementAndGet());
            t.setDaemon(true);
            return t;
        });
        server.setExecutor(pool);
        server.createContext("/", Server::handle);
        server.start();
        Facts.ready(); // listening: init_ms is measured up to here
        reportPort(server.getAddress().getPort());
    }

    /**
     * CONTRACT.md §1: with $FNBENCH_READY_FD set, once listening, write the port and a newline to
     * that descriptor (the parent learns the port of PORT=0 and that we listen). Java cannot wrap
     * a bare descriptor, so it is opened through /proc/self/fd (Linux).
     */
    private static void reportPort(int port) {
        String fd = System.getenv("FNBENCH_READY_FD");
        if (fd == null || !fd.matches("[0-9]+") || Integer.parseInt(fd) <= 2) {
            return;
        }
        try (OutputStream ready = new FileOutputStream("/proc/self/fd/" + fd)) {
            ready.write((port + "\n").getBytes(StandardCharsets.US_ASCII));
        } catch (IOException ignored) {
            // the parent stopped waiting: nothing to tell
        }
    }

    static void handle(HttpExchange ex) {
        try {
            dispatch(ex);
        } catch (Throwable t) { // never let one request take the server down
            try {
                String msg = t instanceof OutOfMemoryError ? "out of memory" : "internal error: " + t;
                send(ex, 500, Json.error(msg));
            } catch (Throwable ignored) {
                // the response was already started: the connection is closed below
            }
        } finally {
            ex.close();
        }
    }

    private static void dispatch(HttpExchange ex) throws IOException {
        String method = ex.getRequestMethod();
        String path = ex.getRequestURI().getRawPath();
        if (path == null) {
            path = "";
        }
        if (path.equals("/health")) {
            if (method.equals("GET") || method.equals("HEAD")) {
                send(ex, 200, Facts.healthBody());
            } else {
                send(ex, 405, Json.error("method not allowed"));
            }
            return;
        }
        if (!method.equals("POST")) {
            if (method.equals("GET")) {
                send(ex, 404, Json.error("not found"));
            } else {
                send(ex, 405, Json.error("method not allowed"));
            }
            return;
        }
        byte[] body;
        try {
            body = readBody(ex);
        } catch (TooLarge e) {
            ex.getResponseHeaders().set("Connection", "close");
            send(ex, 413, Json.error("request body too large"));
            return;
        } catch (IOException | NumberFormatException e) { // bad chunk framing, a bad Content-Length
            ex.getResponseHeaders().set("Connection", "close");
            send(ex, 400, Json.error("bad request framing: " + e.getMessage()));
            return;
        }
        long t0 = System.nanoTime();
        boolean cold = Facts.takeCold();
        String workload = path.substring(1);
        byte[] response;
        try {
            JsonNode result = Workloads.run(workload, Json.parse(body, body.length));
            double handlerMs = (System.nanoTime() - t0) / 1e6;
            response = Json.envelope(workload, cold, Facts.initMs(), handlerMs, result);
        } catch (BadRequest e) {
            send(ex, 400, Json.error(e.getMessage()));
            return;
        }
        send(ex, 200, response);
    }

    private static byte[] readBody(HttpExchange ex) throws IOException, TooLarge {
        String declared = ex.getRequestHeaders().getFirst("Content-Length");
        int expect = 0;
        if (declared != null) {
            long n = Long.parseLong(declared.trim());
            if (n > MAX_BODY_BYTES) {
                throw new TooLarge();
            }
            expect = (int) n;
        }
        InputStream in = ex.getRequestBody();
        byte[] buf = new byte[expect > 0 ? expect : 1024];
        int len = 0;
        while (true) {
            if (len == buf.length) {
                if (len > MAX_BODY_BYTES) {
                    throw new TooLarge();
                }
                buf = Arrays.copyOf(buf, Math.min(Math.max(buf.length * 2, 1024), MAX_BODY_BYTES + 1));
            }
            int r = in.read(buf, len, buf.length - len);
            if (r < 0) {
                break;
            }
            len += r;
        }
        if (len > MAX_BODY_BYTES) {
            throw new TooLarge();
        }
        return len == buf.length ? buf : Arrays.copyOf(buf, len);
    }

    private static void send(HttpExchange ex, int status, byte[] body) throws IOException {
        ex.getResponseHeaders().set("Content-Type", "application/json");
        if (ex.getRequestMethod().equals("HEAD")) {
            // the JDK server sends no body for HEAD; the length is set by hand (its API's rule)
            ex.getResponseHeaders().set("Content-Length", Integer.toString(body.length));
            ex.sendResponseHeaders(status, -1);
            return;
        }
        ex.sendResponseHeaders(status, body.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(body);
        }
    }
}
